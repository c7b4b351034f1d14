//! Several instances on one PostgreSQL store, behind a load balancer.
//!
//! Launches, states and the outbox are shared rows ([`crate::store`]), so
//! any instance serves any request and any drains the outbox. What must
//! happen once is the queue's sync with the EHR and its Subscription: one
//! instance leads ([`lead`]), holding a PostgreSQL session advisory lock
//! (`pg_try_advisory_lock`) on a connection of its own; the others try
//! again every [`RETRY`]. The lock is the session's: when the leader stops
//! or its connection drops, PostgreSQL releases it and a follower takes it
//! at its next try.
//!
//! That connection must reach PostgreSQL itself, not a transaction-mode
//! pooler (PgBouncer `pool_mode = transaction`): such a pooler hands the
//! server session to other clients between transactions, so the lock would
//! be held by a session the leader no longer has (two leaders, or a lock
//! never released). Session mode, or no pooler, is needed.
//!
//! The queue's index: the leader (and any instance recording its own
//! change) writes what changed, sealed, to the shared store and NOTIFYs
//! ([`publish`]); every instance LISTENs ([`follow`], sqlx's `PgListener`)
//! and reads the rows newer than the last it applied, at start, on each
//! notification, and after its listening connection was lost (when
//! notifications may have been missed), then shows them live on its pages.
//! With SQLite there is one instance, always the leader: none of this runs.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};
use tokio::sync::{mpsc, watch};

use crate::queue::{Queue, Shared};
use crate::store::{QUEUE_CHANNEL, Store, WAKE_CHANNEL};

/// The advisory lock key of the queue's leader (`passerel` in ASCII).
pub const LEADER_LOCK: i64 = 0x7061_7373_6572_656c;

/// How often a follower tries to take the lead, a leader checks that its
/// connection still holds it, and a lost connection is tried again.
pub const RETRY: Duration = Duration::from_secs(3);

/// Take the lead when no instance holds it, and keep it while the
/// connection lives; `leading` says where this instance stands. Runs
/// until the process stops (dropping the connection releases the lock).
pub async fn lead(store: Store, leading: Arc<watch::Sender<bool>>) {
    loop {
        let mut conn = match PgConnection::connect(store.url()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the leader's lock cannot be asked for: no database connection");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            let taken = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut conn)
                .await;
            match taken {
                Ok(true) => {
                    tracing::info!("this instance leads: it syncs the queue with the EHR");
                    leading.send_replace(true);
                    // Held for as long as this session lives.
                    while sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                        tokio::time::sleep(RETRY).await;
                    }
                    leading.send_replace(false);
                    tracing::warn!("the leader's database connection was lost: it leads no more");
                    break;
                }
                Ok(false) => tokio::time::sleep(RETRY).await,
                Err(e) => {
                    tracing::warn!(error = %e, "the leader's lock could not be asked for");
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Write what `queue` shares ([`Queue::share`]) to the store, in order,
/// the changes waiting at one moment in one transaction. A write that fails
/// (the database is away) is tried again every [`RETRY`], not dropped.
pub async fn publish(
    store: Store,
    queue: Arc<Queue>,
    mut changes: mpsc::UnboundedReceiver<Shared>,
) {
    while let Some(first) = changes.recv().await {
        let mut tasks = std::collections::BTreeMap::new();
        let mut meta = None;
        let mut wake = false;
        let mut next = Some(first);
        while let Some(change) = next {
            match change {
                Shared::Tasks(ts) => {
                    for t in ts {
                        tasks.insert(t.id.clone(), t);
                    }
                }
                Shared::Meta(m) => meta = Some(m),
                Shared::Wake => wake = true,
            }
            next = changes.try_recv().ok();
        }
        let tasks: Vec<_> = tasks.into_values().collect();
        if !tasks.is_empty() || meta.is_some() {
            while let Err(e) = store.put_queue(&queue.iss, &tasks, meta.as_ref()).await {
                tracing::warn!(error = %e, tasks = tasks.len(), "the queue's changes could not be shared; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
        if wake && let Err(e) = store.wake_leader(&queue.iss).await {
            tracing::warn!(error = %e, "a notification could not be passed to the leader");
        }
    }
}

/// Keep the index of every queue in step with the shared store: read it at
/// start, then LISTEN; wake the poller when this instance leads and a
/// notification reached another one. Runs until the process stops.
pub async fn follow(store: Store, queues: Vec<Arc<Queue>>) {
    loop {
        let mut listener = match PgListener::connect(store.url()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "the queue's notifications cannot be listened to");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(e) = listener.listen_all([QUEUE_CHANNEL, WAKE_CHANNEL]).await {
            tracing::warn!(error = %e, "LISTEN was refused");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        // Listening first, reading then: nothing written in between is missed.
        for q in &queues {
            reload(&store, q).await;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let Some(q) = queues.iter().find(|q| q.iss == n.payload()) else {
                        continue;
                    };
                    if n.channel() == QUEUE_CHANNEL {
                        reload(&store, q).await;
                    } else if q.is_leading() {
                        q.wake();
                    }
                }
                // The connection was lost (and is made again at the next
                // call): notifications may have been missed.
                Ok(None) => {
                    tracing::warn!(
                        "the queue's notifications were interrupted; reading the shared index again"
                    );
                    for q in &queues {
                        reload(&store, q).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the queue's notifications stopped");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}

/// Apply to `queue` the shared rows newer than the last it applied, and
/// the leader's sync state.
async fn reload(store: &Store, queue: &Queue) {
    match store.queue_since(&queue.iss, queue.shared_seq()).await {
        Ok((tasks, last)) => {
            let n = tasks.len();
            let changed = queue.apply_shared(tasks, last);
            if n > 0 {
                tracing::debug!(rows = n, changed, "shared queue changes applied");
            }
        }
        Err(e) => tracing::warn!(error = %e, "the shared queue could not be read"),
    }
    match store.queue_meta(&queue.iss).await {
        Ok(Some(meta)) => queue.apply_meta(&meta),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "the shared queue's state could not be read"),
    }
}
