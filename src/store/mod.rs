//! Passerelle's own store: only what FHIR has no place for. Here:
//! authorizations in progress and launches (sessions), with their tokens
//! encrypted at rest (AES-256-GCM, a key from the configuration), the
//! outbox of writes, and (with PostgreSQL) the queue's shared index.
//!
//! One API over two backends, chosen by `PASSERELLE_DATABASE_URL`: SQLite
//! (`sqlite:`, the embedded default, one instance) or PostgreSQL
//! (`postgres://`, several instances behind a load balancer sharing
//! launches, states, the outbox and the queue's index). The same SQL runs
//! on both through sqlx's `Any` driver (`$1` parameters, `RETURNING`,
//! `ON CONFLICT`, which both speak); each backend has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`), since SQLite keeps a
//! value's own type and PostgreSQL wants `BYTEA` for sealed columns.
//! What only PostgreSQL does (the leader's lock, LISTEN/NOTIFY) is
//! [`crate::cluster`]'s.

use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;

mod shared;

pub use shared::{QUEUE_CHANNEL, WAKE_CHANNEL};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Passerelle's store failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("Passerelle's store could not be prepared: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored secrets could not be decrypted (was the session key changed?)")]
    Decrypt,
    #[error("Passerelle's store holds a value it cannot read: {0}")]
    Corrupt(String),
    #[error("too many sign-ins are in progress")]
    Full,
    #[error("this needs PostgreSQL as Passerelle's store")]
    NotShared,
}

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file (or memory), one instance.
    Sqlite,
    /// Shared by several instances.
    Postgres,
}

/// `url` fit for a message: a PostgreSQL password is replaced by `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) if Backend::of(url) == Backend::Postgres => "postgres://…".to_string(),
        Err(_) => url.to_string(),
    }
}

impl Backend {
    /// The backend a `PASSERELLE_DATABASE_URL` names.
    pub fn of(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// Pending authorizations kept at most. Each lives ten minutes at most (the
/// sweep forgets older ones), so this bounds what a flood of launches from
/// many addresses can leave in the store, whatever the rate limit lets by.
pub const MAX_PENDING_STATES: i64 = 10_000;

/// Attempts after which a pending write is marked failed (at the outbox's
/// 10-second interval, about 3 hours of trying).
pub const OUTBOX_MAX_ATTEMPTS: i64 = 1_000;
/// Age (seconds) after which a pending write is marked failed: 7 days.
pub const OUTBOX_MAX_AGE: i64 = 7 * 86_400;
/// Seconds an instance holds the writes it claimed to send: no other
/// instance takes them before, and once over (the instance died while
/// sending) another takes them. Far above one send (the FHIR request
/// timeout, 30 s by default, and a token refresh).
pub const OUTBOX_LEASE: i64 = 300;

/// Where a kept write stands. Stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Not yet taken by the FHIR server; the worker sends it again.
    Pending,
    /// The FHIR server has it.
    Sent,
    /// Refused for good; kept so nothing the user wrote is lost.
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "sent" => Ok(OutboxStatus::Sent),
            "failed" => Ok(OutboxStatus::Failed),
            other => Err(StoreError::Corrupt(format!(
                "unknown outbox status {other:?}"
            ))),
        }
    }
}

/// Now, in unix seconds.
/// Create the database file readable by its owner only (0600), or make an
/// existing one so: it holds sealed tokens and patient context, and the
/// journal files SQLite creates beside it take the same mode.
fn owner_only(path: &std::path::Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Db(sqlx::Error::Io(e));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!("the database file was readable by others; now owner-only");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The store: a pool and the key that seals secrets.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL, for the connections of [`crate::cluster`] (never logged).
    url: std::sync::Arc<str>,
    cipher: Aes256Gcm,
    max_pending_states: i64,
    /// This instance, as it signs the outbox rows it claims.
    instance: std::sync::Arc<str>,
    lease: i64,
}

/// An authorization in progress.
#[derive(Debug, Clone)]
pub struct PendingState {
    pub browser: String,
    pub iss: String,
    pub ehr_launch: bool,
    pub secret: Vec<u8>,
}

/// A write kept until the FHIR server has it.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: String,
    pub launch: String,
    /// The decrypted payload (a transaction Bundle as JSON).
    pub payload: Vec<u8>,
    pub summary: String,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A stored launch.
#[derive(Debug, Clone)]
pub struct StoredLaunch {
    pub id: String,
    pub browser: String,
    pub iss: String,
    pub context: String,
    pub granted: String,
    pub tokens: Vec<u8>,
    pub expires_at: i64,
    pub csrf: String,
    pub last_seen: i64,
}

