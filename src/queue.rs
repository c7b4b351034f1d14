//! The coordinators' queue at run time: an in-memory index of the
//! practice's Tasks per EHR, kept fresh by a Backend Services poller and by
//! Passerelle's own writes, and a broadcast of every change for the pages'
//! server-sent events.
//!
//! Why an index: the queue filters on things no Task search parameter
//! holds (the referral's domain, the appeal's payer, the team role) and
//! must answer in milliseconds over 10,000 Tasks. With SQLite (one
//! instance) the index lives in memory only, never on disk, so no patient
//! data rests in Passerelle; after a restart the first sync rebuilds it.
//!
//! Several instances (PostgreSQL): one leads ([`crate::cluster`]): only it
//! polls the EHR and holds the Subscription. Every change an instance makes
//! to its index (the leader's syncs, anyone's own writes) goes, sealed, to
//! the shared store ([`Queue::share`]), and the others apply it
//! ([`Queue::apply_shared`]), so each instance's pages see it live. A
//! notification reaching a follower is passed to the leader. The poller asks the server for what
//! changed since the last sync (`_lastUpdated`), not more often than the
//! configured interval (15 minutes by default, the SDOHCC bound for
//! polling); the pages see Passerelle's own changes at once.
//!
//! Closed loop: when a referral Task is completed with an `output` pointing
//! to a Procedure, the ServiceRequest is completed and the patient's
//! concern gets a note, both with `If-Match`; the days from referral to
//! completion are kept for the patterns view.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::auth::smart::BackendClient;
use crate::domain::queue::{Kind, QueueTask};
use crate::fhir::{Authorizer, FhirClient, FhirError};

/// A Backend Services token, fetched when needed and again after a 401.
pub struct BackendAuth {
    client: BackendClient,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl BackendAuth {
    pub fn new(client: BackendClient) -> Self {
        BackendAuth {
            client,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn fresh(&self) -> Result<String, FhirError> {
        let (token, lifetime) = self.client.token().await.map_err(|e| {
            FhirError::Request(format!("the backend-services token was refused: {e}"))
        })?;
        // Renewed a little before it ends.
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(30));
        *self.cached.lock().await = Some((token.clone(), until));
        Ok(token)
    }
}

impl Authorizer for BackendAuth {
    fn token(&self) -> BoxFuture<'_, Result<String, FhirError>> {
        Box::pin(async move {
            if let Some((t, until)) = self.cached.lock().await.clone()
                && Instant::now() < until
            {
                return Ok(t);
            }
            self.fresh().await
        })
    }

    fn after_unauthorized<'a>(
        &'a self,
        _rejected: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, FhirError>> {
        Box::pin(async move { self.fresh().await.map(Some) })
    }
}

/// Where the index stands.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    /// The latest `meta.lastUpdated` seen: the next sync asks from there.
    pub watermark: Option<String>,
    /// When the last sync ended, and whether it worked.
    pub last: Option<(time::OffsetDateTime, Result<usize, String>)>,
    pub syncs: u64,
}

/// The queue of one EHR.
pub struct Queue {
    pub iss: String,
    tasks: RwLock<HashMap<String, QueueTask>>,
    state: RwLock<SyncState>,
    events: broadcast::Sender<String>,
    /// Days from referral to a closed loop, per referral Task id.
    loops: RwLock<HashMap<String, i64>>,
    team: RwLock<Vec<crate::fhir::queue::TeamMember>>,
    /// Woken by a subscription notification: sync now, not at the interval.
    wake: tokio::sync::Notify,
    /// The secret part of this queue's notification endpoint.
    pub hook_secret: String,
    /// Whether the server took our Subscription (else: polling only).
    subscribed: RwLock<Option<String>>,
    /// The Backend Services client, once connected (for the patterns view).
    client: RwLock<Option<FhirClient>>,
    patterns: Arc<RwLock<PatternsState>>,
    progress: Arc<crate::fhir::patterns::Progress>,
    /// Every write the queue makes (closing a loop) is validated first.
    schema: Option<crate::fhir::SchemaValidator>,
    /// Referral Tasks whose loop could not be closed yet: tried again at
    /// every sync.
    pending_loops: RwLock<std::collections::HashSet<String>>,
    /// Which patients each viewer's own token can read, by launch id.
    seen_by: std::sync::Mutex<HashMap<String, Seen>>,
    /// With a shared store: where this instance's changes go.
    shared: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Shared>>,
    /// Whether this instance syncs the queue (its leader).
    leading: std::sync::atomic::AtomicBool,
    /// The last row of the shared index this instance applied.
    shared_seq: std::sync::atomic::AtomicI64,
}

