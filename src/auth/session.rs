//! Launches (sessions): one chart opened in one browser.
//!
//! Tokens stay on the server, sealed in Passerelle's store. The browser holds
//! one opaque cookie (`__Host-passerelle`, its browser id) and each page URL
//! carries a launch id, so two charts open in one browser never mix
//! patients. A launch is refreshed before its token expires and after a
//! 401, one refresh at a time per launch; rotated refresh tokens replace
//! the old ones. Without a refresh token the user is asked to launch again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::random_token;
use super::scopes::Scopes;
use super::smart::{AuthError, AuthorizeRequest, Ehr, SmartClient, SmartConfiguration, Tokens};
use crate::fhir::{Authorizer, FhirClient, FhirError, Limits};
use crate::store::{PendingState, Store, StoredLaunch, now};

/// How long an authorization may take between redirect and callback.
const STATE_MAX_AGE: i64 = 600;
/// Refresh this long before the access token expires.
const REFRESH_MARGIN: i64 = 30;
/// How long one instance holds a launch's refresh (the token request has
/// 15 s); the others wait for its tokens at most this long, checking every
/// [`REFRESH_WAIT_STEP`].
const REFRESH_CLAIM: i64 = 20;
const REFRESH_WAIT_STEP: Duration = Duration::from_millis(100);

/// The launch context as the token response gave it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LaunchContext {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    pub fhir_user: Option<String>,
    pub user_name: Option<String>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
    pub intent: Option<String>,
    pub tenant: Option<String>,
    pub fhir_context: Vec<Value>,
    /// The scopes asked for (refreshes ask for the same).
    pub asked: String,
    pub ehr_launch: bool,
}

#[derive(Serialize, Deserialize)]
struct StateSecret {
    verifier: String,
    scope: String,
    /// The `nonce` sent with `openid` (OpenID Connect Core §3.1.2.1); absent
    /// in states kept by an older Passerelle.
    #[serde(default)]
    nonce: Option<String>,
}

/// All launches of this Passerelle.
pub struct Sessions {
    store: Store,
    smart: Arc<SmartClient>,
    idle: Duration,
    refresh_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An open launch, checked against its browser and idle timeout.
#[derive(Clone)]
pub struct Launch {
    pub id: String,
    pub iss: String,
    pub context: LaunchContext,
    pub granted: Scopes,
    pub csrf: String,
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch").field("iss", &self.iss).finish()
    }
}

impl Sessions {
    pub fn new(store: Store, smart: Arc<SmartClient>, idle: Duration) -> Arc<Sessions> {
        Arc::new(Sessions {
            store,
            smart,
            idle,
            refresh_locks: Mutex::default(),
        })
    }

    pub fn smart(&self) -> &SmartClient {
        &self.smart
    }

    /// The SMART client, shared (for the queue's pollers).
    pub fn smart_shared(&self) -> Arc<SmartClient> {
        self.smart.clone()
    }

    /// Start an authorization for `iss` (allow-listed, discovered) from `browser`.
    pub async fn begin(
        &self,
        iss: &str,
        launch: Option<&str>,
        browser: &str,
        coordinator: bool,
    ) -> Result<AuthorizeRequest, AuthError> {
        let ehr = self.smart.ehr(iss)?.clone();
        let config = self.smart.discover(&ehr).await?;
        let request = self
            .smart
            .authorize_for(&ehr, &config, launch, coordinator)?;
        let secret = serde_json::to_vec(&StateSecret {
            verifier: request.verifier.clone(),
            scope: request.scope.clone(),
            nonce: request.nonce.clone(),
        })
        .expect("serialisable");
        let pending = PendingState {
            browser: browser.to_string(),
            iss: ehr.config.iss.to_string(),
            ehr_launch: launch.is_some(),
            secret: self.store.seal(&secret),
        };
        self.store
            .put_state(&request.state, &pending)
            .await
            .map_err(store_error)?;
        Ok(request)
    }