impl Store {
    /// Open the store at `url` and bring its schema up to date: SQLite
    /// (`sqlite://file.db`, created if needed, or `sqlite::memory:`) or
    /// PostgreSQL (`postgres://user:password@host/db`, the database made
    /// beforehand).
    pub async fn open(url: &str, key: &[u8; 32]) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url);
        let pool = match backend {
            Backend::Sqlite => {
                let options: SqliteConnectOptions = url.parse::<SqliteConnectOptions>()?;
                let memory = url.contains(":memory:");
                if !memory {
                    // Creates the file, so the URL needs no `mode=rwc`.
                    owner_only(options.get_filename())?;
                }
                // An in-memory database exists once per connection: keep one.
                let pool = AnyPoolOptions::new()
                    .max_connections(if memory { 1 } else { 4 })
                    .connect(url)
                    .await?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                pool
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(10)
                    .connect(url)
                    .await?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                pool
            }
        };
        Ok(Store {
            pool,
            backend,
            url: url.into(),
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)),
            max_pending_states: MAX_PENDING_STATES,
            instance: crate::auth::keys::random_token(12).into(),
            lease: OUTBOX_LEASE,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL (it may hold a password: never log it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The same store with another outbox lease, in seconds (tests).
    pub fn with_outbox_lease(mut self, seconds: i64) -> Self {
        self.lease = seconds;
        self
    }

    /// A sealed text column as the outbox reads it: with SQLite, with its
    /// stored type (rows written before sealing hold text), see
    /// [`Store::open_text`]; PostgreSQL's rows are all sealed.
    fn sealed_column(&self, column: &str) -> String {
        match self.backend {
            Backend::Sqlite => {
                format!("CAST({column} AS BLOB) AS {column}, typeof({column}) AS {column}_type")
            }
            Backend::Postgres => format!("{column}, 'blob' AS {column}_type"),
        }
    }

    /// The outbox columns a kept write is read from.
    fn outbox_columns(&self) -> String {
        format!(
            "id, launch, payload, {}, status, attempts, {}, updated_at, created_at",
            self.sealed_column("summary"),
            self.sealed_column("last_error")
        )
    }

    /// The same store with another bound on pending authorizations (tests).
    pub fn with_max_pending_states(mut self, max: i64) -> Self {
        self.max_pending_states = max;
        self
    }

    /// A text column written sealed; a row written before columns were
    /// sealed holds plain text (SQLite keeps each value's own type), read as is.
    fn open_text(&self, r: &AnyRow, column: &str) -> Result<Option<String>, StoreError> {
        let raw: Option<Vec<u8>> = r.get(column);
        let kind: String = r.get(format!("{column}_type").as_str());
        let Some(raw) = raw else { return Ok(None) };
        let plain = if kind == "blob" {
            self.open_sealed(&raw)?
        } else {
            raw
        };
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| StoreError::Corrupt(format!("{column} is not text")))
    }

    /// Encrypt `plain`: a random 96-bit nonce, then the ciphertext.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(&nonce, plain)
                .expect("AES-GCM encryption does not fail"),
        );
        out
    }

    pub fn open_sealed(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < 12 {
            return Err(StoreError::Decrypt);
        }
        let (nonce, data) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| StoreError::Decrypt)?;
        self.cipher
            .decrypt(&Nonce::from(nonce), data)
            .map_err(|_| StoreError::Decrypt)
    }

    /// Keep a pending authorization, unless [`MAX_PENDING_STATES`] are
    /// already kept ([`StoreError::Full`]): counted and inserted in one
    /// statement, so concurrent launches cannot pass the bound together.
    pub async fn put_state(&self, state: &str, s: &PendingState) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO launch_state (state, browser, iss, ehr_launch, secret, created_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT COUNT(*) FROM launch_state) < $7",
        )
        .bind(state)
        .bind(&s.browser)
        .bind(&s.iss)
        .bind(i64::from(s.ehr_launch))
        .bind(&s.secret)
        .bind(now())
        .bind(self.max_pending_states)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Full);
        }
        Ok(())
    }

    /// Take a state (it is deleted: a state is used once), if it is younger than `max_age` seconds.
    pub async fn take_state(
        &self,
        state: &str,
        max_age: i64,
    ) -> Result<Option<PendingState>, StoreError> {
        let row = sqlx::query("DELETE FROM launch_state WHERE state = $1 RETURNING browser, iss, ehr_launch, secret, created_at")
            .bind(state)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .filter(|r| now() - r.get::<i64, _>("created_at") <= max_age)
            .map(|r| PendingState {
                browser: r.get("browser"),
                iss: r.get("iss"),
                ehr_launch: r.get::<i64, _>("ehr_launch") != 0,
                secret: r.get("secret"),
            }))
    }

    pub async fn put_launch(&self, l: &StoredLaunch) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO launches (id, browser, iss, context, granted, tokens, expires_at, csrf, created_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&l.id)
        .bind(&l.browser)
        .bind(&l.iss)
        .bind(self.seal(l.context.as_bytes()))
        .bind(&l.granted)
        .bind(&l.tokens)
        .bind(l.expires_at)
        .bind(&l.csrf)
        .bind(now())
        .bind(l.last_seen)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn launch(&self, id: &str) -> Result<Option<StoredLaunch>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT id, browser, iss, {}, granted, tokens, expires_at, csrf, last_seen \
             FROM launches WHERE id = $1",
            self.sealed_column("context")
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredLaunch {
                context: self.open_text(&r, "context")?.unwrap_or_default(),
                id: r.get("id"),
                browser: r.get("browser"),
                iss: r.get("iss"),
                granted: r.get("granted"),
                tokens: r.get("tokens"),
                expires_at: r.get("expires_at"),
                csrf: r.get("csrf"),
                last_seen: r.get("last_seen"),
            })
        })
        .transpose()
    }

    pub async fn touch_launch(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE launches SET last_seen = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn update_tokens(
        &self,
        id: &str,
        tokens: &[u8],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE launches SET tokens = $1, expires_at = $2, refreshing_until = NULL \
             WHERE id = $3",
        )
        .bind(tokens)
        .bind(expires_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claim the refresh of launch `id` for `seconds`, unless another
    /// instance holds it: true when this one is to refresh. The claim ends
    /// with [`Store::update_tokens`] or [`Store::release_refresh`], or when
    /// its time is over (an instance that stopped mid-refresh).
    pub async fn claim_refresh(&self, id: &str, seconds: i64) -> Result<bool, StoreError> {
        let claimed = sqlx::query(
            "UPDATE launches SET refreshing_until = $1 \
             WHERE id = $2 AND (refreshing_until IS NULL OR refreshing_until < $3)",
        )
        .bind(now() + seconds)
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// End a refresh claim without new tokens (the refresh failed).
    pub async fn release_refresh(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE launches SET refreshing_until = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn update_context(&self, id: &str, context: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE launches SET context = $1 WHERE id = $2")
            .bind(self.seal(context.as_bytes()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_launch(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM launches WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forget authorizations older than `state_age` and launches idle longer
    /// than `idle` (seconds), with their sealed tokens: what an abandoned or
    /// flooded launch would otherwise leave on disk for ever. A launch that
    /// still has a write waiting to be sent is kept, since the outbox sends
    /// through it. Returns how many states and launches were removed.
    pub async fn sweep(&self, state_age: i64, idle: i64) -> Result<(u64, u64), StoreError> {
        let states = sqlx::query("DELETE FROM launch_state WHERE created_at < $1")
            .bind(now() - state_age)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let launches = sqlx::query(
            "DELETE FROM launches WHERE last_seen < $1 \
             AND id NOT IN (SELECT launch FROM outbox WHERE status = 'pending')",
        )
        .bind(now() - idle)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((states, launches))
    }

    /// Keep a write until it is sent, for the outbox workers to send. A
    /// second call with the same id keeps the first (the same screening
    /// posted twice) and returns false.
    pub async fn put_outbox(
        &self,
        id: &str,
        launch: &str,
        payload: &[u8],
        summary: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .insert_outbox(id, launch, payload, summary, None)
            .await?
            .is_some())
    }

    /// Keep a write until it is sent, already claimed by this instance to
    /// send it now: no outbox worker, here or on another instance, can
    /// take it between keeping and sending (which would leave the page
    /// saying "sending" for a write sent a moment later). `None` when a
    /// write with the same id was kept before; that one is left as it is.
    pub async fn put_outbox_claimed(
        &self,
        id: &str,
        launch: &str,
        payload: &[u8],
        summary: &str,
    ) -> Result<Option<OutboxItem>, StoreError> {
        let claim = (&*self.instance, now() + self.lease);
        self.insert_outbox(id, launch, payload, summary, Some(claim))
            .await
    }

    /// Insert a pending write, claimed by `claim` (instance, until) or not.
    async fn insert_outbox(
        &self,
        id: &str,
        launch: &str,
        payload: &[u8],
        summary: &str,
        claim: Option<(&str, i64)>,
    ) -> Result<Option<OutboxItem>, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO outbox (id, launch, payload, summary, status, created_at, updated_at, \
             claimed_by, claimed_until) VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8) \
             ON CONFLICT (id) DO NOTHING RETURNING {}",
            self.outbox_columns()
        ))
        .bind(id)
        .bind(launch)
        .bind(self.seal(payload))
        .bind(self.seal(summary.as_bytes()))
        .bind(now())
        .bind(now())
        .bind(claim.map(|(by, _)| by.to_string()))
        .bind(claim.map(|(_, until)| until))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.outbox_item(r)).transpose()
    }

    pub async fn outbox(&self, id: &str) -> Result<Option<OutboxItem>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {} FROM outbox WHERE id = $1",
            self.outbox_columns()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.outbox_item(r)).transpose()
    }

    /// Claim write `id` to send it now, if it is pending and no instance
    /// holds it (see [`OUTBOX_LEASE`]); `None` otherwise: it was sent, or
    /// another instance is sending it.
    pub async fn claim_outbox(&self, id: &str) -> Result<Option<OutboxItem>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2 \
             WHERE id = $3 AND status = 'pending' AND (claimed_until IS NULL OR claimed_until < $4) \
             RETURNING {}",
            self.outbox_columns()
        ))
        .bind(&*self.instance)
        .bind(now() + self.lease)
        .bind(id)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.outbox_item(r)).transpose()
    }

    /// Claim up to `limit` pending writes no instance holds, the least
    /// recently tried first, so writes that keep failing cannot starve
    /// newer ones. Each is this instance's until it records an attempt
    /// ([`Store::outbox_attempt`]) or [`OUTBOX_LEASE`] seconds pass. With
    /// PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`: instances
    /// claiming at the same moment take different rows, none waits.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxItem>, StoreError> {
        let skip_locked = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            // One writer at a time: the statement is atomic as it is.
            Backend::Sqlite => "",
        };
        let mut rows = sqlx::query(&format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM outbox WHERE status = 'pending' \
             AND (claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY updated_at, attempts, created_at, id LIMIT $4{skip_locked}) \
             RETURNING {}",
            self.outbox_columns()
        ))
        .bind(&*self.instance)
        .bind(now() + self.lease)
        .bind(now())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        // RETURNING keeps no order.
        rows.sort_by_key(|r| {
            (
                r.get::<i64, _>("updated_at"),
                r.get::<i64, _>("attempts"),
                r.get::<i64, _>("created_at"),
                r.get::<String, _>("id"),
            )
        });
        let mut items = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get("id");
            match self.outbox_item(r) {
                Ok(item) => items.push(item),
                // One row sealed with another key must not stop every other
                // write from being sent: it is marked failed, saying why, and
                // kept (a restart with the old key can still read it).
                Err(StoreError::Decrypt) => {
                    tracing::warn!("a kept write could not be decrypted; marked failed");
                    self.outbox_attempt(
                        &id,
                        Err((
                            "sealed with another session key (was PASSERELLE_SESSION_KEY changed?)",
                            true,
                        )),
                    )
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(items)
    }

    fn outbox_item(&self, r: AnyRow) -> Result<OutboxItem, StoreError> {
        Ok(OutboxItem {
            id: r.get("id"),
            launch: r.get("launch"),
            payload: self.open_sealed(&r.get::<Vec<u8>, _>("payload"))?,
            summary: self.open_text(&r, "summary")?.unwrap_or_default(),
            status: OutboxStatus::parse(r.get("status"))?,
            attempts: r.get("attempts"),
            last_error: self.open_text(&r, "last_error")?,
        })
    }

    /// Record an attempt: `Ok` marks it sent, `Err(message, final)` keeps it
    /// pending (transient) or marks it failed. A write still pending after
    /// [`OUTBOX_MAX_ATTEMPTS`] attempts or [`OUTBOX_MAX_AGE`] seconds is
    /// marked failed, saying so, instead of being tried for ever; it stays in
    /// the store and its page shows why.
    pub async fn outbox_attempt(
        &self,
        id: &str,
        result: Result<(), (&str, bool)>,
    ) -> Result<(), StoreError> {
        let (status, error) = match result {
            Ok(()) => (OutboxStatus::Sent, None),
            Err((e, true)) => (OutboxStatus::Failed, Some(e.to_string())),
            Err((e, false)) => {
                let row = sqlx::query("SELECT attempts, created_at FROM outbox WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                let (attempts, created): (i64, i64) = row
                    .map(|r| (r.get("attempts"), r.get("created_at")))
                    .unwrap_or((0, now()));
                if attempts + 1 >= OUTBOX_MAX_ATTEMPTS || now() - created > OUTBOX_MAX_AGE {
                    let days = (now() - created) / 86_400;
                    (
                        OutboxStatus::Failed,
                        Some(format!(
                            "not sent after {} attempts over {days} day(s); the last problem: {e}",
                            attempts + 1
                        )),
                    )
                } else {
                    (OutboxStatus::Pending, Some(e.to_string()))
                }
            }
        };
        sqlx::query(
            "UPDATE outbox SET status = $1, attempts = attempts + 1, last_error = $2, updated_at = $3, \
             claimed_by = NULL, claimed_until = NULL WHERE id = $4",
        )
            .bind(status.as_str())
            .bind(error.map(|e| self.seal(e.as_bytes())))
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> Store {
        Store::open("sqlite::memory:", &[7u8; 32]).await.unwrap()
    }

    /// A throw-away PostgreSQL server (the harness of `passerelle-dev`);
    /// fails, never skips, when PostgreSQL is not installed.
    async fn postgres() -> passerelle_dev::postgres::Postgres {
        passerelle_dev::postgres::Postgres::for_tests().await
    }

    /// The store's behaviour that does not depend on the backend, run on
    /// each: the same tests, on SQLite and on PostgreSQL.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite {
                $(#[tokio::test]
                async fn $name() {
                    super::$name(super::store().await).await
                })*
            }
            mod on_postgres {
                $(#[tokio::test]
                async fn $name() {
                    let pg = super::postgres().await;
                    let s = super::Store::open(&pg.url(), &[7u8; 32]).await.unwrap();
                    super::$name(s).await
                })*
            }
        };
    }

    on_both_backends!(
        the_outbox_keeps_a_write_once_sealed_until_it_is_sent,
        a_write_kept_to_send_now_is_no_workers_and_a_second_keeps_nothing,
        one_refresh_of_a_launch_at_a_time_until_tokens_are_written_or_the_claim_lapses,
        the_sweep_forgets_old_states_and_idle_launches_but_not_one_with_a_write_to_send,
        writes_that_keep_failing_do_not_starve_newer_ones_and_give_up_saying_so,
        a_state_is_taken_once_and_expires,
        pending_authorizations_are_bounded_and_a_full_store_refuses_the_next,
    );

    #[tokio::test]
    async fn two_instances_on_postgres_claim_different_writes_and_retake_a_dead_ones_after_its_lease()
     {
        let pg = postgres().await;
        let a = Store::open(&pg.url(), &[5u8; 32]).await.unwrap();
        let b = Store::open(&pg.url(), &[5u8; 32]).await.unwrap();
        for i in 0..40 {
            a.put_outbox(&format!("w{i:02}"), "l1", b"{}", "{}")
                .await
                .unwrap();
        }
        // Both claim at the same moment: no write is given to both.
        let (from_a, from_b) = tokio::join!(a.pending_outbox(30), b.pending_outbox(30));
        let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
        let mut all: Vec<String> = from_a.iter().chain(&from_b).map(|i| i.id.clone()).collect();
        eprintln!(
            "claimed at once: {} by one, {} by the other",
            from_a.len(),
            from_b.len()
        );
        all.sort();
        let n = all.len();
        all.dedup();
        assert_eq!((n, all.len()), (40, 40), "each write claimed once");
        assert!(a.pending_outbox(50).await.unwrap().is_empty(), "all held");
        assert!(b.claim_outbox("w00").await.unwrap().is_none());

        // An instance that dies holding a write: the other takes it once
        // the lease is over, not before.
        let dying = Store::open(&pg.url(), &[5u8; 32])
            .await
            .unwrap()
            .with_outbox_lease(1);
        dying
            .put_outbox("w-dying", "l1", b"{}", "{}")
            .await
            .unwrap();
        assert!(dying.claim_outbox("w-dying").await.unwrap().is_some());
        drop(dying);
        assert!(
            b.claim_outbox("w-dying").await.unwrap().is_none(),
            "still held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let taken = b.claim_outbox("w-dying").await.unwrap();
        assert_eq!(taken.map(|i| i.id).as_deref(), Some("w-dying"));
        // Recording the attempt ends the claim: it is sent once.
        b.outbox_attempt("w-dying", Ok(())).await.unwrap();
        assert!(a.claim_outbox("w-dying").await.unwrap().is_none(), "sent");
    }

    #[tokio::test]
    async fn on_postgres_sessions_and_writes_are_sealed_and_one_instance_reads_anothers() {
        let pg = postgres().await;
        let a = Store::open(&pg.url(), &[9u8; 32]).await.unwrap();
        let b = Store::open(&pg.url(), &[9u8; 32]).await.unwrap();
        let context = r#"{"patient":"pat-sealed-4711"}"#;
        a.put_launch(&StoredLaunch {
            context: context.into(),
            tokens: a.seal(b"tokens"),
            ..stored_launch("l1", now())
        })
        .await
        .unwrap();
        a.put_outbox("w1", "l1", b"{}", r#"{"what":"pat-sealed-4711"}"#)
            .await
            .unwrap();
        let read = b.launch("l1").await.unwrap().unwrap();
        assert_eq!(read.context, context, "the other instance reads it");
        assert_eq!(b.open_sealed(&read.tokens).unwrap(), b"tokens");
        assert!(
            b.outbox("w1")
                .await
                .unwrap()
                .unwrap()
                .summary
                .contains("4711")
        );
        let raw = sqlx::query(
            "SELECT encode(context, 'escape') AS c FROM launches              UNION ALL SELECT encode(summary, 'escape') FROM outbox",
        )
        .fetch_all(&a.pool)
        .await
        .unwrap();
        assert_eq!(raw.len(), 2);
        for r in raw {
            assert!(
                !r.get::<String, _>("c").contains("sealed-4711"),
                "sealed in the database"
            );
        }
        // Another key opens nothing.
        let other = Store::open(&pg.url(), &[1u8; 32]).await.unwrap();
        assert!(matches!(other.launch("l1").await, Err(StoreError::Decrypt)));
    }

    /// A launch of browser `b`, without tokens, last seen at `last_seen`.
    fn stored_launch(id: &str, last_seen: i64) -> StoredLaunch {
        StoredLaunch {
            id: id.into(),
            browser: "b".into(),
            iss: "i".into(),
            context: "{}".into(),
            granted: "".into(),
            tokens: vec![],
            expires_at: 0,
            csrf: "c".into(),
            last_seen,
        }
    }

    /// The queue's test Task, about a patient whose id the sealing tests
    /// look for on disk.
    fn queue_task(id: &str, version: &str, status: &str) -> crate::domain::queue::QueueTask {
        crate::domain::queue::QueueTask {
            status: status.into(),
            description: "Referral to food pantry".into(),
            patient_id: "pat-sealed-4711".into(),
            patient_name: "Sealed Patient".into(),
            domain: Some(crate::domain::sdoh::Domain::FoodInsecurity),
            ..crate::queue::tests::task(id, version)
        }
    }

    #[tokio::test]
    async fn the_queue_index_is_shared_sealed_in_order_and_an_older_version_does_not_win() {
        let pg = postgres().await;
        let a = Store::open(&pg.url(), &[4u8; 32]).await.unwrap();
        let b = Store::open(&pg.url(), &[4u8; 32]).await.unwrap();
        let meta = serde_json::json!({ "watermark": "2026-01-01T00:00:00Z" });
        a.put_queue(
            "https://ehr/fhir/",
            &[
                queue_task("t1", "1", "requested"),
                queue_task("t2", "1", "requested"),
            ],
            Some(&meta),
        )
        .await
        .unwrap();
        let (tasks, seen) = b.queue_since("https://ehr/fhir/", 0).await.unwrap();
        assert_eq!(
            tasks,
            [
                queue_task("t1", "1", "requested"),
                queue_task("t2", "1", "requested")
            ]
        );
        assert_eq!(b.queue_meta("https://ehr/fhir/").await.unwrap(), Some(meta));
        // A newer version is read from where the reader stood; a late,
        // older one changes nothing.
        a.put_queue(
            "https://ehr/fhir/",
            &[queue_task("t2", "3", "accepted")],
            None,
        )
        .await
        .unwrap();
        b.put_queue(
            "https://ehr/fhir/",
            &[queue_task("t2", "2", "in-progress")],
            None,
        )
        .await
        .unwrap();
        let (newer, _) = b.queue_since("https://ehr/fhir/", seen).await.unwrap();
        assert_eq!(newer, [queue_task("t2", "3", "accepted")]);
        assert!(
            b.queue_since("https://other/", 0)
                .await
                .unwrap()
                .0
                .is_empty()
        );
        let raw = sqlx::query("SELECT encode(task, 'escape') AS t FROM queue_tasks")
            .fetch_all(&a.pool)
            .await
            .unwrap();
        for r in raw {
            assert!(!r.get::<String, _>("t").contains("sealed-4711"));
        }
        // SQLite has one instance: nothing to share, said so.
        assert!(matches!(
            store().await.queue_since("https://ehr/fhir/", 0).await,
            Err(StoreError::NotShared)
        ));
    }

    #[test]
    fn a_database_password_never_shows_in_a_message() {
        assert_eq!(
            redacted("postgres://passerelle:s3cret@db:5432/passerelle"),
            "postgres://passerelle:***@db:5432/passerelle"
        );
        assert_eq!(redacted("sqlite://passerelle.db"), "sqlite://passerelle.db");
        assert_eq!(
            Backend::of("postgresql://db/p"),
            Backend::Postgres,
            "both URL schemes of libpq"
        );
    }

    #[tokio::test]
    async fn secrets_are_sealed_and_a_wrong_key_cannot_open_them() {
        let s = store().await;
        let sealed = s.seal(b"access-token-value");
        assert!(!sealed.windows(6).any(|w| w == b"access"));
        assert_eq!(s.open_sealed(&sealed).unwrap(), b"access-token-value");
        let other = Store::open("sqlite::memory:", &[8u8; 32]).await.unwrap();
        assert!(matches!(
            other.open_sealed(&sealed),
            Err(StoreError::Decrypt)
        ));
    }

    async fn the_outbox_keeps_a_write_once_sealed_until_it_is_sent(s: Store) {
        let s = s;
        s.put_outbox("scr-1", "l1", b"{\"resourceType\":\"Bundle\"}", "{}")
            .await
            .unwrap();
        s.put_outbox("scr-1", "l1", b"other", "{}").await.unwrap();
        let item = s.outbox("scr-1").await.unwrap().unwrap();
        assert_eq!(
            item.payload, b"{\"resourceType\":\"Bundle\"}",
            "the first one is kept"
        );
        assert_eq!(s.pending_outbox(10).await.unwrap().len(), 1);
        s.outbox_attempt("scr-1", Err(("The FHIR server failed (500)", false)))
            .await
            .unwrap();
        let item = s.outbox("scr-1").await.unwrap().unwrap();
        assert_eq!((item.status, item.attempts), (OutboxStatus::Pending, 1));
        s.outbox_attempt("scr-1", Ok(())).await.unwrap();
        assert_eq!(
            s.outbox("scr-1").await.unwrap().unwrap().status,
            OutboxStatus::Sent
        );
        assert!(s.pending_outbox(10).await.unwrap().is_empty());
    }

    async fn a_write_kept_to_send_now_is_no_workers_and_a_second_keeps_nothing(s: Store) {
        let item = s
            .put_outbox_claimed("scr-2", "l1", b"{\"resourceType\":\"Bundle\"}", "{}")
            .await
            .unwrap()
            .expect("kept");
        assert_eq!(
            (item.id.as_str(), item.status),
            ("scr-2", OutboxStatus::Pending)
        );
        assert_eq!(item.payload, b"{\"resourceType\":\"Bundle\"}");
        // Claimed as it was kept: neither a worker nor another claim takes it.
        assert!(s.pending_outbox(10).await.unwrap().is_empty());
        assert!(s.claim_outbox("scr-2").await.unwrap().is_none());
        assert!(
            s.put_outbox_claimed("scr-2", "l1", b"other", "{}")
                .await
                .unwrap()
                .is_none(),
            "the same write again keeps nothing"
        );
        assert_eq!(
            s.outbox("scr-2").await.unwrap().unwrap().payload,
            b"{\"resourceType\":\"Bundle\"}"
        );
        // Its attempt ends the claim: a failed send is the worker's again.
        s.outbox_attempt("scr-2", Err(("The FHIR server failed (500)", false)))
            .await
            .unwrap();
        assert_eq!(s.pending_outbox(10).await.unwrap().len(), 1);
    }

    async fn one_refresh_of_a_launch_at_a_time_until_tokens_are_written_or_the_claim_lapses(
        s: Store,
    ) {
        s.put_launch(&stored_launch("l1", now())).await.unwrap();
        assert!(s.claim_refresh("l1", 20).await.unwrap());
        assert!(!s.claim_refresh("l1", 20).await.unwrap(), "held");
        // New tokens end the claim.
        s.update_tokens("l1", b"sealed", now() + 3600)
            .await
            .unwrap();
        assert!(s.claim_refresh("l1", 20).await.unwrap());
        // So does a failed refresh.
        s.release_refresh("l1").await.unwrap();
        // A claim whose time is over (its instance stopped) is taken again.
        assert!(s.claim_refresh("l1", -1).await.unwrap());
        assert!(s.claim_refresh("l1", 20).await.unwrap(), "lapsed");
        assert!(!s.claim_refresh("unknown", 20).await.unwrap());
    }

    async fn the_sweep_forgets_old_states_and_idle_launches_but_not_one_with_a_write_to_send(
        s: Store,
    ) {
        let s = s;
        let pending = PendingState {
            browser: "b".into(),
            iss: "i".into(),
            ehr_launch: true,
            secret: vec![1],
        };
        for i in 0..50 {
            s.put_state(&format!("flood-{i}"), &pending).await.unwrap();
        }
        let launch = stored_launch;
        s.put_launch(&launch("idle", now() - 3600)).await.unwrap();
        s.put_launch(&launch("idle-with-write", now() - 3600))
            .await
            .unwrap();
        s.put_launch(&launch("fresh", now())).await.unwrap();
        s.put_outbox("w1", "idle-with-write", b"{}", "{}")
            .await
            .unwrap();

        assert_eq!(
            s.sweep(600, 1800).await.unwrap(),
            (0, 1),
            "recent states stay"
        );
        assert!(s.launch("idle").await.unwrap().is_none());
        assert!(
            s.launch("idle-with-write").await.unwrap().is_some(),
            "its write is waiting"
        );
        assert!(s.launch("fresh").await.unwrap().is_some());

        assert_eq!(
            s.sweep(-1, 1800).await.unwrap(),
            (50, 0),
            "the flood is gone"
        );
        s.outbox_attempt("w1", Ok(())).await.unwrap();
        assert_eq!(
            s.sweep(600, 1800).await.unwrap(),
            (0, 1),
            "sent: the launch goes too"
        );
        assert!(s.launch("idle-with-write").await.unwrap().is_none());
        assert!(s.launch("fresh").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_write_sealed_with_another_key_is_marked_failed_and_the_others_still_go() {
        let path = std::env::temp_dir().join(format!(
            "passerelle-store-{}.db",
            crate::auth::keys::random_token(8)
        ));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let old = Store::open(&url, &[1u8; 32]).await.unwrap();
        old.put_outbox("w-old", "l1", b"{}", "{}").await.unwrap();
        drop(old);
        let new = Store::open(&url, &[2u8; 32]).await.unwrap();
        new.put_outbox("w-new", "l1", b"{}", "{}").await.unwrap();
        let pending = new.pending_outbox(10).await.unwrap();
        assert_eq!(
            pending.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["w-new"],
            "the readable write still goes"
        );
        let raw = sqlx::query(
            "SELECT status, CAST(last_error AS BLOB) AS last_error, typeof(last_error) AS last_error_type \
             FROM outbox WHERE id = 'w-old'",
        )
        .fetch_one(&new.pool)
        .await
        .unwrap();
        assert_eq!(raw.get::<String, _>("status"), "failed");
        assert!(
            new.open_text(&raw, "last_error")
                .unwrap()
                .unwrap()
                .contains("another session key"),
            "the reason is kept, sealed with the key in use"
        );
        let _ = std::fs::remove_file(&path);
    }

    async fn writes_that_keep_failing_do_not_starve_newer_ones_and_give_up_saying_so(s: Store) {
        let s = s;
        for i in 0..60 {
            s.put_outbox(&format!("w{i:02}"), "l1", b"{}", "{}")
                .await
                .unwrap();
        }
        // Keep the 50 first pending; the 10 others come first next time.
        for item in s.pending_outbox(50).await.unwrap() {
            s.outbox_attempt(&item.id, Err(("The FHIR server failed (500)", false)))
                .await
                .unwrap();
        }
        let next: Vec<String> = s
            .pending_outbox(10)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(
            next,
            (50..60).map(|i| format!("w{i:02}")).collect::<Vec<_>>()
        );

        sqlx::query("UPDATE outbox SET attempts = $1 WHERE id = 'w00'")
            .bind(OUTBOX_MAX_ATTEMPTS - 1)
            .execute(&s.pool)
            .await
            .unwrap();
        s.outbox_attempt("w00", Err(("The FHIR server failed (500)", false)))
            .await
            .unwrap();
        let item = s.outbox("w00").await.unwrap().unwrap();
        assert_eq!(item.status, OutboxStatus::Failed);
        let why = item.last_error.unwrap();
        assert!(why.starts_with("not sent after 1000 attempts"), "{why}");
        assert!(why.contains("The FHIR server failed (500)"), "{why}");

        sqlx::query("UPDATE outbox SET created_at = $1 WHERE id = 'w01'")
            .bind(now() - OUTBOX_MAX_AGE - 1)
            .execute(&s.pool)
            .await
            .unwrap();
        s.outbox_attempt("w01", Err(("waiting for a launch", false)))
            .await
            .unwrap();
        let item = s.outbox("w01").await.unwrap().unwrap();
        assert_eq!(item.status, OutboxStatus::Failed);
        assert!(item.last_error.unwrap().contains("over 7 day(s)"));
    }

    async fn a_state_is_taken_once_and_expires(s: Store) {
        let s = s;
        let pending = PendingState {
            browser: "b".into(),
            iss: "i".into(),
            ehr_launch: true,
            secret: vec![1, 2],
        };
        s.put_state("st", &pending).await.unwrap();
        let taken = s.take_state("st", 600).await.unwrap().unwrap();
        assert_eq!((taken.browser.as_str(), taken.secret), ("b", vec![1, 2]));
        assert!(
            s.take_state("st", 600).await.unwrap().is_none(),
            "single use"
        );
        s.put_state("old", &pending).await.unwrap();
        assert!(s.take_state("old", -1).await.unwrap().is_none(), "too old");
    }

    async fn pending_authorizations_are_bounded_and_a_full_store_refuses_the_next(s: Store) {
        let s = s.with_max_pending_states(3);
        let pending = PendingState {
            browser: "b".into(),
            iss: "i".into(),
            ehr_launch: true,
            secret: vec![1],
        };
        for i in 0..3 {
            s.put_state(&format!("st-{i}"), &pending).await.unwrap();
        }
        assert!(matches!(
            s.put_state("st-3", &pending).await,
            Err(StoreError::Full)
        ));
        assert!(s.take_state("st-0", 600).await.unwrap().is_some());
        s.put_state("st-3", &pending)
            .await
            .expect("room again once one is used");
    }

    fn temp_db() -> (std::path::PathBuf, String) {
        let path = std::env::temp_dir().join(format!(
            "passerelle-store-{}.db",
            crate::auth::keys::random_token(8)
        ));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        (path, url)
    }

    #[tokio::test]
    async fn patient_context_summaries_and_errors_are_sealed_on_disk_in_an_owner_only_file() {
        use std::os::unix::fs::PermissionsExt;
        let (path, url) = temp_db();
        let s = Store::open(&url, &[3u8; 32]).await.unwrap();
        let context = r#"{"patient":"pat-sealed-4711","encounter":"enc-sealed-4711"}"#;
        s.put_launch(&StoredLaunch {
            context: context.into(),
            ..stored_launch("l1", now())
        })
        .await
        .unwrap();
        s.put_outbox(
            "w1",
            "l1",
            b"{}",
            r#"{"what":"Screening of pat-sealed-4711"}"#,
        )
        .await
        .unwrap();
        s.outbox_attempt("w1", Err(("Patient/pat-sealed-4711 refused", false)))
            .await
            .unwrap();
        // What the app reads back is the plain value.
        assert_eq!(s.launch("l1").await.unwrap().unwrap().context, context);
        let item = s.outbox("w1").await.unwrap().unwrap();
        assert!(item.summary.contains("pat-sealed-4711"));
        assert_eq!(
            item.last_error.as_deref(),
            Some("Patient/pat-sealed-4711 refused")
        );
        s.pool.close().await;
        let mut disk = std::fs::read(&path).unwrap();
        disk.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
        assert!(
            !disk.windows(11).any(|w| w == b"sealed-4711"),
            "no patient id in the file"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only: {mode:o}");
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn an_existing_database_readable_by_others_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (path, url) = temp_db();
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = Store::open(&url, &[3u8; 32]).await.unwrap();
        s.pool.close().await;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn rows_written_before_sealing_are_still_read() {
        let s = store().await;
        sqlx::query(
            "INSERT INTO launches (id, browser, iss, context, granted, tokens, expires_at, csrf, created_at, last_seen) \
             VALUES ('old', 'b', 'i', '{\"patient\":\"p1\"}', '', x'', 0, 'c', 0, 0)",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO outbox (id, launch, payload, summary, status, created_at, updated_at, last_error) \
             VALUES ('w-old', 'old', ?, '{\"what\":\"x\"}', 'pending', 0, 0, 'timed out')",
        )
        .bind(s.seal(b"{}"))
        .execute(&s.pool)
        .await
        .unwrap();
        assert_eq!(
            s.launch("old").await.unwrap().unwrap().context,
            r#"{"patient":"p1"}"#
        );
        let item = s.outbox("w-old").await.unwrap().unwrap();
        assert_eq!(item.summary, r#"{"what":"x"}"#);
        assert_eq!(item.last_error.as_deref(), Some("timed out"));
    }
}
