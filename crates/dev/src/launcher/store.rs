//! The launcher's memory: launch contexts made by the EHR page, standalone
//! requests waiting for the picker, authorization codes, refresh tokens,
//! the `jti`s of client assertions already used, and the clients' JWKS.
//!
//! Everything lives behind one mutex held only for a lookup or an insert
//! (never across an `await`). Time is passed in, so the expiry rules are
//! tested without sleeping. Expired entries are dropped whenever a new one
//! is added, so a launcher left running does not grow without bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;

use super::scopes::Grant;
use passerelle::auth::keys::random_token;

/// An authorization code is good for this long (and once).
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// A launch context made by the EHR page is good for this long (a reload of
/// the app inside the EHR page may use it again).
pub const LAUNCH_LIFETIME: Duration = Duration::from_secs(3600);
/// A standalone request waits this long for the picker's answer.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(600);

/// Who and what a launch is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchContext {
    pub practitioner: String,
    pub patient: Option<String>,
    pub encounter: Option<String>,
    /// Made by the EHR page (EHR launch), not the picker.
    pub ehr: bool,
}

/// An authorization request, checked, waiting for the picker (standalone).
#[derive(Debug, Clone)]
pub struct Pending {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    /// The raw requested scope string.
    pub scope: String,
    /// The picker must ask for a patient.
    pub needs_patient: bool,
}

/// What an authorization code stands for.
#[derive(Debug, Clone)]
pub struct Code {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub grant: Grant,
    pub context: LaunchContext,
    pub nonce: Option<String>,
}

/// What a refresh token stands for.
#[derive(Debug, Clone)]
pub struct Refresh {
    pub client_id: String,
    pub grant: Grant,
    pub context: LaunchContext,
}

/// Why a refresh token was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum RefreshRefused {
    Unknown,
    OtherClient,
}

#[derive(Default)]
pub struct Store {
    launches: HashMap<String, (LaunchContext, Instant)>,
    pending: HashMap<String, (Pending, Instant)>,
    codes: HashMap<String, (Code, Instant)>,
    refresh: HashMap<String, Refresh>,
    /// `client_id` and `jti` → the assertion's `exp` (Unix seconds).
    jtis: HashMap<(String, String), u64>,
    /// client id → its public keys, by `kid`.
    jwks: HashMap<String, HashMap<String, Jwk>>,
}

fn fresh(made: Instant, lifetime: Duration, now: Instant) -> bool {
    now.saturating_duration_since(made) < lifetime
}

impl Store {
    pub fn new_launch(&mut self, context: LaunchContext, now: Instant) -> String {
        self.launches
            .retain(|_, (_, made)| fresh(*made, LAUNCH_LIFETIME, now));
        let id = random_token(16);
        self.launches.insert(id.clone(), (context, now));
        id
    }

    pub fn launch(&self, id: &str, now: Instant) -> Option<LaunchContext> {
        self.launches
            .get(id)
            .filter(|(_, made)| fresh(*made, LAUNCH_LIFETIME, now))
            .map(|(c, _)| c.clone())
    }

    pub fn new_pending(&mut self, pending: Pending, now: Instant) -> String {
        self.pending
            .retain(|_, (_, made)| fresh(*made, PENDING_LIFETIME, now));
        let id = random_token(16);
        self.pending.insert(id.clone(), (pending, now));
        id
    }

    pub fn pending(&self, id: &str, now: Instant) -> Option<Pending> {
        self.pending
            .get(id)
            .filter(|(_, made)| fresh(*made, PENDING_LIFETIME, now))
            .map(|(p, _)| p.clone())
    }

    pub fn remove_pending(&mut self, id: &str) {
        self.pending.remove(id);
    }

    pub fn new_code(&mut self, code: Code, now: Instant) -> String {
        self.codes
            .retain(|_, (_, made)| fresh(*made, CODE_LIFETIME, now));
        let id = random_token(32);
        self.codes.insert(id.clone(), (code, now));
        id
    }

    /// The code, once: it is gone after this call, used or not.
    pub fn take_code(&mut self, id: &str, now: Instant) -> Option<Code> {
        self.codes
            .remove(id)
            .filter(|(_, made)| fresh(*made, CODE_LIFETIME, now))
            .map(|(c, _)| c)
    }

    pub fn new_refresh(&mut self, refresh: Refresh) -> String {
        let id = random_token(32);
        self.refresh.insert(id.clone(), refresh);
        id
    }

