//! What several instances share beyond sessions and the outbox (PostgreSQL
//! only): the queue's index as the leader synced it, one sealed row per
//! Task, and where its sync stands. An instance writes what changed and
//! NOTIFYs [`QUEUE_CHANNEL`]; the others read the rows newer than the last
//! they saw ([`crate::cluster`] listens).
//!
//! Writers take the table's lock in turn (`LOCK TABLE … IN EXCLUSIVE
//! MODE`, which readers do not wait for), so the `seq` numbers commit in
//! the order they are drawn and a reader that saw row `n` has seen every
//! row before it.

use sqlx::Row;

use super::{Backend, Store, StoreError};
use crate::domain::queue::QueueTask;

/// NOTIFY channel: the queue of the EHR named in the payload changed.
pub const QUEUE_CHANNEL: &str = "passerelle_queue";
/// NOTIFY channel: a Subscription notification for the queue named in the
/// payload reached an instance; the leader syncs.
pub const WAKE_CHANNEL: &str = "passerelle_queue_wake";

impl Store {
    fn shared_only(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => Ok(()),
            Backend::Sqlite => Err(StoreError::NotShared),
        }
    }

    /// Keep `tasks` of `iss`'s queue (a newer version of a Task replaces
    /// the one kept, an older one is ignored) and, with `meta`, where the
    /// sync stands; then tell the other instances. One transaction: they
    /// see all of it or none.
    pub async fn put_queue(
        &self,
        iss: &str,
        tasks: &[QueueTask],
        meta: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.shared_only()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE queue_tasks IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        for t in tasks {
            let json = serde_json::to_vec(t).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO queue_tasks (iss, id, version, task, seq) \
                 VALUES ($1, $2, $3, $4, nextval('queue_seq')) \
                 ON CONFLICT (iss, id) DO UPDATE SET version = EXCLUDED.version, \
                 task = EXCLUDED.task, seq = EXCLUDED.seq \
                 WHERE queue_tasks.version <= EXCLUDED.version",
            )
            .bind(iss)
            .bind(&t.id)
            .bind(t.version.parse::<i64>().unwrap_or(0))
            .bind(self.seal(&json))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(meta) = meta {
            sqlx::query(
                "INSERT INTO queue_meta (iss, meta) VALUES ($1, $2) \
                 ON CONFLICT (iss) DO UPDATE SET meta = EXCLUDED.meta",
            )
            .bind(iss)
            .bind(self.seal(meta.to_string().as_bytes()))
            .execute(&mut *tx)
            .await?;
        }
        notify(&mut tx, QUEUE_CHANNEL, iss).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The Tasks of `iss`'s queue kept after row `after`, in order, with
    /// the last row's number (`after` when none).
    pub async fn queue_since(
        &self,
        iss: &str,
        after: i64,
    ) -> Result<(Vec<QueueTask>, i64), StoreError> {
        self.shared_only()?;
        let rows = sqlx::query(
            "SELECT seq, task FROM queue_tasks WHERE iss = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(iss)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        let mut last = after;
        let mut tasks = Vec::with_capacity(rows.len());
        for r in rows {
            last = r.get("seq");
            let plain = self.open_sealed(&r.get::<Vec<u8>, _>("task"))?;
            tasks.push(
                serde_json::from_slice(&plain)
                    .map_err(|e| StoreError::Corrupt(format!("a queue row: {e}")))?,
            );
        }
        Ok((tasks, last))
    }

    /// Where `iss`'s sync stands, as the leader last kept it.
    pub async fn queue_meta(&self, iss: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.shared_only()?;
        let row = sqlx::query("SELECT meta FROM queue_meta WHERE iss = $1")
            .bind(iss)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let plain = self.open_sealed(&r.get::<Vec<u8>, _>("meta"))?;
            serde_json::from_slice(&plain)
                .map_err(|e| StoreError::Corrupt(format!("the queue's sync state: {e}")))
        })
        .transpose()
    }

    /// Ask the leader to sync `iss`'s queue now (a Subscription
    /// notification reached this instance).
    pub async fn wake_leader(&self, iss: &str) -> Result<(), StoreError> {
        self.shared_only()?;
        let mut conn = self.pool.acquire().await?;
        notify(&mut conn, WAKE_CHANNEL, iss).await
    }
}

/// `pg_notify(channel, payload)`, delivered when the transaction commits.
/// Counted, not selected: the function returns `void`, a type the `Any`
/// driver does not read.
async fn notify(
    conn: &mut sqlx::AnyConnection,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT COUNT(*) AS n FROM (SELECT pg_notify($1, $2)) AS sent")
        .bind(channel)
        .bind(payload)
        .fetch_one(conn)
        .await?;
    Ok(())
}
