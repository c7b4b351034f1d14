//! Passerelle's own store (SQLite through sqlx): only what FHIR has no place
//! for. Here: authorizations in progress and launches (sessions), with their
//! tokens encrypted at rest (AES-256-GCM, a key from the configuration).
//! The outbox and the audit trail will live here too.

use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Passerelle's store failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("Passerelle's store could not be prepared: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored secrets could not be decrypted (was the session key changed?)")]
    Decrypt,
}

/// Now, in unix seconds.
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
}

/// An authorization in progress.
#[derive(Debug, Clone)]
pub struct PendingState {
    pub browser: String,
    pub iss: String,
    pub ehr_launch: bool,
    pub secret: Vec<u8>,
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
        })
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

    pub async fn put_state(&self, state: &str, s: &PendingState) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO launch_state (state, browser, iss, ehr_launch, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(state)
            .bind(&s.browser)
            .bind(&s.iss)
            .bind(s.ehr_launch)
            .bind(&s.secret)
            .bind(now())
            .execute(&self.pool)
            .await?;
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
        .bind(&l.context)
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
            "SELECT id, browser, iss, context, granted, tokens, expires_at, csrf, last_seen FROM launches WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| StoredLaunch {
            id: r.get("id"),
            browser: r.get("browser"),
            iss: r.get("iss"),
            context: r.get("context"),
            granted: r.get("granted"),
            tokens: r.get("tokens"),
            expires_at: r.get("expires_at"),
            csrf: r.get("csrf"),
            last_seen: r.get("last_seen"),
        }))
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
            .bind(context)
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

    /// Forget authorizations older than `state_age` and launches idle longer than `idle`.
    pub async fn sweep(&self, state_age: i64, idle: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM launch_state WHERE created_at < ?")
            .bind(now() - state_age)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM launches WHERE last_seen < ?")
            .bind(now() - idle)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Raw rows, for the test that checks tokens are not stored in clear.
    pub async fn raw_dump(&self) -> Result<Vec<u8>, StoreError> {
        let rows = sqlx::query("SELECT context, granted, tokens, csrf FROM launches")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(r.get::<String, _>("context").into_bytes());
            out.extend(r.get::<String, _>("granted").into_bytes());
            out.extend(r.get::<Vec<u8>, _>("tokens"));
        }
        Ok(out)
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
}