    /// The refresh token of `client_id`, once (rotation: the caller issues a
    /// new one). Another client's token stays where it is.
    pub fn take_refresh(&mut self, id: &str, client_id: &str) -> Result<Refresh, RefreshRefused> {
        match self.refresh.get(id) {
            None => Err(RefreshRefused::Unknown),
            Some(r) if r.client_id != client_id => Err(RefreshRefused::OtherClient),
            Some(_) => Ok(self.refresh.remove(id).expect("present")),
        }
    }

    /// Put back a refresh token taken by a request that then failed.
    pub fn restore_refresh(&mut self, id: &str, refresh: Refresh) {
        self.refresh.insert(id.to_string(), refresh);
    }

    /// Every refresh token is revoked (a withdrawn authorization).
    pub fn revoke_all_refresh(&mut self) {
        self.refresh.clear();
    }

    /// RFC 7009: revoke `client_id`'s refresh token; true if one was revoked.
    pub fn revoke_refresh(&mut self, id: &str, client_id: &str) -> bool {
        self.take_refresh(id, client_id).is_ok()
    }

    /// Remember a client assertion's `jti` until its `exp`; false if it was
    /// seen before (a replay).
    pub fn first_use_of_jti(&mut self, client_id: &str, jti: &str, exp: u64, now: u64) -> bool {
        self.jtis.retain(|_, e| *e >= now);
        let key = (client_id.to_string(), jti.to_string());
        if self.jtis.contains_key(&key) {
            return false;
        }
        self.jtis.insert(key, exp);
        true
    }

    pub fn client_key(&self, client_id: &str, kid: &str) -> Option<Jwk> {
        self.jwks.get(client_id)?.get(kid).cloned()
    }

    pub fn set_client_keys(&mut self, client_id: &str, keys: HashMap<String, Jwk>) {
        self.jwks.insert(client_id.to_string(), keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> LaunchContext {
        LaunchContext {
            practitioner: "pr".into(),
            patient: Some("p".into()),
            encounter: None,
            ehr: true,
        }
    }

    fn code() -> Code {
        Code {
            client_id: "app".into(),
            redirect_uri: "http://app/cb".into(),
            code_challenge: "x".into(),
            grant: Grant::default(),
            context: context(),
            nonce: None,
        }
    }

    #[test]
    fn codes_are_single_use_and_expire_after_a_minute() {
        let mut store = Store::default();
        let t0 = Instant::now();
        let id = store.new_code(code(), t0);
        assert!(store.take_code(&id, t0).is_some());
        assert!(store.take_code(&id, t0).is_none(), "used twice");
        let id = store.new_code(code(), t0);
        assert!(
            store
                .take_code(&id, t0 + CODE_LIFETIME + Duration::from_secs(1))
                .is_none()
        );
    }

    #[test]
    fn launch_contexts_live_an_hour_and_may_be_reused() {
        let mut store = Store::default();
        let t0 = Instant::now();
        let id = store.new_launch(context(), t0);
        assert_eq!(store.launch(&id, t0), Some(context()));
        assert_eq!(store.launch(&id, t0), Some(context()));
        assert_eq!(store.launch(&id, t0 + LAUNCH_LIFETIME), None);
        assert_eq!(store.launch("unknown", t0), None);
    }

    #[test]
    fn refresh_tokens_rotate_and_belong_to_their_client() {
        let mut store = Store::default();
        let r = Refresh {
            client_id: "app".into(),
            grant: Grant::default(),
            context: context(),
        };
        let id = store.new_refresh(r.clone());
        assert_eq!(
            store.take_refresh(&id, "other").unwrap_err(),
            RefreshRefused::OtherClient
        );
        assert!(store.take_refresh(&id, "app").is_ok());
        assert_eq!(
            store.take_refresh(&id, "app").unwrap_err(),
            RefreshRefused::Unknown
        );
        let id = store.new_refresh(r);
        assert!(!store.revoke_refresh(&id, "other"));
        assert!(store.revoke_refresh(&id, "app"));
        assert!(!store.revoke_refresh(&id, "app"));
    }

    #[test]
    fn a_jti_is_accepted_once_until_it_expires() {
        let mut store = Store::default();
        assert!(store.first_use_of_jti("app", "j1", 1_000, 900));
        assert!(!store.first_use_of_jti("app", "j1", 1_000, 950));
        assert!(
            store.first_use_of_jti("other", "j1", 1_000, 950),
            "per client"
        );
        // After its exp the assertion itself is refused; the cache forgets it.
        assert!(store.first_use_of_jti("app", "j1", 2_000, 1_001));
    }
}
