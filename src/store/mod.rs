//! Passerelle's own store (SQLite through sqlx): only what FHIR has no place
//! for. Here: authorizations in progress and launches (sessions), with their
//! tokens encrypted at rest (AES-256-GCM, a key from the configuration).
//! The outbox and the audit trail will live here too.

use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};

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
}

/// The outbox columns a kept write is read from; the sealed text columns
/// come with their stored type (see `Store::open_text`).
macro_rules! outbox_columns {
    () => {
        "SELECT id, launch, payload, \
         CAST(summary AS BLOB) AS summary, typeof(summary) AS summary_type, status, attempts, \
         CAST(last_error AS BLOB) AS last_error, typeof(last_error) AS last_error_type FROM outbox"
    };
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
    pool: SqlitePool,
    cipher: Aes256Gcm,
    max_pending_states: i64,
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
    /// Open (creating it if needed) the database at `url` (`sqlite://file.db`
    /// or `sqlite::memory:`) and bring its schema up to date.
    pub async fn open(url: &str, key: &[u8; 32]) -> Result<Store, StoreError> {
        let options: SqliteConnectOptions =
            url.parse::<SqliteConnectOptions>()?.create_if_missing(true);
        if !url.contains(":memory:") {
            owner_only(options.get_filename())?;
        }
        // An in-memory database exists once per connection: keep one.
        let max = if url.contains(":memory:") { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)),
            max_pending_states: MAX_PENDING_STATES,
        })
    }

    /// The same store with another bound on pending authorizations (tests).
    pub fn with_max_pending_states(mut self, max: i64) -> Self {
        self.max_pending_states = max;
        self
    }

    /// A text column written sealed; a row written before columns were
    /// sealed holds plain text (SQLite keeps each value's own type), read as is.
    fn open_text(&self, r: &SqliteRow, column: &str) -> Result<Option<String>, StoreError> {
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
             SELECT ?, ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM launch_state) < ?",
        )
        .bind(state)
        .bind(&s.browser)
        .bind(&s.iss)
        .bind(s.ehr_launch)
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
        let row = sqlx::query("DELETE FROM launch_state WHERE state = ? RETURNING browser, iss, ehr_launch, secret, created_at")
            .bind(state)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .filter(|r| now() - r.get::<i64, _>("created_at") <= max_age)
            .map(|r| PendingState {
                browser: r.get("browser"),
                iss: r.get("iss"),
                ehr_launch: r.get("ehr_launch"),
                secret: r.get("secret"),
            }))
    }

    pub async fn put_launch(&self, l: &StoredLaunch) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO launches (id, browser, iss, context, granted, tokens, expires_at, csrf, created_at, last_seen) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let row = sqlx::query(
            "SELECT id, browser, iss, CAST(context AS BLOB) AS context, typeof(context) AS context_type, \
             granted, tokens, expires_at, csrf, last_seen FROM launches WHERE id = ?",
        )
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
        sqlx::query("UPDATE launches SET last_seen = ? WHERE id = ?")
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
        sqlx::query("UPDATE launches SET tokens = ?, expires_at = ? WHERE id = ?")
            .bind(tokens)
            .bind(expires_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn update_context(&self, id: &str, context: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE launches SET context = ? WHERE id = ?")
            .bind(self.seal(context.as_bytes()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_launch(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM launches WHERE id = ?")
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
        let states = sqlx::query("DELETE FROM launch_state WHERE created_at < ?")
            .bind(now() - state_age)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let launches = sqlx::query(
            "DELETE FROM launches WHERE last_seen < ? \
             AND id NOT IN (SELECT launch FROM outbox WHERE status = 'pending')",
        )
        .bind(now() - idle)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((states, launches))
    }

    /// Keep a write until it is sent. A second call with the same id keeps
    /// the first (the same screening posted twice) and returns false.
    pub async fn put_outbox(
        &self,
        id: &str,
        launch: &str,
        payload: &[u8],
        summary: &str,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO outbox (id, launch, payload, summary, status, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        )
        .bind(id)
        .bind(launch)
        .bind(self.seal(payload))
        .bind(self.seal(summary.as_bytes()))
        .bind(now())
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    pub async fn outbox(&self, id: &str) -> Result<Option<OutboxItem>, StoreError> {
        let row = sqlx::query(concat!(outbox_columns!(), " WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.outbox_item(r)).transpose()
    }

    /// Pending writes, the least recently tried first, so writes that keep
    /// failing cannot starve newer ones.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(concat!(
            outbox_columns!(),
            " WHERE status = 'pending' ORDER BY updated_at, attempts, created_at LIMIT ?"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
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

    fn outbox_item(&self, r: SqliteRow) -> Result<OutboxItem, StoreError> {
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
                let row = sqlx::query("SELECT attempts, created_at FROM outbox WHERE id = ?")
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
        sqlx::query("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?")
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

    #[tokio::test]
    async fn the_outbox_keeps_a_write_once_sealed_until_it_is_sent() {
        let s = store().await;
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

    #[tokio::test]
    async fn the_sweep_forgets_old_states_and_idle_launches_but_not_one_with_a_write_to_send() {
        let s = store().await;
        let pending = PendingState {
            browser: "b".into(),
            iss: "i".into(),
            ehr_launch: true,
            secret: vec![1],
        };
        for i in 0..50 {
            s.put_state(&format!("flood-{i}"), &pending).await.unwrap();
        }
        let launch = |id: &str, last_seen: i64| StoredLaunch {
            id: id.into(),
            browser: "b".into(),
            iss: "i".into(),
            context: "{}".into(),
            granted: "".into(),
            tokens: vec![],
            expires_at: 0,
            csrf: "c".into(),
            last_seen,
        };
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

    #[tokio::test]
    async fn writes_that_keep_failing_do_not_starve_newer_ones_and_give_up_saying_so() {
        let s = store().await;
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

        sqlx::query("UPDATE outbox SET attempts = ? WHERE id = 'w00'")
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

        sqlx::query("UPDATE outbox SET created_at = ? WHERE id = 'w01'")
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

    #[tokio::test]
    async fn a_state_is_taken_once_and_expires() {
        let s = store().await;
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

    #[tokio::test]
    async fn pending_authorizations_are_bounded_and_a_full_store_refuses_the_next() {
        let s = store().await.with_max_pending_states(3);
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
            id: "l1".into(),
            browser: "b".into(),
            iss: "i".into(),
            context: context.into(),
            granted: "".into(),
            tokens: vec![],
            expires_at: 0,
            csrf: "c".into(),
            last_seen: now(),
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