    /// Finish an authorization: the state must be fresh, unused and from this
    /// browser; the response must have come back to the redirect URI of
    /// the EHR the request went to (`arrived`: the `{key}` of the
    /// `/callback/{key}` it arrived at, `None` for `/callback`; RFC 9700
    /// §4.4.2) and its `iss` (RFC 9207) must name that EHR; the code is
    /// exchanged; the `id_token` verified with the request's `nonce`.
    ///
    /// The state is used up whatever the outcome, a refused one too: a
    /// state seen at the wrong callback has been relayed, and leaving it
    /// pending would let whoever relayed it try it again elsewhere; the
    /// person launches again. Returns the launch id.
    pub async fn complete(
        &self,
        state: &str,
        code: &str,
        iss: Option<&str>,
        browser: &str,
        arrived: Option<&str>,
    ) -> Result<String, AuthError> {
        let pending = self
            .store
            .take_state(state, STATE_MAX_AGE)
            .await
            .map_err(store_error)?
            .ok_or(AuthError::BadState)?;
        if pending.browser != browser {
            return Err(AuthError::BadState);
        }
        let secret: StateSecret = self
            .store
            .open_sealed(&pending.secret)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::BadState)?;
        let ehr = self.smart.ehr(&pending.iss)?.clone();
        // Before any request: another EHR's callback never exchanges a code.
        if !ehr.answers_at(arrived) {
            tracing::warn!(
                ehr = %ehr.config.name,
                "an authorization response came back to another EHR's redirect URI; refused"
            );
            return Err(AuthError::WrongRedirect);
        }
        let config = self.smart.discover(&ehr).await?;
        // Before the code goes anywhere: a relayed response's code must not
        // reach this EHR's token endpoint (RFC 9700 §4.4).
        self.smart.check_response_issuer(&ehr, &config, iss)?;
        let granted = self
            .smart
            .exchange(&ehr, &config, code, &secret.verifier, &secret.scope)
            .await?;
        let mut fhir_user = None;
        if let Some(id_token) = &granted.tokens.id_token {
            let claims = self
                .smart
                .verify_id_token(&ehr, &config, id_token, secret.nonce.as_deref())
                .await?;
            fhir_user = claims
                .get("fhirUser")
                .and_then(Value::as_str)
                .map(String::from);
        }
        let c = &granted.context;
        let context = LaunchContext {
            patient: c.patient.clone(),
            encounter: c.encounter.clone(),
            fhir_user,
            user_name: None,
            need_patient_banner: c.need_patient_banner.unwrap_or(true),
            smart_style_url: c.smart_style_url.clone(),
            intent: c.intent.clone(),
            tenant: c.tenant.clone(),
            fhir_context: c.fhir_context.clone(),
            asked: secret.scope,
            ehr_launch: pending.ehr_launch,
        };
        let id = random_token(16);
        let stored = StoredLaunch {
            id: id.clone(),
            browser: browser.to_string(),
            iss: pending.iss,
            context: serde_json::to_string(&context).expect("serialisable"),
            granted: granted.scope.clone(),
            tokens: self
                .store
                .seal(&serde_json::to_vec(&granted.tokens).expect("serialisable")),
            expires_at: now() + granted.expires_in.as_secs() as i64,
            csrf: random_token(16),
            last_seen: now(),
        };
        self.store.put_launch(&stored).await.map_err(store_error)?;
        Ok(id)
    }

    /// The launch `id`, if it belongs to `browser` and has been used recently.
    pub async fn open(self: &Arc<Self>, id: &str, browser: &str) -> Result<Launch, AuthError> {
        self.open_with(id, browser, true).await
    }

    /// [`Self::open`]; `touch: false` for requests a page makes by itself
    /// (the queue's live updates), which must not keep an idle launch alive.
    pub async fn open_with(
        self: &Arc<Self>,
        id: &str,
        browser: &str,
        touch: bool,
    ) -> Result<Launch, AuthError> {
        let stored = self
            .store
            .launch(id)
            .await
            .map_err(store_error)?
            .ok_or(AuthError::WrongLaunch)?;
        if stored.browser != browser {
            return Err(AuthError::WrongLaunch);
        }
        if now() - stored.last_seen > self.idle.as_secs() as i64 {
            self.store.delete_launch(id).await.map_err(store_error)?;
            return Err(AuthError::LaunchAgain);
        }
        if touch {
            self.store.touch_launch(id).await.map_err(store_error)?;
        }
        let context: LaunchContext =
            serde_json::from_str(&stored.context).map_err(|_| AuthError::LaunchAgain)?;
        Ok(Launch {
            id: stored.id,
            iss: stored.iss,
            granted: Scopes::parse(&stored.granted),
            context,
            csrf: stored.csrf,
            sessions: self.clone(),
        })
    }

    async fn ehr_and_config(&self, iss: &str) -> Result<(Ehr, Arc<SmartConfiguration>), AuthError> {
        let ehr = self.smart.ehr(iss)?.clone();
        let config = self.smart.discover(&ehr).await?;
        Ok((ehr, config))
    }

    fn tokens(&self, stored: &StoredLaunch) -> Result<Tokens, AuthError> {
        self.store
            .open_sealed(&stored.tokens)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::LaunchAgain)
    }

    /// A valid access token for launch `id`: the stored one, or refreshed
    /// when it expires within the margin, or when `rejected` was refused.
    async fn access_token(&self, id: &str, rejected: Option<&str>) -> Result<String, AuthError> {
        let lock = {
            let mut locks = self.refresh_locks.lock().expect("lock");
            prune_unused(&mut locks);
            locks.entry(id.to_string()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        // The lock above orders this instance's requests; with several
        // instances on one store, a claim on the stored launch orders them
        // all, since a rotated refresh token is good once.
        let waiting_since = std::time::Instant::now();
        let (stored, tokens, refresh) = loop {
            let stored = self
                .store
                .launch(id)
                .await
                .map_err(store_error)?
                .ok_or(AuthError::LaunchAgain)?;
            let tokens = self.tokens(&stored)?;
            let still_valid = stored.expires_at - now() > REFRESH_MARGIN;
            let was_rejected = rejected == Some(tokens.access.as_str());
            if still_valid && !was_rejected {
                // Valid, or someone else refreshed it while we waited.
                return Ok(tokens.access);
            }
            let Some(refresh) = tokens.refresh.clone() else {
                if was_rejected {
                    self.spend(id, tokens).await?;
                }
                return Err(AuthError::LaunchAgain);
            };
            if self
                .store
                .claim_refresh(id, REFRESH_CLAIM)
                .await
                .map_err(store_error)?
            {
                break (stored, tokens, refresh);
            }
            // Another instance is refreshing it: its tokens will do. Its
            // claim lapses if it stopped, and then this one takes it.
            if waiting_since.elapsed() > Duration::from_secs(REFRESH_CLAIM as u64 + 5) {
                return Err(AuthError::RefreshPending);
            }
            tokio::time::sleep(REFRESH_WAIT_STEP).await;
        };
        let refreshed = self.refresh_claimed(id, &stored, tokens, &refresh).await;
        if refreshed.is_err() {
            // Tokens written (refreshed or spent) end the claim; an error
            // before that must not keep the other instances waiting.
            if let Err(e) = self.store.release_refresh(id).await {
                tracing::warn!(error = %e, "a refresh claim could not be released");
            }
        }
        refreshed
    }

    /// Refresh launch `id`, whose refresh this instance has claimed.
    async fn refresh_claimed(
        &self,
        id: &str,
        stored: &StoredLaunch,
        tokens: Tokens,
        refresh: &str,
    ) -> Result<String, AuthError> {
        let context: LaunchContext =
            serde_json::from_str(&stored.context).map_err(|_| AuthError::LaunchAgain)?;
        let (ehr, config) = self.ehr_and_config(&stored.iss).await?;
        let granted = match self
            .smart
            .refresh(&ehr, &config, refresh, &context.asked)
            .await
        {
            Ok(granted) => granted,
            Err(AuthError::Refused(_)) => {
                tracing::info!("a refresh was refused; the user must launch again");
                self.spend(id, tokens).await?;
                return Err(AuthError::LaunchAgain);
            }
            Err(other) => return Err(other),
        };
        let new_tokens = Tokens {
            id_token: tokens.id_token,
            ..granted.tokens
        };
        let sealed = self
            .store
            .seal(&serde_json::to_vec(&new_tokens).expect("serialisable"));
        self.store
            .update_tokens(id, &sealed, now() + granted.expires_in.as_secs() as i64)
            .await
            .map_err(store_error)?;
        Ok(new_tokens.access)
    }

    /// Remember on the stored launch that its authorization is spent (the
    /// refresh was refused, or a rejected token has no refresh token): the
    /// refresh token is dropped and the access token marked expired, so the
    /// other requests of the same page, and the outbox, answer "launch
    /// again" at once instead of each asking the token endpoint (RFC 6749
    /// §5.2: an `invalid_grant` refresh token stays invalid).
    async fn spend(&self, id: &str, tokens: Tokens) -> Result<(), AuthError> {
        let spent = Tokens {
            refresh: None,
            ..tokens
        };
        let sealed = self
            .store
            .seal(&serde_json::to_vec(&spent).expect("serialisable"));
        self.store
            .update_tokens(id, &sealed, 0)
            .await
            .map_err(store_error)
    }

    /// A FHIR client for launch `id`, for background work (the outbox): no
    /// browser check, no idle touch; its tokens are refreshed as usual.
    pub async fn client_for(
        self: &Arc<Self>,
        id: &str,
        http: reqwest::Client,
        limits: Limits,
    ) -> Result<FhirClient, AuthError> {
        let stored = self
            .store
            .launch(id)
            .await
            .map_err(store_error)?
            .ok_or(AuthError::LaunchAgain)?;
        let base = url::Url::parse(&stored.iss).map_err(|_| AuthError::LaunchAgain)?;
        let auth = Arc::new(LaunchAuthorizer {
            sessions: self.clone(),
            id: id.to_string(),
        });
        Ok(FhirClient::new(http, base, limits).with_authorizer(auth))
    }

    /// Whether launch `id` is still open (not signed out, not idle past the
    /// timeout), without touching it: a live stream asks this, so it ends
    /// with its launch and does not keep it alive.
    pub async fn still_open(&self, id: &str) -> bool {
        match self.store.launch(id).await {
            Ok(Some(stored)) => now() - stored.last_seen <= self.idle.as_secs() as i64,
            Ok(None) => false,
            // The store failing is no reason to end a coordinator's queue.
            Err(_) => true,
        }
    }

    /// How often a live stream asks [`Self::still_open`].
    pub fn recheck_every(&self) -> Duration {
        (self.idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(15))
    }

    /// End a launch: revoke its refresh token where the EHR can, forget it.
    pub async fn logout(&self, launch: &Launch) -> Result<(), AuthError> {
        if let Some(stored) = self.store.launch(&launch.id).await.map_err(store_error)?
            && let Ok(tokens) = self.tokens(&stored)
            && let Some(refresh) = tokens.refresh
            && let Ok((ehr, config)) = self.ehr_and_config(&stored.iss).await
        {
            self.smart.revoke(&ehr, &config, &refresh).await;
        }
        self.store
            .delete_launch(&launch.id)
            .await
            .map_err(store_error)
    }

    /// Forget expired authorizations and launches idle past the idle
    /// timeout (see [`Store::sweep`]); run on a timer by the app.
    pub async fn sweep(&self) -> Result<(u64, u64), crate::store::StoreError> {
        self.store
            .sweep(STATE_MAX_AGE, self.idle.as_secs() as i64)
            .await
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Forget the refresh locks no one holds or waits for (only the map keeps
/// them), so the map does not grow with every launch ever refreshed.
fn prune_unused(locks: &mut HashMap<String, Arc<tokio::sync::Mutex<()>>>) {
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
}

fn store_error(e: crate::store::StoreError) -> AuthError {
    if matches!(e, crate::store::StoreError::Full) {
        tracing::warn!("a launch was refused: too many sign-ins in progress");
        return AuthError::Busy;
    }
    tracing::error!(error = %e, "store failure during a launch");
    AuthError::Config("Passerelle's store is unavailable".into())
}

struct LaunchAuthorizer {
    sessions: Arc<Sessions>,
    id: String,
}

fn as_fhir(e: AuthError) -> FhirError {
    match e {
        // Not an ended authorization: a moment later it is renewed.
        AuthError::RefreshPending => FhirError::Server {
            status: 503,
            message: e.to_string(),
        },
        e => FhirError::Unauthorized {
            message: e.to_string(),
        },
    }
}

impl Authorizer for LaunchAuthorizer {
    fn token(&self) -> BoxFuture<'_, Result<String, FhirError>> {
        Box::pin(async move {
            self.sessions
                .access_token(&self.id, None)
                .await
                .map_err(as_fhir)
        })
    }

    fn after_unauthorized<'a>(
        &'a self,
        rejected: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, FhirError>> {
        Box::pin(async move {
            match self.sessions.access_token(&self.id, Some(rejected)).await {
                Ok(t) if t != rejected => Ok(Some(t)),
                Ok(_) => Ok(None),
                Err(AuthError::LaunchAgain) => Ok(None),
                Err(e) => Err(as_fhir(e)),
            }
        })
    }
}

impl Launch {
    /// A FHIR client for this launch's server, carrying its tokens.
    pub fn fhir_client(
        &self,
        http: reqwest::Client,
        limits: Limits,
    ) -> Result<FhirClient, AuthError> {
        let base = url::Url::parse(&self.iss).map_err(|_| AuthError::LaunchAgain)?;
        let auth = Arc::new(LaunchAuthorizer {
            sessions: self.sessions.clone(),
            id: self.id.clone(),
        });
        Ok(FhirClient::new(http, base, limits).with_authorizer(auth))
    }

    /// The patient of this launch, as a reference.
    pub fn patient_ref(&self) -> Option<String> {
        self.context
            .patient
            .as_ref()
            .map(|p| format!("Patient/{p}"))
    }

    /// Refuse a write about anyone but the launch's patient (SMART: the
    /// launch context binds what the app does). Checked before sending.
    pub fn check_write(&self, resource: &Value) -> Result<(), AuthError> {
        // A coordinator's launch (no patient: the queue across patients)
        // may update existing Tasks, and nothing else.
        let Some(patient) = self.patient_ref() else {
            return if coordinator_may_write(resource) {
                Ok(())
            } else {
                Err(AuthError::WrongLaunch)
            };
        };
        if write_is_about(resource, &patient) {
            Ok(())
        } else {
            Err(AuthError::WrongLaunch)
        }
    }

    /// Record the patient chosen in a standalone launch without patient context.
    pub async fn choose_patient(&mut self, patient: &str) -> Result<(), AuthError> {
        self.context.patient = Some(patient.to_string());
        let context = serde_json::to_string(&self.context).expect("serialisable");
        self.sessions
            .store
            .update_context(&self.id, &context)
            .await
            .map_err(store_error)
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }
}

/// The shared resources a write may carry beside the patient's own: the
/// directory service a referral names, the organisation that provides it
/// and where, and the Questionnaire a screening answers (they are about no
/// patient, and hold nothing of one).
const DIRECTORY_TYPES: [&str; 4] = [
    "HealthcareService",
    "Organization",
    "Location",
    "Questionnaire",
];

/// Every patient reference a resource's subject fields hold
/// (`subject`, `patient`, `for`, `beneficiary`) must be `patient`, and at
/// least one must be present; a Bundle is checked entry by entry, where a
/// directory resource ([`DIRECTORY_TYPES`]) naming no patient may come
/// with at least one entry about `patient`.
pub fn write_is_about(resource: &Value, patient: &str) -> bool {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        let entries: Vec<&Value> = resource
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource"))
            .collect();
        let (directory, own): (Vec<&Value>, Vec<&Value>) = entries.iter().partition(|r| {
            r.get("resourceType")
                .and_then(Value::as_str)
                .is_some_and(|t| DIRECTORY_TYPES.contains(&t))
        });
        return !own.is_empty()
            && own.iter().all(|r| write_is_about(r, patient))
            && directory.iter().all(|r| subject_refs(r).is_empty());
    }
    let refs = subject_refs(resource);
    !refs.is_empty()
        && refs
            .iter()
            .all(|r| *r == patient || r.ends_with(&format!("/{patient}")))
}

/// The references a resource's subject fields hold.
fn subject_refs(resource: &Value) -> Vec<&str> {
    ["subject", "patient", "for", "beneficiary"]
        .iter()
        .filter_map(|k| resource.get(*k))
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .collect()
}

/// What a coordinator's launch (no patient in context) may write: an update
/// of an existing Task, nothing else (no new resource, no transaction).
pub fn coordinator_may_write(resource: &Value) -> bool {
    resource["resourceType"] == "Task" && resource["id"].is_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refresh_locks_no_one_holds_are_forgotten_and_held_ones_kept() {
        let mut locks: HashMap<String, Arc<tokio::sync::Mutex<()>>> = HashMap::new();
        for i in 0..100 {
            locks.entry(format!("done-{i}")).or_default();
        }
        let held = locks.entry("refreshing".into()).or_default().clone();
        prune_unused(&mut locks);
        assert_eq!(
            locks.keys().collect::<Vec<_>>(),
            ["refreshing"],
            "only the lock in use stays"
        );
        drop(held);
        prune_unused(&mut locks);
        assert!(locks.is_empty());
    }

    #[test]
    fn a_coordinator_updates_tasks_and_writes_nothing_else() {
        assert!(coordinator_may_write(
            &json!({"resourceType": "Task", "id": "t1", "status": "accepted"})
        ));
        assert!(
            !coordinator_may_write(&json!({"resourceType": "Task", "status": "requested"})),
            "a new Task"
        );
        assert!(!coordinator_may_write(
            &json!({"resourceType": "ServiceRequest", "id": "s1"})
        ));
        assert!(!coordinator_may_write(
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {"resourceType": "Task", "id": "t1"}}
            ]})
        ));
    }

    #[test]
    fn writes_must_be_about_the_launch_patient() {
        let p = "Patient/pas-p01";
        assert!(write_is_about(
            &json!({"resourceType": "Task", "for": {"reference": "Patient/pas-p01"}}),
            p
        ));
        assert!(write_is_about(
            &json!({"resourceType": "Observation", "subject": {"reference": "http://x/fhir/Patient/pas-p01"}}),
            p
        ));
        assert!(!write_is_about(
            &json!({"resourceType": "Task", "for": {"reference": "Patient/pas-p02"}}),
            p
        ));
        assert!(
            !write_is_about(&json!({"resourceType": "Task"}), p),
            "no subject at all"
        );
        assert!(!write_is_about(
            &json!({"resourceType": "Task", "for": {"reference": "Patient/pas-p01"}, "subject": {"reference": "Patient/pas-p02"}}),
            p
        ));
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/pas-p01"}}},
            {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/pas-p02"}}}
        ]});
        assert!(
            !write_is_about(&bundle, p),
            "one entry about another patient refuses the bundle"
        );
        let task =
            json!({"resource": {"resourceType": "Task", "for": {"reference": "Patient/pas-p01"}}});
        let service = json!({"resource": {"resourceType": "HealthcareService", "name": "Pantry"}});
        assert!(
            write_is_about(
                &json!({"resourceType": "Bundle", "entry": [task, service]}),
                p
            ),
            "a referral may write the service it goes to"
        );
        assert!(
            !write_is_about(&json!({"resourceType": "Bundle", "entry": [service]}), p),
            "directory resources alone are no write about the patient"
        );
        let named = json!({"resource": {"resourceType": "Organization", "patient": {"reference": "Patient/pas-p02"}}});
        assert!(
            !write_is_about(
                &json!({"resourceType": "Bundle", "entry": [task, named]}),
                p
            ),
            "a directory resource naming a patient is checked like the rest"
        );
    }
}