/// What an instance tells the others about a queue (see [`Queue::share`]).
#[derive(Debug)]
pub enum Shared {
    /// Tasks that changed in this instance's index.
    Tasks(Vec<QueueTask>),
    /// Where the sync stands (see [`Queue::meta`]), after a sync.
    Meta(Value),
    /// A Subscription notification reached this instance, which does not lead.
    Wake,
}

/// The patients one viewer's token was asked about, and whether it could
/// read each; forgotten after [`VISIBILITY_TTL`], so a change of the user's
/// rights at the EHR shows within that time.
struct Seen {
    since: Instant,
    readable: HashMap<String, bool>,
}

impl Seen {
    fn new() -> Self {
        Seen {
            since: Instant::now(),
            readable: HashMap::new(),
        }
    }
}

/// How long a viewer's answers are kept before the EHR is asked again.
pub const VISIBILITY_TTL: Duration = Duration::from_secs(300);

/// The queue's Tasks one viewer may see: those their own token can read.
#[derive(Debug, Clone, Default)]
pub struct Visible {
    pub ids: std::collections::HashSet<String>,
    /// Tasks in the queue about a patient this viewer's token cannot read.
    pub hidden: usize,
}

impl Visible {
    pub fn allows(&self, task_id: &str) -> bool {
        self.ids.contains(task_id)
    }
}

/// The patterns view's last result, cached with its date and period, and
/// whether a computation is running. A failed refresh keeps the last good
/// result and says why it failed.
#[derive(Debug, Clone, Default)]
pub struct PatternsState {
    /// The period last asked for (being computed, or of the last attempt).
    pub period: Option<crate::domain::patterns::Period>,
    /// The last successful computation (its own period and date inside).
    pub report: Option<crate::domain::patterns::Report>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    pub running: bool,
}

impl Queue {
    /// The queue of `iss`; `key` (the session key) makes its notification
    /// endpoint's secret, stable across restarts so a Subscription outlives
    /// one.
    pub fn new(
        iss: &str,
        key: &[u8; 32],
        schema: Option<crate::fhir::SchemaValidator>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            iss: iss.to_string(),
            tasks: RwLock::new(HashMap::new()),
            state: RwLock::new(SyncState::default()),
            events: broadcast::channel(1024).0,
            loops: RwLock::new(HashMap::new()),
            team: RwLock::new(Vec::new()),
            wake: tokio::sync::Notify::new(),
            hook_secret: hook_secret(key, iss),
            subscribed: RwLock::new(None),
            client: RwLock::new(None),
            patterns: Arc::new(RwLock::new(PatternsState::default())),
            progress: Arc::new(crate::fhir::patterns::Progress::default()),
            schema,
            pending_loops: RwLock::new(std::collections::HashSet::new()),
            seen_by: std::sync::Mutex::new(HashMap::new()),
            shared: std::sync::OnceLock::new(),
            leading: std::sync::atomic::AtomicBool::new(false),
            shared_seq: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Share this queue with other instances: from now on every change to
    /// the index, every sync's state and every notification this instance
    /// cannot act on go to the returned receiver, for
    /// [`crate::cluster::publish`] to write to the shared store.
    pub fn share(&self) -> tokio::sync::mpsc::UnboundedReceiver<Shared> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if self.shared.set(tx).is_err() {
            tracing::error!("a queue was shared twice");
        }
        rx
    }

    fn publish(&self, what: Shared) {
        if let Some(tx) = self.shared.get() {
            let _ = tx.send(what);
        }
    }

    /// Whether this instance syncs the queue now.
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lead: sync from now on, and try again at the next sync every
    /// completed referral in the index whose loop is not closed. The
    /// instance that led before kept the ones it could not close yet in
    /// its memory only; they would otherwise stay open, since the next
    /// sync reads only what changed since the shared watermark.
    fn take_lead(&self) {
        let open: Vec<String> = {
            let loops = self.loops.read().expect("queue lock");
            self.tasks
                .read()
                .expect("queue lock")
                .values()
                .filter(|t| {
                    t.kind == Kind::Referral
                        && t.status == "completed"
                        && t.procedure_output
                        && !loops.contains_key(&t.id)
                })
                .map(|t| t.id.clone())
                .collect()
        };
        self.pending_loops.write().expect("queue lock").extend(open);
        self.set_leading(true);
    }

    fn set_leading(&self, leading: bool) {
        self.leading
            .store(leading, std::sync::atomic::Ordering::SeqCst);
    }

    /// The last row of the shared index applied here.
    pub fn shared_seq(&self) -> i64 {
        self.shared_seq.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Apply Tasks another instance shared, up to row `seq`: the changed
    /// ones are announced to this instance's pages like its own, and not
    /// shared again.
    pub fn apply_shared(&self, tasks: Vec<QueueTask>, seq: i64) -> usize {
        let changed = self.merge(tasks).len();
        self.shared_seq
            .fetch_max(seq, std::sync::atomic::Ordering::SeqCst);
        changed
    }

    /// Where the sync stands, to share: the watermark (a new leader goes on
    /// from it), the last sync, the care team, the closed loops and the
    /// Subscription.
    pub fn meta(&self) -> Value {
        let state = self.sync_state();
        let last = state.last.as_ref().map(|(at, r)| {
            json!({
                "at": at.format(&time::format_description::well_known::Rfc3339).ok(),
                "ok": r.as_ref().ok(),
                "error": r.as_ref().err(),
            })
        });
        json!({
            "watermark": state.watermark,
            "last": last,
            "team": self.team(),
            "loops": *self.loops.read().expect("queue lock"),
            "subscription": self.subscription(),
        })
    }

    /// Take the state the leader shared ([`Queue::meta`]); the leader keeps
    /// its own, which is newer. A value that cannot be read is ignored.
    pub fn apply_meta(&self, meta: &Value) {
        if self.is_leading() {
            return;
        }
        let last = meta["last"]["at"]
            .as_str()
            .and_then(|at| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|at| {
                let result = match meta["last"]["ok"].as_u64() {
                    Some(n) => Ok(n as usize),
                    None => Err(meta["last"]["error"]
                        .as_str()
                        .unwrap_or("the sync failed")
                        .to_string()),
                };
                (at, result)
            });
        {
            let mut state = self.state.write().expect("queue lock");
            state.watermark = meta["watermark"].as_str().map(String::from);
            if last.is_some() {
                state.last = last;
            }
        }
        if let Ok(team) = serde_json::from_value(meta["team"].clone()) {
            *self.team.write().expect("queue lock") = team;
        }
        if let Ok(loops) = serde_json::from_value(meta["loops"].clone()) {
            *self.loops.write().expect("queue lock") = loops;
        }
        *self.subscribed.write().expect("queue lock") =
            meta["subscription"].as_str().map(String::from);
    }

    /// Sync now: the poller's wake-up (a notification for this instance,
    /// or one another instance passed on).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The Tasks of this queue that the viewer of launch `launch_id` may see:
    /// those about a patient `client` (carrying the viewer's own token) can
    /// read. The queue is read with Passerelle's Backend Services token,
    /// which reads every patient; the EHR may hide some patients from this
    /// user (other departments, confidential patients), and a Task about
    /// one must not show in their queue, its counts, its digest or its live
    /// updates. Patients not asked about yet are asked in batches of
    /// [`crate::fhir::queue::ID_BATCH`], four searches at a time; the
    /// answers are kept for [`VISIBILITY_TTL`].
    pub async fn visible_to(
        &self,
        launch_id: &str,
        client: &FhirClient,
    ) -> Result<Visible, FhirError> {
        use futures::StreamExt;
        let tasks: Vec<(String, String)> = self.with_tasks(|t| {
            t.values()
                .map(|t| (t.id.clone(), t.patient_id.clone()))
                .collect()
        });
        let unknown: Vec<String> = {
            let mut seen = self.seen_by.lock().expect("queue lock");
            seen.retain(|_, s| s.since.elapsed() < VISIBILITY_TTL);
            let mine = seen.entry(launch_id.to_string()).or_insert_with(Seen::new);
            let mut unknown: Vec<String> = tasks
                .iter()
                .map(|(_, p)| p)
                .filter(|p| !p.is_empty() && !mine.readable.contains_key(*p))
                .cloned()
                .collect();
            unknown.sort();
            unknown.dedup();
            unknown
        };
        let asked = Instant::now();
        let batches: Vec<Vec<String>> = unknown
            .chunks(crate::fhir::queue::ID_BATCH)
            .map(<[String]>::to_vec)
            .collect();
        let answers: Vec<_> = futures::stream::iter(batches)
            .map(|batch| {
                let client = client.clone();
                async move {
                    let found = crate::fhir::queue::readable_patient_ids(&client, &batch).await;
                    found.map(|found| (batch, found))
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        let mut seen = self.seen_by.lock().expect("queue lock");
        let mine = seen.entry(launch_id.to_string()).or_insert_with(Seen::new);
        for answer in answers {
            let (batch, found) = answer?;
            for id in batch {
                let readable = found.contains(&id);
                mine.readable.insert(id, readable);
            }
        }
        if !unknown.is_empty() {
            tracing::info!(
                patients = unknown.len(),
                ms = asked.elapsed().as_millis() as u64,
                "what a viewer may read was asked of the EHR"
            );
        }
        // A Task with no patient is shown to no one restricted by patient:
        // there is no patient to ask about.
        let visible: std::collections::HashSet<String> = tasks
            .iter()
            .filter(|(_, p)| mine.readable.get(p) == Some(&true))
            .map(|(id, _)| id.clone())
            .collect();
        Ok(Visible {
            hidden: tasks.len() - visible.len(),
            ids: visible,
        })
    }

    /// Forget what launch `launch_id`'s token could read (at sign-out).
    pub fn forget_viewer(&self, launch_id: &str) {
        self.seen_by.lock().expect("queue lock").remove(launch_id);
    }

    /// Run `f` over the Tasks (read lock held for its duration).
    pub fn with_tasks<R>(&self, f: impl FnOnce(&HashMap<String, QueueTask>) -> R) -> R {
        f(&self.tasks.read().expect("queue lock"))
    }

    pub fn get(&self, id: &str) -> Option<QueueTask> {
        self.tasks.read().expect("queue lock").get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.tasks.read().expect("queue lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sync_state(&self) -> SyncState {
        self.state.read().expect("queue lock").clone()
    }

    /// The patterns view's state.
    pub fn patterns(&self) -> PatternsState {
        self.patterns.read().expect("patterns lock").clone()
    }

    pub fn patterns_progress(&self) -> String {
        self.progress.words()
    }

    /// Compute the measures for `period` in the background; false when the
    /// EHR is not connected yet. A computation already running goes on.
    pub fn start_patterns(&self, period: crate::domain::patterns::Period) -> bool {
        let Some(client) = self.client.read().expect("queue lock").clone() else {
            return false;
        };
        {
            let mut st = self.patterns.write().expect("patterns lock");
            if st.running {
                return true;
            }
            st.running = true;
            st.period = Some(period);
        }
        let (state, progress) = (self.patterns.clone(), self.progress.clone());
        progress
            .pages
            .store(0, std::sync::atomic::Ordering::Relaxed);
        progress
            .resources
            .store(0, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let started = Instant::now();
            // In a task of its own, so that even a panic ends the run and
            // is reported instead of leaving it "running" for ever.
            let run = tokio::spawn(async move {
                crate::fhir::patterns::compute(&client, period, &progress).await
            });
            let result = match run.await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => {
                    tracing::error!(panicked = e.is_panic(), "patterns computation stopped");
                    Err("the computation stopped on an internal error".to_string())
                }
            };
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                ok = result.is_ok(),
                "patterns computed"
            );
            let mut st = state.write().expect("patterns lock");
            match result {
                Ok(report) => {
                    st.report = Some(report);
                    st.error = None;
                }
                Err(e) => st.error = Some(e),
            }
            st.running = false;
        });
        true
    }

    /// A subscription notification arrived: sync at once (here, when this
    /// instance leads; else the leader is told).
    pub fn notify(&self) {
        self.wake.notify_one();
        if !self.is_leading() {
            self.publish(Shared::Wake);
        }
    }

    /// The id of the Subscription the server accepted, if any.
    pub fn subscription(&self) -> Option<String> {
        self.subscribed.read().expect("queue lock").clone()
    }

    /// The care team, as of the last sync.
    pub fn team(&self) -> Vec<crate::fhir::queue::TeamMember> {
        self.team.read().expect("queue lock").clone()
    }

    pub fn loop_days(&self, task_id: &str) -> Option<i64> {
        self.loops.read().expect("queue lock").get(task_id).copied()
    }

    /// Changes, by Task id, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.events.subscribe()
    }

    /// Put Tasks in the index; those that changed are announced (and
    /// shared, with a shared store). A Task older than the one held (a late
    /// answer) is ignored.
    pub fn upsert(&self, tasks: Vec<QueueTask>) -> usize {
        let changed = self.merge(tasks);
        let n = changed.len();
        if !changed.is_empty() {
            self.publish(Shared::Tasks(changed));
        }
        n
    }

    /// Put Tasks in the index; returns those that changed, announced to the
    /// pages.
    fn merge(&self, tasks: Vec<QueueTask>) -> Vec<QueueTask> {
        let mut changed = Vec::new();
        {
            let mut map = self.tasks.write().expect("queue lock");
            for t in tasks {
                let newer = map.get(&t.id).is_none_or(|old| {
                    version_number(&t.version) >= version_number(&old.version) && *old != t
                });
                if newer {
                    changed.push(t.clone());
                    map.insert(t.id.clone(), t);
                }
            }
        }
        for t in &changed {
            let _ = self.events.send(t.id.clone());
        }
        changed
    }

    /// Record a Task Passerelle just wrote (the server's answer), at once.
    pub fn written(&self, task: &Value) {
        if let Some(t) = crate::fhir::queue::queue_task(task, &HashMap::new()) {
            // Keep what the index knew from the includes.
            let t = match self.get(&t.id) {
                Some(old) => QueueTask {
                    patient_name: old.patient_name,
                    domain: t.domain.or(old.domain),
                    payer: t.payer.or(old.payer),
                    ..t
                },
                None => t,
            };
            self.upsert(vec![t]);
        }
    }

    /// One sync: everything the first time, then what changed since.
    pub async fn sync(&self, client: &FhirClient) -> Result<usize, FhirError> {
        let since = self.sync_state().watermark;
        let (result, team) = tokio::join!(
            crate::fhir::queue::read_tasks(client, since.as_deref()),
            crate::fhir::queue::read_team(client),
        );
        match team {
            Ok(team) => *self.team.write().expect("queue lock") = team,
            Err(e) => tracing::warn!(kind = e.kind(), "the care team could not be read"),
        }
        let now = time::OffsetDateTime::now_utc();
        let (outcome, completed) = match result {
            Ok((tasks, latest)) => {
                let completed: Vec<String> = tasks
                    .iter()
                    .filter(|t| {
                        t.kind == Kind::Referral && t.status == "completed" && t.procedure_output
                    })
                    .map(|t| t.id.clone())
                    .collect();
                let changed = self.upsert(tasks);
                let mut state = self.state.write().expect("queue lock");
                if latest.is_some() {
                    state.watermark = latest;
                }
                (Ok(changed), completed)
            }
            Err(e) => (Err(e), vec![]),
        };
        {
            let mut state = self.state.write().expect("queue lock");
            state.syncs += 1;
            state.last = Some((now, outcome.as_ref().map(|n| *n).map_err(|e| e.to_string())));
        }
        self.publish(Shared::Meta(self.meta()));
        // A full sync parses thousands of resources and drops them: give the
        // freed memory back to the system (glibc keeps it otherwise).
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free heap pages.
        unsafe {
            libc::malloc_trim(0);
        }
        let mut todo: Vec<String> = self
            .pending_loops
            .write()
            .expect("queue lock")
            .drain()
            .collect();
        todo.extend(completed);
        todo.sort();
        todo.dedup();
        for id in todo {
            if self.loop_days(&id).is_some() {
                continue;
            }
            if let Err(e) = self.close_loop(client, &id).await {
                tracing::warn!(
                    kind = e.kind(),
                    "a referral's loop could not be closed; tried again at the next sync"
                );
                self.pending_loops.write().expect("queue lock").insert(id);
            }
        }
        outcome
    }

    /// A completed referral whose output names a completed Procedure of the
    /// same patient: complete its ServiceRequest, note the concern it
    /// addressed, keep the days it took.
    pub async fn close_loop(&self, client: &FhirClient, task_id: &str) -> Result<(), FhirError> {
        let task = client.read_json("Task", task_id).await?.resource;
        let procedure = task["output"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|o| o["valueReference"]["reference"].as_str())
            .filter(|r| r.starts_with("Procedure/"))
            .map(String::from);
        let (Some(procedure), Some(sr_ref), Some(patient)) = (
            procedure,
            task["focus"]["reference"].as_str(),
            task["for"]["reference"].as_str(),
        ) else {
            return Ok(());
        };
        let Some(sr_id) = sr_ref.strip_prefix("ServiceRequest/") else {
            return Ok(());
        };
        // Anyone who may write a Task can set its output: the Procedure must
        // exist, be about the Task's own patient and be completed before it
        // completes anything (a forged or premature output closes no loop).
        // Both reads at once: one round trip, not two.
        let procedure_id = procedure.trim_start_matches("Procedure/");
        let (checked, read) = tokio::join!(
            client.read_json("Procedure", procedure_id),
            client.read_json("ServiceRequest", sr_id),
        );
        let done = match checked {
            Ok(p) => {
                p.resource["subject"]["reference"].as_str() == Some(patient)
                    && p.resource["status"] == "completed"
            }
            Err(FhirError::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        if !done {
            tracing::warn!(
                "a completed referral's output is not a completed Procedure of its patient: the loop stays open"
            );
            return Ok(());
        }
        let read = read?;
        let mut sr = read.resource;
        // Only the Task's own patient's records are touched.
        if sr["subject"]["reference"].as_str() != Some(patient) {
            tracing::warn!(
                "a completed referral's ServiceRequest is about another patient: left alone"
            );
            return Ok(());
        }
        let completed_on = task["executionPeriod"]["end"]
            .as_str()
            .or(task["lastModified"].as_str())
            .or(task["meta"]["lastUpdated"].as_str())
            .unwrap_or_default()
            .to_string();
        let day = |s: &str| crate::domain::iso_date(s.get(..10)?);
        let days = match (sr["authoredOn"].as_str().and_then(day), day(&completed_on)) {
            (Some(a), Some(c)) if c >= a => Some((c - a).whole_days()),
            _ => None,
        };
        let guarded = |version: Option<String>, what: &str| {
            version.ok_or_else(|| {
                FhirError::Request(format!("the {what} has no version to update it safely"))
            })
        };
        let validate = |r: &Value| match &self.schema {
            Some(v) => v.validate(r),
            None => Err(FhirError::Request("the R4 schema is not installed".into())),
        };
        if sr["status"] != "completed" {
            sr["status"] = json!("completed");
            validate(&sr)?;
            client
                .update(&sr, Some(&guarded(read.version, "ServiceRequest")?))
                .await?;
        }
        let on = completed_on.get(..10).unwrap_or(&completed_on);
        let text = match days {
            Some(d) => {
                format!("Referral completed ({procedure}) on {on}: loop closed in {d} day(s).")
            }
            None => format!("Referral completed ({procedure}) on {on}: loop closed."),
        };
        for reason in sr["reasonReference"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let Some(cid) = reason["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Condition/"))
            else {
                continue;
            };
            let read = client.read_json("Condition", cid).await?;
            let mut c = read.resource;
            if c["subject"]["reference"].as_str() != Some(patient) {
                continue;
            }
            let already = c["note"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["text"] == text);
            if !already {
                match c["note"].as_array_mut() {
                    Some(notes) => notes.push(json!({ "text": text })),
                    None => c["note"] = json!([{ "text": text }]),
                }
                validate(&c)?;
                client
                    .update(&c, Some(&guarded(read.version, "Condition")?))
                    .await?;
            }
        }
        self.loops
            .write()
            .expect("queue lock")
            .insert(task_id.to_string(), days.unwrap_or(-1));
        tracing::info!(days = days.unwrap_or(-1), "referral loop closed");
        Ok(())
    }
}

fn version_number(v: &str) -> u64 {
    v.parse().unwrap_or(0)
}

/// The secret of the notification endpoint of `iss`'s queue.
pub fn hook_secret(key: &[u8; 32], iss: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"passerelle queue hook\0");
    h.update(key);
    h.update(iss.as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Forced syncs (notifications) are at least this far apart: a burst of
/// notifications, or a forged flood of them, costs one sync per gap
/// (the notifications in between are coalesced into the next one).
pub const MIN_FORCED_GAP: Duration = Duration::from_secs(5);

/// Sync `queue` every `every` until the process stops; the first sync at once.
pub async fn poller(queue: Arc<Queue>, client: FhirClient, every: Duration) {
    let sync = || {
        let (queue, client) = (queue.clone(), client.clone());
        async move {
            let started = Instant::now();
            match queue.sync(&client).await {
                Ok(n) => tracing::info!(
                    changed = n,
                    tasks = queue.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "queue synced"
                ),
                Err(e) => {
                    tracing::warn!(
                        kind = e.kind(),
                        "queue sync failed; trying again at the next interval"
                    )
                }
            }
        }
    };
    paced(sync, &queue.wake, every, MIN_FORCED_GAP).await;
}

/// Run `sync` at once, then every `every`, or sooner when `wake` is
/// notified, but never two syncs less than `min_gap` apart when woken.
async fn paced<F, Fut>(mut sync: F, wake: &tokio::sync::Notify, every: Duration, min_gap: Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let started = tokio::time::Instant::now();
        sync().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {
                tokio::time::sleep_until(started + min_gap).await;
            }
        }
    }
}

/// Subscribe to Task changes where the server offers it; otherwise the
/// queue polls. Returns what was done, in words, for the log.
async fn subscribe(
    queue: &Queue,
    client: &FhirClient,
    public_url: Option<&url::Url>,
    secret_in: crate::auth::smart::NotifySecretIn,
) -> String {
    use crate::auth::smart::NotifySecretIn;
    let Some(public_url) = public_url else {
        return "no public URL for notifications: polling".into();
    };
    let capabilities = match client.capabilities().await {
        Ok(c) => c,
        Err(e) => {
            return format!(
                "the CapabilityStatement could not be read ({}): polling",
                e.kind()
            );
        }
    };
    let Some(topic) = crate::fhir::subscription::task_topic(&capabilities) else {
        return "the server offers no Task subscription topic (R4 backport, rest-hook): polling"
            .into();
    };
    let (path, bearer) = match secret_in {
        NotifySecretIn::Path => (format!("hooks/fhir/{}", queue.hook_secret), None),
        NotifySecretIn::Header => ("hooks/fhir".to_string(), Some(queue.hook_secret.as_str())),
    };
    let endpoint = match public_url.join(&path) {
        Ok(u) => u,
        Err(e) => return format!("no notification endpoint ({e}): polling"),
    };
    match crate::fhir::subscription::ensure(client, &topic, endpoint.as_str(), bearer).await {
        Ok((reference, created)) => {
            *queue.subscribed.write().expect("queue lock") = reference;
            if created {
                format!("subscribed to {topic}")
            } else {
                format!("the Subscription to {topic} made at an earlier start is used again")
            }
        }
        Err(e) => format!("the Subscription was refused ({}): polling", e.kind()),
    }
}

/// Start the poller of `ehr`'s queue: discover its token endpoint (again
/// every 30 s until it answers), then, while `leading` says this instance
/// leads, subscribe and sync with a Backend Services token. A follower
/// keeps the client (the patterns view and closing loops use it) but does
/// not sync; when it becomes the leader it goes on from the shared
/// watermark, and a leader that loses the lead stops syncing.
pub async fn run_for(
    smart: Arc<crate::auth::smart::SmartClient>,
    iss: String,
    queue: Arc<Queue>,
    http: reqwest::Client,
    limits: crate::fhir::Limits,
    public_url: Option<url::Url>,
    mut leading: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(ehr) = smart.ehr(&iss).cloned() else {
        return;
    };
    let Some(backend) = ehr.config.backend.clone() else {
        return;
    };
    let alg = ehr.config.key_alg.as_deref().unwrap_or("ES384");
    let Some(key) = smart
        .keys()
        .iter()
        .find(|k| format!("{:?}", k.alg()) == alg)
        .cloned()
    else {
        tracing::error!(alg, "no signing key for the queue's backend client");
        return;
    };
    let config = loop {
        match smart.discover(&ehr).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "the queue waits for the EHR's SMART configuration");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    };
    let client = BackendClient::new(
        config.token_endpoint.clone(),
        backend
            .client_id
            .clone()
            .unwrap_or_else(|| ehr.config.client_id.clone()),
        key,
        backend.scope.clone(),
    );
    let fhir = FhirClient::new(http, ehr.config.iss.clone(), limits)
        .with_authorizer(Arc::new(BackendAuth::new(client)));
    *queue.client.write().expect("queue lock") = Some(fhir.clone());
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        queue.take_lead();
        let how = subscribe(&queue, &fhir, public_url.as_ref(), backend.notify_secret_in).await;
        tracing::info!(
            every_s = backend.poll_seconds,
            "queue: {how}; polling at least every interval"
        );
        let every = Duration::from_secs(backend.poll_seconds.max(1));
        tokio::select! {
            _ = poller(queue.clone(), fhir.clone(), every) => {}
            lost = leading.wait_for(|l| !*l) => {
                if lost.is_err() {
                    return;
                }
            }
        }
        queue.set_leading(false);
        tracing::warn!("queue: this instance no longer leads; it stops syncing");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A referral Task of the index, for the tests here and the store's.
    pub(crate) fn task(id: &str, version: &str) -> QueueTask {
        QueueTask {
            id: id.into(),
            version: version.into(),
            kind: Kind::Referral,
            status: "requested".into(),
            description: "Referral".into(),
            priority: "routine".into(),
            patient_id: "p1".into(),
            patient_name: "P One".into(),
            owner: None,
            owner_name: None,
            role: None,
            domain: None,
            payer: None,
            authored: None,
            due: None,
            last_updated: "2026-01-01T00:00:00Z".into(),
            procedure_output: false,
            report: Default::default(),
        }
    }

    #[test]
    fn a_shared_queue_passes_on_its_own_changes_and_shows_the_others_without_passing_them_again() {
        let q = Queue::new("https://ehr/fhir/", &[1u8; 32], None);
        let mut shared = q.share();
        let mut page = q.subscribe();
        // Its own change: on its pages and shared.
        assert_eq!(q.upsert(vec![task("t1", "1")]), 1);
        assert_eq!(page.try_recv().unwrap(), "t1");
        assert!(matches!(shared.try_recv(), Ok(Shared::Tasks(t)) if t == [task("t1", "1")]));
        // Another instance's: on its pages, not shared again; an older
        // version changes nothing.
        assert_eq!(q.apply_shared(vec![task("t2", "1"), task("t1", "0")], 7), 1);
        assert_eq!(page.try_recv().unwrap(), "t2");
        assert!(page.try_recv().is_err());
        assert!(shared.try_recv().is_err());
        assert_eq!(q.shared_seq(), 7);
        // A notification reaching a follower goes to the leader.
        q.notify();
        assert!(matches!(shared.try_recv(), Ok(Shared::Wake)));
        q.set_leading(true);
        q.notify();
        assert!(shared.try_recv().is_err(), "the leader syncs itself");
    }

    #[test]
    fn a_follower_takes_the_leaders_sync_state_and_the_leader_keeps_its_own() {
        let leader = Queue::new("https://ehr/fhir/", &[1u8; 32], None);
        {
            let mut st = leader.state.write().unwrap();
            st.watermark = Some("2026-02-03T04:05:06Z".into());
            st.last = Some((time::OffsetDateTime::UNIX_EPOCH, Ok(12)));
        }
        leader.loops.write().unwrap().insert("t9".into(), 4);
        let meta = leader.meta();
        let follower = Queue::new("https://ehr/fhir/", &[1u8; 32], None);
        follower.apply_meta(&meta);
        let st = follower.sync_state();
        assert_eq!(st.watermark.as_deref(), Some("2026-02-03T04:05:06Z"));
        assert_eq!(st.last, Some((time::OffsetDateTime::UNIX_EPOCH, Ok(12))));
        assert_eq!(st.syncs, 0, "syncs count this instance's own");
        assert_eq!(follower.loop_days("t9"), Some(4));
        follower.set_leading(true);
        follower.apply_meta(&serde_json::json!({ "watermark": "1999-01-01T00:00:00Z" }));
        assert_eq!(
            follower.sync_state().watermark.as_deref(),
            Some("2026-02-03T04:05:06Z"),
            "a leader's own state is newer"
        );
    }

    #[test]
    fn a_new_leader_retries_the_completed_referrals_whose_loop_is_not_closed() {
        let q = Queue::new("https://ehr/fhir/", &[1u8; 32], None);
        let referral = |id: &str, status: &str, output: bool| QueueTask {
            kind: Kind::Referral,
            status: status.into(),
            procedure_output: output,
            ..task(id, "1")
        };
        q.upsert(vec![
            referral("open", "completed", true),
            referral("closed", "completed", true),
            referral("no-output", "completed", false),
            referral("working", "in-progress", true),
        ]);
        q.loops.write().unwrap().insert("closed".into(), 3);
        q.take_lead();
        assert!(q.is_leading());
        let pending: Vec<String> = q.pending_loops.read().unwrap().iter().cloned().collect();
        assert_eq!(pending, ["open"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_notifications_costs_one_sync_per_gap() {
        let wake = Arc::new(tokio::sync::Notify::new());
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = syncs.clone();
        let sync = move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {}
        };
        let pacer = {
            let wake = wake.clone();
            tokio::spawn(async move {
                paced(
                    sync,
                    &wake,
                    Duration::from_secs(900),
                    Duration::from_secs(5),
                )
                .await
            })
        };
        // 1,000 notifications over 20 s (one every 20 ms).
        for _ in 0..1_000 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let n = syncs.load(std::sync::atomic::Ordering::SeqCst);
        eprintln!("{n} syncs for 1,000 notifications over 20 s");
        // The first sync, then one per 5 s gap: 1 + 20 / 5.
        assert!((4..=6).contains(&n), "{n} syncs for 1,000 notifications");
        // A lone notification after a quiet while is served at once.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let before = syncs.load(std::sync::atomic::Ordering::SeqCst);
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(syncs.load(std::sync::atomic::Ordering::SeqCst), before + 1);
        pacer.abort();
    }
}
