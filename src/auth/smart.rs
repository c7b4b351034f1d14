//! The SMART App Launch 2.2.0 client: the EHR allow-list, discovery, the
//! authorization request (PKCE S256, `state`, `aud`, v1 or v2 scopes), the
//! token exchange for public, symmetric and asymmetric clients, refresh, the
//! `id_token` check, revocation and Backend Services.
//!
//! Security choices follow RFC 9700 (OAuth 2.0 Security BCP): `iss` is
//! checked against the allow-list before any request; discovery failures
//! fail closed; the token endpoint is called by a client that follows no
//! redirects; tokens never reach the browser. Each EHR has its own
//! redirect URI, `{public-url}/callback/{key}` ([`callback_key`]), and an
//! authorization response is taken only at the URI of the EHR its request
//! went to (mix-up defence, RFC 9700 §4.4.2); its `iss` (RFC 9207) is
//! checked against that EHR too, and an EHR's discovery may not claim
//! another's issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::keys::{SigningKey, random_token};
use super::scopes::{self, Syntax};

/// How Passerelle authenticates to an EHR's token endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// A public client: PKCE only.
    None,
    /// `client_secret_basic`, the secret read from an environment variable;
    /// `client_secret_post` instead when the EHR's discovery offers only that.
    ClientSecretBasic,
    /// `client_secret_post` (RFC 6749 §2.3.1): `client_id` and
    /// `client_secret` in the token request's form, for EHRs that take no
    /// HTTP Basic.
    ClientSecretPost,
    /// `private_key_jwt` with one of Passerelle's keys (RS384 or ES384).
    PrivateKeyJwt,
}

/// One EHR on the allow-list, as written in the EHR configuration file.
#[derive(Debug, Clone, Deserialize)]
pub struct EhrConfig {
    /// Shown in the standalone picker.
    pub name: String,
    /// The FHIR base URL, exactly as the EHR sends it as `iss`.
    pub iss: Url,
    pub client_id: String,
    pub client_auth: ClientAuthMethod,
    /// For `client_secret_basic` and `client_secret_post`: the environment
    /// variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// For `private_key_jwt`: `RS384` or `ES384` (default ES384).
    #[serde(default)]
    pub key_alg: Option<String>,
    /// Origins allowed to frame Passerelle for this EHR.
    #[serde(default)]
    pub frame_ancestors: Vec<String>,
    /// Extra scopes, or a full replacement with `scopes_replace`.
    #[serde(default)]
    pub scopes: Option<String>,
    /// Backend Services for the coordinators' queue: Passerelle reads the
    /// practice's Tasks with its own `system/` token (`private_key_jwt`).
    #[serde(default)]
    pub backend: Option<BackendConfig>,
    /// The authorization server's issuer, when it is not on the FHIR base's
    /// origin: discovery must then name exactly this `issuer` (mix-up
    /// defence, RFC 9700 §4.4). Without it, the discovered `issuer` must be
    /// on the origin of `iss`.
    #[serde(default)]
    pub issuer: Option<Url>,
    /// The EHR's key in its redirect URI, `{public-url}/callback/{id}`:
    /// 1 to 64 of the characters RFC 3986 §2.3 leaves unreserved. Without
    /// it the key is derived from `iss` ([`callback_key`]).
    #[serde(default)]
    pub id: Option<String>,
    /// Send the redirect URI `{public-url}/callback` shared by no other EHR,
    /// as Passerelle did before each EHR had its own: for an EHR registered
    /// with that URI. Refused at start-up unless this is the only EHR, since
    /// a shared URI cannot tell which EHR answered (RFC 9700 §4.4.2).
    #[serde(default)]
    pub legacy_callback: bool,
}

/// The longest `id` an EHR entry may give.
pub const MAX_CALLBACK_KEY: usize = 64;

/// The key of an EHR's redirect URI `{public-url}/callback/{key}`: its
/// configured `id`, checked to be 1 to [`MAX_CALLBACK_KEY`] unreserved
/// characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`), or else derived from
/// `iss`: its host, port (when written) and path, lower-cased, every run of
/// characters other than `a-z 0-9` made one `-`, with no `-` at either end.
/// So `https://ehr.example.org/fhir/r4` gives `ehr-example-org-fhir-r4`
/// and `http://127.0.0.1:9090/fhir/` gives `127-0-0-1-9090-fhir`. The
/// derivation is stable: the EHR's administrator registers the URI once.
pub fn callback_key(config: &EhrConfig) -> Result<String, String> {
    if let Some(id) = &config.id {
        let unreserved = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
        if id.is_empty() || id.len() > MAX_CALLBACK_KEY || !id.chars().all(unreserved) {
            return Err(format!(
                "{}: id must be 1 to {MAX_CALLBACK_KEY} of the characters A-Z a-z 0-9 - . _ ~",
                config.name
            ));
        }
        return Ok(id.clone());
    }
    let iss = &config.iss;
    let raw = format!(
        "{}-{}-{}",
        iss.host_str().unwrap_or_default(),
        iss.port().map(|p| p.to_string()).unwrap_or_default(),
        iss.path()
    )
    .to_lowercase();
    let key = raw
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if key.is_empty() {
        return Err(format!("{}: give the EHR an id", config.name));
    }
    Ok(key)
}

/// The redirect URI Passerelle sends for the EHR `config`:
/// `{public_url}/callback/{key}` ([`callback_key`]), or
/// `{public_url}/callback` with `legacy_callback`.
pub fn redirect_uri_for(public_url: &Url, config: &EhrConfig) -> Result<Url, String> {
    let mut base = public_url.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let path = if config.legacy_callback {
        "callback".to_string()
    } else {
        format!("callback/{}", callback_key(config)?)
    };
    base.join(&path)
        .map_err(|e| format!("{}: {e}", config.name))
}

/// How the queue's poller reads an EHR (SMART Backend Services).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BackendConfig {
    /// The registered backend client; the launch client's id by default.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The `system/` scopes asked for.
    #[serde(default = "BackendConfig::default_scope")]
    pub scope: String,
    /// Seconds between syncs: 900 (15 minutes, the SDOHCC bound) by default.
    #[serde(default = "BackendConfig::default_poll")]
    pub poll_seconds: u64,
    /// Where the Subscription carries the notification secret: `path` (in
    /// the endpoint URL, which every server can do; the default) or `header`
    /// (an `Authorization: Bearer` channel header, so the secret is in no
    /// URL the EHR's logs or proxies keep).
    #[serde(default)]
    pub notify_secret_in: NotifySecretIn,
    /// How the patterns view reads the population: `auto` (FHIR Bulk Data
    /// export where the EHR offers it, else paged searches; the default),
    /// `search` or `bulk` (export only).
    #[serde(default)]
    pub bulk_export: crate::domain::patterns::ReadMode,
    /// The Group whose patients are exported (`Group/[id]/$export`, which
    /// needs `system/Group.rs`); every patient (`Patient/$export`) when
    /// absent.
    #[serde(default)]
    pub bulk_group: Option<String>,
    /// The longest an export may take before the searches are used
    /// instead: 3600 s by default.
    #[serde(default = "BackendConfig::default_bulk_wait")]
    pub bulk_max_wait_seconds: u64,
    /// The longest pause between two polls of an export's status, whatever
    /// the server's `Retry-After` says: 10 s by default.
    #[serde(default = "BackendConfig::default_bulk_poll")]
    pub bulk_poll_max_seconds: u64,
}

/// See [`BackendConfig::notify_secret_in`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifySecretIn {
    #[default]
    Path,
    Header,
}

impl BackendConfig {
    pub const DEFAULT_SCOPE: &'static str = "system/Task.rus system/Patient.rs system/ServiceRequest.rus system/ClaimResponse.rs system/Organization.rs system/Condition.rus system/PractitionerRole.rs system/Practitioner.rs system/Coverage.rs system/Claim.rs system/Observation.rs system/QuestionnaireResponse.rs system/Encounter.rs system/Procedure.rs system/Group.rs system/Subscription.crs";

    fn default_scope() -> String {
        Self::DEFAULT_SCOPE.to_string()
    }

    fn default_poll() -> u64 {
        900
    }

    fn default_bulk_wait() -> u64 {
        3600
    }

    fn default_bulk_poll() -> u64 {
        10
    }

    /// The patterns view's read settings for this EHR; an error names a
    /// Group id that is not a FHIR id.
    pub fn bulk(&self) -> Result<crate::fhir::bulk::BulkSettings, String> {
        let group = match &self.bulk_group {
            Some(g) => Some(crate::fhir::bulk::GroupId::parse(g).map_err(|_| {
                format!("backend.bulk_group {g:?} is not a FHIR id (1 to 64 of A-Z a-z 0-9 - .)")
            })?),
            None => None,
        };
        Ok(crate::fhir::bulk::BulkSettings {
            mode: self.bulk_export,
            group,
            max_wait: std::time::Duration::from_secs(self.bulk_max_wait_seconds),
            max_poll_interval: std::time::Duration::from_secs(self.bulk_poll_max_seconds.max(1)),
        })
    }
}

/// An allow-listed EHR, checked and ready.
#[derive(Clone)]
pub struct Ehr {
    pub config: EhrConfig,
    secret: Option<SecretString>,
    /// Its own redirect URI ([`redirect_uri_for`]), sent in the
    /// authorization and token requests and the only one its answers are
    /// taken at.
    redirect_uri: Url,
    /// The `{key}` of that URI; `None` with `legacy_callback`.
    callback_key: Option<String>,
}

impl Ehr {
    /// See [`redirect_uri_for`].
    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Whether an authorization response that arrived at
    /// `{public-url}/callback/{arrived}` (`None`: at `{public-url}/callback`)
    /// came back to this EHR's redirect URI, the only place its answers are
    /// taken (RFC 9700 §4.4.2).
    pub fn answers_at(&self, arrived: Option<&str>) -> bool {
        self.callback_key.as_deref() == arrived
    }
}

impl std::fmt::Debug for Ehr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ehr")
            .field("name", &self.config.name)
            .field("iss", &self.config.iss.as_str())
            .field("redirect_uri", &self.redirect_uri.as_str())
            .finish()
    }
}

/// A base URL compared without a trailing slash, query or fragment.
pub fn same_base(a: &Url, b: &Url) -> bool {
    let norm = |u: &Url| {
        let mut u = u.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.as_str().trim_end_matches('/').to_string()
    };
    norm(a) == norm(b)
}

/// Why a launch could not go on, in words for the person launching.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "This EHR ({0}) is not on Passerelle's list of EHRs, so nothing was requested from it."
    )]
    UnknownIss(String),
    #[error(
        "The EHR's SMART configuration could not be read ({0}). Passerelle does not continue without authorization."
    )]
    Discovery(String),
    #[error("The EHR does not offer what Passerelle needs: {0}")]
    Unsupported(String),
    #[error("The EHR refused the sign-in: {0}")]
    Refused(String),
    #[error(
        "This sign-in was not started in this browser, has expired, or was already used. Launch again from the EHR."
    )]
    BadState,
    #[error("The EHR's identity token could not be verified ({0}); the sign-in was refused.")]
    IdToken(String),
    /// RFC 9207 / RFC 9700 §4.4: the authorization response does not come
    /// from the authorization server the request was sent to.
    #[error(
        "The answer to this sign-in {0}, so it may have been relayed from another EHR; the sign-in was refused. Launch again from the EHR."
    )]
    ResponseIssuer(&'static str),
    /// RFC 9700 §4.4.2: the authorization response came back to another
    /// redirect URI than the one its request named (another EHR's, or the
    /// shared one where each EHR has its own).
    #[error(
        "The answer to this sign-in came back to another EHR's address than the one it was sent with, so it may have been relayed from another EHR; the sign-in was refused and nothing was sent. Launch again from the EHR."
    )]
    WrongRedirect,
    #[error("Your authorization has ended. Launch Passerelle again from the EHR.")]
    LaunchAgain,
    #[error("This page belongs to another launch or browser. Open the chart again from the EHR.")]
    WrongLaunch,
    #[error("Passerelle is not configured correctly: {0}")]
    Config(String),
    /// The bound on sign-ins in progress is reached (a flood of launches).
    #[error("Too many sign-ins are in progress right now; nothing was sent to the EHR.")]
    Busy,
    /// Another instance on the same store is refreshing this launch and has
    /// not finished within its claim: nothing was sent.
    #[error(
        "Passerelle is still renewing this chart's authorization; nothing was sent. Try again in a moment."
    )]
    RefreshPending,
}

/// The parts of `.well-known/smart-configuration` Passerelle uses.
#[derive(Debug, Clone, Deserialize)]
pub struct SmartConfiguration {
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<Url>,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// RFC 8414 §2: how clients may authenticate at the token endpoint
    /// (`client_secret_basic` when absent).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207 §3: the EHR puts `iss` in every authorization response, so
    /// a response without one is refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl SmartConfiguration {
    pub fn syntax(&self) -> Syntax {
        if self.capabilities.iter().any(|c| c == "permission-v2") {
            Syntax::V2
        } else {
            Syntax::V1
        }
    }

    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    /// How a client with a secret, registered as `configured`, sends it:
    /// `client_secret_post` when asked for, or when the EHR advertises it
    /// and not `client_secret_basic` (RFC 8414 §2: an empty list means
    /// `client_secret_basic`); HTTP Basic otherwise.
    pub fn secret_method(&self, configured: &ClientAuthMethod) -> SecretMethod {
        let offered = |m: &str| {
            self.token_endpoint_auth_methods_supported
                .iter()
                .any(|s| s == m)
        };
        if *configured == ClientAuthMethod::ClientSecretPost
            || (offered("client_secret_post") && !offered("client_secret_basic"))
        {
            SecretMethod::Post
        } else {
            SecretMethod::Basic
        }
    }
}

/// Where a client secret goes in a token or revocation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretMethod {
    /// `Authorization: Basic`, id and secret form-urlencoded first
    /// (RFC 6749 §2.3.1), as oauth2's `AuthType::BasicAuth` does.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// The launch context fields of a SMART token response.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct SmartFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(default)]
    pub need_patient_banner: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smart_style_url: Option<String>,
    #[serde(default, rename = "fhirContext", skip_serializing_if = "Vec::is_empty")]
    pub fhir_context: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl ExtraTokenFields for SmartFields {}

type SmartTokenResponse = StandardTokenResponse<SmartFields, BasicTokenType>;
type TokenClient = oauth2::Client<
    BasicErrorResponse,
    SmartTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Tokens of a launch; never logged (Debug shows nothing of them).
#[derive(Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub id_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens(refresh: {})", self.refresh.is_some())
    }
}

/// What a token response gave.
#[derive(Debug, Clone)]
pub struct Granted {
    pub tokens: Tokens,
    pub expires_in: Duration,
    pub scope: String,
    pub context: SmartFields,
}

/// The SMART client: the allow-list, Passerelle's keys, discovery cache.
pub struct SmartClient {
    ehrs: Vec<Ehr>,
    keys: Vec<SigningKey>,
    http: reqwest::Client,
    discovered: Mutex<HashMap<String, Arc<SmartConfiguration>>>,
    jwks: Mutex<HashMap<String, Arc<JwkSet>>>,
    /// When each JWKS URI was last fetched again for a key it lacked: at
    /// most once per [`JWKS_REFETCH_INTERVAL`], so forged tokens naming
    /// unknown keys cannot make Passerelle hammer the EHR.
    jwks_refetched: Mutex<HashMap<String, Instant>>,
}

/// The shortest time between two forced fetches of one JWKS (key rotation).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// The signature algorithms accepted on an `id_token` (asymmetric only:
/// `none` and HMAC are refused, so a public key can never serve as a secret).
const ID_TOKEN_ALGS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::ES256,
    Algorithm::ES384,
];

impl SmartClient {
    /// Check the allow-list: secrets present, key algorithms available,
    /// each EHR's redirect URI under `public_url` its own (unique keys;
    /// `legacy_callback` only for a lone EHR).
    pub fn new(
        configs: Vec<EhrConfig>,
        keys: Vec<SigningKey>,
        public_url: Url,
    ) -> Result<Self, AuthError> {
        let mut ehrs: Vec<Ehr> = Vec::new();
        let lone = configs.len() == 1;
        for config in configs {
            if config.legacy_callback && !lone {
                return Err(AuthError::Config(format!(
                    "{}: legacy_callback shares {{public-url}}/callback, which only a lone EHR may use; register {{public-url}}/callback/{} at this EHR and remove legacy_callback",
                    config.name,
                    callback_key(&config).unwrap_or_else(|_| "<id>".into())
                )));
            }
            let redirect_uri = redirect_uri_for(&public_url, &config).map_err(AuthError::Config)?;
            if let Some(other) = ehrs.iter().find(|e| e.redirect_uri == redirect_uri) {
                return Err(AuthError::Config(format!(
                    "{} and {} have the same redirect URI {redirect_uri}; give one of them another id",
                    other.config.name, config.name
                )));
            }
            let secret = match config.client_auth {
                ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost => {
                    let var = config.client_secret_env.as_deref().ok_or_else(|| {
                        AuthError::Config(format!(
                            "{}: a client secret needs client_secret_env",
                            config.name
                        ))
                    })?;
                    let value = std::env::var(var).map_err(|_| {
                        AuthError::Config(format!(
                            "{}: the environment variable {var} is not set",
                            config.name
                        ))
                    })?;
                    Some(SecretString::from(value))
                }
                _ => None,
            };
            if config.client_auth == ClientAuthMethod::PrivateKeyJwt {
                let alg = config.key_alg.as_deref().unwrap_or("ES384");
                if !keys.iter().any(|k| format!("{:?}", k.alg()) == alg) {
                    return Err(AuthError::Config(format!(
                        "{}: no {alg} key to sign client assertions",
                        config.name
                    )));
                }
            }
            let callback_key = if config.legacy_callback {
                None
            } else {
                Some(callback_key(&config).map_err(AuthError::Config)?)
            };
            if let Some(backend) = &config.backend {
                backend
                    .bulk()
                    .map_err(|e| AuthError::Config(format!("{}: {e}", config.name)))?;
            }
            ehrs.push(Ehr {
                config,
                secret,
                redirect_uri,
                callback_key,
            });
        }
        // Redirects are never followed: a token endpoint that redirects is refused.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(crate::fhir::POOL_IDLE_TIMEOUT)
            .user_agent(concat!("passerelle/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend initialises");
        Ok(SmartClient {
            ehrs,
            keys,
            http,
            discovered: Mutex::default(),
            jwks: Mutex::default(),
            jwks_refetched: Mutex::default(),
        })
    }

    pub fn ehrs(&self) -> &[Ehr] {
        &self.ehrs
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The allow-listed EHR for `iss`; checked before anything is sent.
    pub fn ehr(&self, iss: &str) -> Result<&Ehr, AuthError> {
        let url =
            Url::parse(iss).map_err(|_| AuthError::UnknownIss(iss.chars().take(200).collect()))?;
        self.ehrs
            .iter()
            .find(|e| same_base(&e.config.iss, &url))
            .ok_or_else(|| AuthError::UnknownIss(iss.chars().take(200).collect()))
    }

    /// `{iss}/.well-known/smart-configuration`, fetched once per `iss` and
    /// pinned. Any failure stops the launch (fail closed).
    pub async fn discover(&self, ehr: &Ehr) -> Result<Arc<SmartConfiguration>, AuthError> {
        let key = ehr.config.iss.as_str().trim_end_matches('/').to_string();
        if let Some(c) = self.discovered.lock().expect("lock").get(&key) {
            return Ok(c.clone());
        }
        let url = Url::parse(&format!("{key}/.well-known/smart-configuration"))
            .map_err(|e| AuthError::Discovery(e.to_string()))?;
        let response = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|_| AuthError::Discovery("the EHR could not be reached".into()))?;
        if !response.status().is_success() {
            return Err(AuthError::Discovery(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut raw: Value = response
            .json()
            .await
            .map_err(|_| AuthError::Discovery("not JSON".into()))?;
        // Relative URLs are resolved against the discovery document's URL.
        for field in [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "revocation_endpoint",
        ] {
            if let Some(s) = raw.get(field).and_then(Value::as_str)
                && let Ok(abs) = url.join(s)
            {
                raw[field] = Value::String(abs.to_string());
            }
        }
        let config: SmartConfiguration = serde_json::from_value(raw)
            .map_err(|e| AuthError::Discovery(format!("missing or invalid field: {e}")))?;
        if let Some(issuer) = &config.issuer {
            self.check_discovered_issuer(ehr, issuer)?;
        }
        if !config
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
        {
            return Err(AuthError::Unsupported(
                "PKCE with S256 is not advertised".into(),
            ));
        }
        let config = Arc::new(config);
        self.discovered
            .lock()
            .expect("lock")
            .insert(key, config.clone());
        Ok(config)
    }

    fn token_client(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
    ) -> Result<TokenClient, AuthError> {
        let token_url = TokenUrl::new(config.token_endpoint.to_string())
            .map_err(|e| AuthError::Discovery(e.to_string()))?;
        let mut client: TokenClient =
            oauth2::Client::new(ClientId::new(ehr.config.client_id.clone()))
                .set_token_uri(token_url)
                .set_redirect_uri(RedirectUrl::from_url(ehr.redirect_uri.clone()));
        client = match &ehr.secret {
            Some(secret) => {
                let auth_type = match config.secret_method(&ehr.config.client_auth) {
                    SecretMethod::Basic => AuthType::BasicAuth,
                    SecretMethod::Post => AuthType::RequestBody,
                };
                client
                    .set_client_secret(ClientSecret::new(secret.expose_secret().to_string()))
                    .set_auth_type(auth_type)
            }
            None => client.set_auth_type(AuthType::RequestBody),
        };
        Ok(client)
    }

    /// A `private_key_jwt` client assertion (SMART §Asymmetric): `iss` =
    /// `sub` = client id, `aud` = the token endpoint, 5 minutes at most, a
    /// unique `jti`.
    pub fn client_assertion(
        &self,
        client_id: &str,
        token_endpoint: &Url,
        alg: &str,
    ) -> Result<String, AuthError> {
        let key = self
            .keys
            .iter()
            .find(|k| format!("{:?}", k.alg()) == alg)
            .ok_or_else(|| AuthError::Config(format!("no {alg} key")))?;
        let now = crate::store::now();
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": token_endpoint.as_str(),
            "exp": now + 300, "iat": now, "jti": random_token(24),
        });
        key.sign(&claims)
            .map_err(|e| AuthError::Config(e.to_string()))
    }

    fn assertion_params(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
    ) -> Result<Vec<(String, String)>, AuthError> {
        if ehr.config.client_auth != ClientAuthMethod::PrivateKeyJwt {
            return Ok(vec![]);
        }
        let alg = ehr.config.key_alg.as_deref().unwrap_or("ES384");
        Ok(vec![
            (
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            (
                "client_assertion".into(),
                self.client_assertion(&ehr.config.client_id, &config.token_endpoint, alg)?,
            ),
        ])
    }

    /// Build the authorization request. Returns the URL (or, when the EHR
    /// advertises `authorize-post`, the endpoint and form fields to POST),
    /// the `state`, and the secrets (PKCE verifier, `nonce`) to keep for the
    /// callback.
    pub fn authorize(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        launch: Option<&str>,
    ) -> Result<AuthorizeRequest, AuthError> {
        self.authorize_for(ehr, config, launch, false)
    }

    /// [`Self::authorize`]; a `coordinator` (standalone, working the queue
    /// across patients) asks for no patient in context (`launch/patient`).
    pub fn authorize_for(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        launch: Option<&str>,
        coordinator: bool,
    ) -> Result<AuthorizeRequest, AuthError> {
        let state = random_token(16); // 128 bits
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let scope = match &ehr.config.scopes {
            Some(s) => s.clone(),
            None => scopes::requested(config.syntax(), launch.is_some()),
        };
        let scope = if coordinator {
            scope
                .split_whitespace()
                .filter(|s| *s != "launch/patient")
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            scope
        };
        let auth_url = AuthUrl::new(config.authorization_endpoint.to_string())
            .map_err(|e| AuthError::Discovery(e.to_string()))?;
        let client = oauth2::basic::BasicClient::new(ClientId::new(ehr.config.client_id.clone()))
            .set_auth_uri(auth_url)
            .set_redirect_uri(RedirectUrl::from_url(ehr.redirect_uri.clone()));
        let st = state.clone();
        let mut request = client
            .authorize_url(move || CsrfToken::new(st))
            .add_scopes(scope.split_whitespace().map(|s| Scope::new(s.to_string())))
            .set_pkce_challenge(challenge)
            .add_extra_param(
                "aud",
                ehr.config.iss.as_str().trim_end_matches('/').to_string(),
            );
        if let Some(l) = launch {
            request = request.add_extra_param("launch", l.to_string());
        }
        let nonce = asks_for_id_token(&scope).then(|| random_token(16));
        if let Some(n) = &nonce {
            request = request.add_extra_param("nonce", n.clone());
        }
        let (url, _) = request.url();
        let post = config.has("authorize-post").then(|| {
            let mut action = url.clone();
            action.set_query(None);
            let fields = url
                .query_pairs()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (action, fields)
        });
        Ok(AuthorizeRequest {
            url,
            post,
            state,
            verifier: verifier.secret().to_string(),
            scope,
            nonce,
        })
    }

    fn granted(response: SmartTokenResponse, asked: &str) -> Granted {
        let scope = response
            .scopes()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|| asked.to_string());
        Granted {
            tokens: Tokens {
                access: response.access_token().secret().to_string(),
                refresh: response.refresh_token().map(|r| r.secret().to_string()),
                id_token: response.extra_fields().id_token.clone(),
            },
            expires_in: response.expires_in().unwrap_or(Duration::from_secs(300)),
            scope,
            context: response.extra_fields().clone(),
        }
    }

    /// Exchange the code (with the PKCE verifier) for tokens.
    pub async fn exchange(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        code: &str,
        verifier: &str,
        asked: &str,
    ) -> Result<Granted, AuthError> {
        let client = self.token_client(ehr, config)?;
        let mut request = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()));
        for (k, v) in self.assertion_params(ehr, config)? {
            request = request.add_extra_param(k, v);
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        Ok(Self::granted(response, asked))
    }

    /// Use a refresh token; the server may rotate it (the new one replaces the old).
    pub async fn refresh(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        refresh: &str,
        asked: &str,
    ) -> Result<Granted, AuthError> {
        let client = self.token_client(ehr, config)?;
        let token = RefreshToken::new(refresh.to_string());
        let mut request = client.exchange_refresh_token(&token);
        for (k, v) in self.assertion_params(ehr, config)? {
            request = request.add_extra_param(k, v);
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let mut granted = Self::granted(response, asked);
        if granted.tokens.refresh.is_none() {
            // No rotation: the old refresh token stays valid.
            granted.tokens.refresh = Some(refresh.to_string());
        }
        Ok(granted)
    }

    /// Revoke a refresh token where the EHR offers revocation (RFC 7009).
    pub async fn revoke(&self, ehr: &Ehr, config: &SmartConfiguration, refresh: &str) {
        let Some(endpoint) = &config.revocation_endpoint else {
            return;
        };
        let mut form = vec![
            ("token".to_string(), refresh.to_string()),
            ("token_type_hint".to_string(), "refresh_token".to_string()),
            ("client_id".to_string(), ehr.config.client_id.clone()),
        ];
        if let Ok(extra) = self.assertion_params(ehr, config) {
            form.extend(extra);
        }
        let basic = match &ehr.secret {
            Some(secret) => match config.secret_method(&ehr.config.client_auth) {
                SecretMethod::Post => {
                    form.push((
                        "client_secret".to_string(),
                        secret.expose_secret().to_string(),
                    ));
                    None
                }
                // RFC 6749 §2.3.1: each part form-urlencoded, then Basic.
                SecretMethod::Basic => Some((
                    form_urlencode(&ehr.config.client_id),
                    form_urlencode(secret.expose_secret()),
                )),
            },
            None => None,
        };
        let mut request = self.http.post(endpoint.clone()).form(&form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        if let Err(e) = request.send().await {
            tracing::warn!(
                error_kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                },
                "token revocation failed"
            );
        }
    }

    /// Verify an `id_token` (OpenID Connect Core §3.1.3.7) against the
    /// issuer's JWKS: see [`verify_id_token_with`] for what is checked.
    /// `nonce` is the one sent in the authorization request (`None` when
    /// none was sent). A key the cached JWKS lacks (an unknown `kid`, or no
    /// key fitting a `kid`-less token) makes Passerelle fetch the JWKS once
    /// more, for a key rotation (OpenID Connect Core §10.1.1), at most once
    /// per [`JWKS_REFETCH_INTERVAL`] per JWKS URI. Returns the claims.
    pub async fn verify_id_token(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        id_token: &str,
        nonce: Option<&str>,
    ) -> Result<Value, AuthError> {
        // Refused before any fetch: a flood of `alg: none` costs nothing.
        let header = id_token_header(id_token)?;
        let jwks_uri = config
            .jwks_uri
            .clone()
            .ok_or_else(|| AuthError::IdToken("the EHR publishes no jwks_uri".into()))?;
        let issuer = config
            .issuer
            .clone()
            .ok_or_else(|| AuthError::IdToken("the EHR names no issuer".into()))?;
        let expected = IdTokenExpected {
            issuer: &issuer,
            client_id: &ehr.config.client_id,
            nonce,
        };
        let mut set = self.jwks_for(&jwks_uri, false).await?;
        if select_key(&set, &header) == Err(KeyMiss::Unknown) {
            set = self.jwks_for(&jwks_uri, true).await?;
        }
        verify_id_token_with(&set, id_token, &expected)
    }

    /// The JWKS at `uri`: the cached one, or fetched when there is none or
    /// when `refetch` asks for it and the last forced fetch of `uri` is
    /// older than [`JWKS_REFETCH_INTERVAL`] (else the cached one again).
    async fn jwks_for(&self, uri: &Url, refetch: bool) -> Result<Arc<JwkSet>, AuthError> {
        let cached = self.jwks.lock().expect("lock").get(uri.as_str()).cloned();
        if let Some(set) = cached
            && (!refetch || !self.may_refetch_jwks(uri))
        {
            return Ok(set);
        }
        let set: JwkSet = self
            .http
            .get(uri.clone())
            .send()
            .await
            .map_err(|_| AuthError::IdToken("the EHR's keys could not be fetched".into()))?
            .json()
            .await
            .map_err(|_| AuthError::IdToken("the EHR's keys are not a JWKS".into()))?;
        let set = Arc::new(set);
        self.jwks
            .lock()
            .expect("lock")
            .insert(uri.to_string(), set.clone());
        Ok(set)
    }

    /// Whether `uri` may be fetched again now, counting this fetch when it
    /// may: the check and the record are one step under the lock, so
    /// concurrent forged tokens get one fetch between them.
    fn may_refetch_jwks(&self, uri: &Url) -> bool {
        let mut last = self.jwks_refetched.lock().expect("lock");
        let now = Instant::now();
        if last
            .get(uri.as_str())
            .is_some_and(|t| now.duration_since(*t) < JWKS_REFETCH_INTERVAL)
        {
            tracing::info!("a JWKS refetch was skipped: one was made less than a minute ago");
            return false;
        }
        last.insert(uri.to_string(), now);
        true
    }

    /// RFC 9700 §4.4.2 (mix-up defence): the `issuer` an EHR's discovery
    /// names must be its own, since it is what the authorization response's
    /// `iss` (RFC 9207) and the `id_token`'s `iss` are compared with. An
    /// EHR configured with `issuer` must name exactly that; otherwise the
    /// issuer must be on the origin of the EHR's FHIR base (SMART servers
    /// often name the server's root, not the FHIR base). No EHR may name
    /// the FHIR base or configured issuer of another EHR of the allow-list.
    fn check_discovered_issuer(&self, ehr: &Ehr, issuer: &str) -> Result<(), AuthError> {
        let claimed = Url::parse(issuer)
            .map_err(|_| AuthError::Discovery("the issuer it names is not a URL".into()))?;
        let own = match &ehr.config.issuer {
            Some(configured) => same_base(configured, &claimed),
            None => claimed.origin() == ehr.config.iss.origin(),
        };
        if !own {
            return Err(AuthError::Discovery(format!(
                "it names the issuer {}, which is not this EHR's; if its authorization server has another address, set issuer in the EHR's entry",
                claimed.as_str().chars().take(200).collect::<String>()
            )));
        }
        let anothers = self
            .ehrs
            .iter()
            .filter(|o| !same_base(&o.config.iss, &ehr.config.iss))
            .any(|o| {
                same_base(&o.config.iss, &claimed)
                    || o.config
                        .issuer
                        .as_ref()
                        .is_some_and(|i| same_base(i, &claimed))
            });
        if anothers {
            return Err(AuthError::Discovery(
                "it names the issuer of another EHR on Passerelle's list".into(),
            ));
        }
        Ok(())
    }

    /// RFC 9207 §2.4: the `iss` of an authorization response must name the
    /// authorization server the request was sent to (the pending state's
    /// EHR: its discovered or configured issuer, or its FHIR base, compared
    /// without a trailing slash), or a hostile EHR on the allow-list could
    /// relay the user to an honest one and have its code sent to the wrong
    /// token endpoint (RFC 9700 §4.4). A response without `iss` is refused
    /// when the EHR announces `authorization_response_iss_parameter_supported`.
    pub fn check_response_issuer(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        iss: Option<&str>,
    ) -> Result<(), AuthError> {
        let Some(iss) = iss else {
            return if config.authorization_response_iss_parameter_supported {
                Err(AuthError::ResponseIssuer(
                    "does not name the authorization server that sent it (iss), although the EHR announces that it always does",
                ))
            } else {
                Ok(())
            };
        };
        let discovered = config.issuer.as_deref().and_then(|i| Url::parse(i).ok());
        let expected = [
            Some(&ehr.config.iss),
            ehr.config.issuer.as_ref(),
            discovered.as_ref(),
        ];
        let matches = Url::parse(iss)
            .ok()
            .is_some_and(|given| expected.iter().flatten().any(|e| same_base(e, &given)));
        if matches {
            Ok(())
        } else {
            Err(AuthError::ResponseIssuer(
                "comes from another authorization server (iss) than the one it was sent to",
            ))
        }
    }
}

/// What an `id_token` must say besides being well signed.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenExpected<'a> {
    /// The EHR's `issuer` (compared with and without a trailing slash).
    pub issuer: &'a str,
    /// Passerelle's client id at this EHR.
    pub client_id: &'a str,
    /// The `nonce` of the authorization request; `None` when none was sent.
    pub nonce: Option<&'a str>,
}

/// Why no key of a JWKS is the one to verify a token with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyMiss {
    /// No key with the token's `kid`, or (without `kid`) none that fits:
    /// the EHR may have rotated its keys, so its JWKS is worth fetching again.
    Unknown,
    /// Without `kid`, several keys fit: OpenID Connect Core §10.1 requires a
    /// `kid` then, and trying each would be guessing.
    Ambiguous,
    /// The key the `kid` names is not for this algorithm or not for signing.
    Unfit,
}

impl KeyMiss {
    fn refusal(self, header: &Header) -> AuthError {
        AuthError::IdToken(match (self, header.kid.is_some()) {
            (KeyMiss::Unknown, true) => "signed with an unknown key".into(),
            (KeyMiss::Unknown, false) => {
                format!("no kid, and no key of the EHR's JWKS fits {:?}", header.alg)
            }
            (KeyMiss::Ambiguous, _) => format!(
                "no kid, and several keys of the EHR's JWKS fit {:?}",
                header.alg
            ),
            (KeyMiss::Unfit, _) => {
                format!("the key it names is not a {:?} signing key", header.alg)
            }
        })
    }
}

/// The header of an `id_token`, refused unless its algorithm is one of
/// [`ID_TOKEN_ALGS`] (RFC 8725 §3.1: the verifier chooses the algorithms;
/// `none` is not even an algorithm jsonwebtoken can name).
fn id_token_header(id_token: &str) -> Result<Header, AuthError> {
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| {
        AuthError::IdToken(match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => {
                "its header names no accepted algorithm (RS256, RS384, ES256, ES384)".into()
            }
            _ => "not a JWT".into(),
        })
    })?;
    if !ID_TOKEN_ALGS.contains(&header.alg) {
        return Err(AuthError::IdToken(format!(
            "unexpected algorithm {:?}",
            header.alg
        )));
    }
    Ok(header)
}

/// Whether `jwk` may verify a signature made with `alg` (RFC 7517 §4,
/// RFC 7518 §3): an RSA key for RS*, an EC key on the matching curve for
/// ES*; its `use`, when present, is `sig`; its `alg`, when present, is `alg`.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let kind_fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::RS384) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        _ => false,
    };
    let use_fits = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| *u == PublicKeyUse::Signature);
    let alg_fits = jwk
        .common
        .key_algorithm
        .as_ref()
        .is_none_or(|a| *a == KeyAlgorithm::from(alg));
    kind_fits && use_fits && alg_fits
}

/// The key to verify a token with: the one its `kid` names, or, without a
/// `kid`, the only key that fits its algorithm (OpenID Connect Core §10.1
/// requires a `kid` only when several keys could be meant).
fn select_key<'a>(set: &'a JwkSet, header: &Header) -> Result<&'a Jwk, KeyMiss> {
    match header.kid.as_deref() {
        Some(kid) => {
            let jwk = set.find(kid).ok_or(KeyMiss::Unknown)?;
            if key_fits(jwk, header.alg) {
                Ok(jwk)
            } else {
                Err(KeyMiss::Unfit)
            }
        }
        None => {
            let mut fitting = set.keys.iter().filter(|k| key_fits(k, header.alg));
            match (fitting.next(), fitting.next()) {
                (Some(jwk), None) => Ok(jwk),
                (None, _) => Err(KeyMiss::Unknown),
                (Some(_), Some(_)) => Err(KeyMiss::Ambiguous),
            }
        }
    }
}

/// Verify `id_token` against the keys of `set` (OpenID Connect Core
/// §3.1.3.7): the signature, with an algorithm of [`ID_TOKEN_ALGS`] and the
/// key its `kid` names or the only one that fits; `iss`; `aud` containing
/// our client id; `azp`, when present or when `aud` has several values,
/// equal to our client id (§2, §3.1.3.7 items 4-5); `exp` and `nbf` (60 s
/// of leeway); `sub` present; and `nonce` equal to the one sent (§3.1.2.1,
/// §3.1.3.7 item 11: missing or different is refused). Returns the claims.
pub fn verify_id_token_with(
    set: &JwkSet,
    id_token: &str,
    expected: &IdTokenExpected<'_>,
) -> Result<Value, AuthError> {
    let header = id_token_header(id_token)?;
    let jwk = select_key(set, &header).map_err(|miss| miss.refusal(&header))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::IdToken("unusable key".into()))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expected.issuer.trim_end_matches('/'), expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .map_err(|e| AuthError::IdToken(format!("{:?}", e.kind()).chars().take(80).collect()))?
        .claims;
    check_azp(&claims, expected.client_id)?;
    check_nonce(&claims, expected.nonce)?;
    Ok(claims)
}

/// OpenID Connect Core §3.1.3.7 items 4-5: an `id_token` for several
/// audiences must name the party it was issued to (`azp`), and an `azp`
/// must be our client id.
fn check_azp(claims: &Value, client_id: &str) -> Result<(), AuthError> {
    let several_audiences = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        None if !several_audiences => Ok(()),
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        None => Err(AuthError::IdToken("several audiences and no azp".into())),
        Some(_) => Err(AuthError::IdToken("issued to another party (azp)".into())),
    }
}

/// OpenID Connect Core §3.1.3.7 item 11: when a `nonce` was sent, the
/// token must carry the same one (a replayed or injected token does not).
fn check_nonce(claims: &Value, sent: Option<&str>) -> Result<(), AuthError> {
    let Some(sent) = sent else {
        return Ok(());
    };
    match claims.get("nonce").and_then(Value::as_str) {
        Some(got) if super::same_secret(sent, got) => Ok(()),
        Some(_) => Err(AuthError::IdToken("its nonce is not this sign-in's".into())),
        None => Err(AuthError::IdToken("it carries no nonce".into())),
    }
}

fn token_error<RE: std::error::Error>(e: RequestTokenError<RE, BasicErrorResponse>) -> AuthError {
    match e {
        RequestTokenError::ServerResponse(r) => AuthError::Refused(match r.error_description() {
            Some(d) => format!(
                "{} ({})",
                r.error(),
                d.chars().take(200).collect::<String>()
            ),
            None => r.error().to_string(),
        }),
        RequestTokenError::Request(_) => {
            AuthError::Refused("the EHR's token endpoint could not be reached".into())
        }
        RequestTokenError::Parse(_, _) => {
            AuthError::Refused("the EHR's token response is not valid".into())
        }
        RequestTokenError::Other(o) => AuthError::Refused(o.chars().take(200).collect()),
    }
}

/// One `application/x-www-form-urlencoded` component (RFC 6749 §2.3.1
/// applies it to the client id and secret before HTTP Basic).
fn form_urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A prepared authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub url: Url,
    /// When the EHR advertises `authorize-post`: where to POST, and the fields.
    pub post: Option<(Url, Vec<(String, String)>)>,
    pub state: String,
    pub verifier: String,
    pub scope: String,
    /// The `nonce` sent (when the scope has `openid`), kept with the state
    /// for the `id_token` check.
    pub nonce: Option<String>,
}

/// OpenID Connect Core §3.1.2.1: a request with the `openid` scope gets an
/// `id_token`, which is bound to the request by a random `nonce` of 128 bits.
fn asks_for_id_token(scope: &str) -> bool {
    scope.split_whitespace().any(|s| s == "openid")
}

/// Backend Services (SMART §Backend Services): a new token per cycle with
/// `client_credentials` and `private_key_jwt`, `system/` scopes, no refresh.
pub struct BackendClient {
    pub token_endpoint: Url,
    pub client_id: String,
    pub key: SigningKey,
    pub scope: String,
    http: reqwest::Client,
}

impl BackendClient {
    pub fn new(token_endpoint: Url, client_id: String, key: SigningKey, scope: String) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .pool_idle_timeout(crate::fhir::POOL_IDLE_TIMEOUT)
            .build()
            .expect("TLS backend initialises");
        BackendClient {
            token_endpoint,
            client_id,
            key,
            scope,
            http,
        }
    }

    /// A fresh access token and its lifetime.
    pub async fn token(&self) -> Result<(String, Duration), AuthError> {
        let now = crate::store::now();
        let assertion = self
            .key
            .sign(&serde_json::json!({
                "iss": self.client_id, "sub": self.client_id, "aud": self.token_endpoint.as_str(),
                "exp": now + 300, "iat": now, "jti": random_token(24),
            }))
            .map_err(|e| AuthError::Config(e.to_string()))?;
        let response = self
            .http
            .post(self.token_endpoint.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", self.scope.as_str()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|_| AuthError::Refused("the token endpoint could not be reached".into()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|_| AuthError::Refused("the token response is not JSON".into()))?;
        if !status.is_success() {
            return Err(AuthError::Refused(
                body["error"].as_str().unwrap_or("refused").to_string(),
            ));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| AuthError::Refused("no access token".into()))?;
        Ok((
            token.to_string(),
            Duration::from_secs(body["expires_in"].as_u64().unwrap_or(300)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(configs: &str) -> Result<SmartClient, AuthError> {
        let configs: Vec<EhrConfig> = serde_json::from_str(configs).unwrap();
        SmartClient::new(
            configs,
            vec![SigningKey::generate_es384("k1").unwrap()],
            Url::parse("http://app/").unwrap(),
        )
    }

    #[test]
    fn iss_is_matched_against_the_allow_list_only() {
        let c = client(r#"[{"name":"A","iss":"https://ehr.example.org/fhir","client_id":"p","client_auth":"none"}]"#).unwrap();
        assert!(c.ehr("https://ehr.example.org/fhir/").is_ok());
        assert!(c.ehr("https://ehr.example.org/fhir").is_ok());
        assert_eq!(
            c.ehr("https://evil.example.org/fhir").unwrap_err(),
            AuthError::UnknownIss("https://evil.example.org/fhir".into())
        );
        assert!(c.ehr("https://ehr.example.org/fhir-other").is_err());
        assert!(c.ehr("not a url").is_err());
    }

    #[test]
    fn a_secret_goes_in_the_form_when_asked_or_when_the_ehr_offers_only_that() {
        let config = |methods: serde_json::Value| -> SmartConfiguration {
            serde_json::from_value(serde_json::json!({
                "authorization_endpoint": "https://e/authorize",
                "token_endpoint": "https://e/token",
                "token_endpoint_auth_methods_supported": methods,
            }))
            .unwrap()
        };
        let basic = ClientAuthMethod::ClientSecretBasic;
        let post = ClientAuthMethod::ClientSecretPost;
        let both = config(serde_json::json!([
            "client_secret_basic",
            "client_secret_post"
        ]));
        assert_eq!(both.secret_method(&basic), SecretMethod::Basic);
        assert_eq!(both.secret_method(&post), SecretMethod::Post);
        let only_post = config(serde_json::json!(["client_secret_post", "private_key_jwt"]));
        assert_eq!(only_post.secret_method(&basic), SecretMethod::Post);
        // RFC 8414 §2: nothing advertised means client_secret_basic.
        let silent = config(serde_json::json!([]));
        assert_eq!(silent.secret_method(&basic), SecretMethod::Basic);
        // RFC 6749 §2.3.1: form-urlencoded before HTTP Basic, as oauth2 does.
        assert_eq!(form_urlencode("a b:c/d+é"), "a+b%3Ac%2Fd%2B%C3%A9");
    }

    #[test]
    fn misconfigurations_stop_start_up_with_a_clear_message() {
        let err = client(r#"[{"name":"A","iss":"https://e/fhir","client_id":"p","client_auth":"client_secret_basic","client_secret_env":"PASSERELLE_TEST_UNSET_SECRET"}]"#)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "Passerelle is not configured correctly: A: the environment variable PASSERELLE_TEST_UNSET_SECRET is not set"
        );
        let err = client(r#"[{"name":"B","iss":"https://e/fhir","client_id":"p","client_auth":"private_key_jwt","key_alg":"RS384"}]"#)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no RS384 key"));
    }

    #[test]
    fn the_authorize_request_has_pkce_state_aud_launch_and_the_servers_scope_syntax() {
        let c = client(r#"[{"name":"A","iss":"https://ehr.example.org/fhir","client_id":"p","client_auth":"none"}]"#).unwrap();
        let ehr = c.ehr("https://ehr.example.org/fhir").unwrap().clone();
        let mut config: SmartConfiguration = serde_json::from_value(serde_json::json!({
            "authorization_endpoint": "https://ehr.example.org/auth", "token_endpoint": "https://ehr.example.org/token",
            "capabilities": ["permission-v2"], "code_challenge_methods_supported": ["S256"]
        }))
        .unwrap();
        let req = c.authorize(&ehr, &config, Some("xyz")).unwrap();
        let q: HashMap<String, String> = req
            .url
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], req.state);
        assert!(req.state.len() >= 22, "at least 128 bits");
        assert_eq!(q["aud"], "https://ehr.example.org/fhir");
        assert_eq!(q["launch"], "xyz");
        assert_eq!(
            q["redirect_uri"], "http://app/callback/ehr-example-org-fhir",
            "the EHR's own redirect URI"
        );
        assert!(q["scope"].contains("user/Task.crus"));
        assert!(req.post.is_none());
        config.capabilities = vec!["authorize-post".into()];
        let req = c.authorize(&ehr, &config, None).unwrap();
        let (action, fields) = req.post.unwrap();
        assert_eq!(action.as_str(), "https://ehr.example.org/auth");
        let scope = &fields.iter().find(|(k, _)| k == "scope").unwrap().1;
        assert!(
            scope.starts_with("launch/patient ") && scope.contains("user/Task.read"),
            "v1 without permission-v2"
        );
    }

    fn entry(extra: serde_json::Value) -> EhrConfig {
        let mut e = serde_json::json!({"name": "A", "iss": "https://ehr.example.org/fhir/R4/", "client_id": "p", "client_auth": "none"});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(e).unwrap()
    }

    #[test]
    fn each_ehr_has_its_own_redirect_uri_from_its_id_or_its_iss() {
        let public = Url::parse("https://passerelle.example.org/app").unwrap();
        let derived = entry(serde_json::json!({}));
        assert_eq!(callback_key(&derived).unwrap(), "ehr-example-org-fhir-r4");
        assert_eq!(
            redirect_uri_for(&public, &derived).unwrap().as_str(),
            "https://passerelle.example.org/app/callback/ehr-example-org-fhir-r4"
        );
        let with_port = entry(serde_json::json!({"iss": "http://127.0.0.1:9090/fhir/"}));
        assert_eq!(callback_key(&with_port).unwrap(), "127-0-0-1-9090-fhir");
        let named = entry(serde_json::json!({"id": "Riverside_prod.1~"}));
        assert_eq!(
            redirect_uri_for(&public, &named).unwrap().as_str(),
            "https://passerelle.example.org/app/callback/Riverside_prod.1~"
        );
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            let e = entry(serde_json::json!({ "id": bad }));
            assert!(
                callback_key(&e).unwrap_err().contains("id must be 1 to 64"),
                "{bad:?}"
            );
        }
        let legacy = entry(serde_json::json!({"legacy_callback": true}));
        assert_eq!(
            redirect_uri_for(&public, &legacy).unwrap().as_str(),
            "https://passerelle.example.org/app/callback"
        );
    }

    #[test]
    fn an_ehr_answers_only_at_its_own_callback() {
        let two = SmartClient::new(
            vec![
                entry(serde_json::json!({})),
                entry(serde_json::json!({"name": "B", "iss": "https://b.example.org/fhir", "id": "b"})),
            ],
            vec![],
            Url::parse("http://app/").unwrap(),
        )
        .unwrap();
        let a = two.ehr("https://ehr.example.org/fhir/R4").unwrap();
        assert!(a.answers_at(Some("ehr-example-org-fhir-r4")));
        assert!(!a.answers_at(Some("b")), "B's callback");
        assert!(!a.answers_at(None), "the shared callback");
        let lone = SmartClient::new(
            vec![entry(serde_json::json!({"legacy_callback": true}))],
            vec![],
            Url::parse("http://app/").unwrap(),
        )
        .unwrap();
        let a = lone.ehr("https://ehr.example.org/fhir/R4").unwrap();
        assert_eq!(a.redirect_uri().as_str(), "http://app/callback");
        assert!(a.answers_at(None));
        assert!(!a.answers_at(Some("ehr-example-org-fhir-r4")));
    }

    #[test]
    fn a_shared_or_repeated_redirect_uri_stops_start_up() {
        let start = |configs: Vec<EhrConfig>| {
            SmartClient::new(configs, vec![], Url::parse("http://app/").unwrap())
                .err()
                .unwrap()
                .to_string()
        };
        let err = start(vec![
            entry(serde_json::json!({"legacy_callback": true})),
            entry(serde_json::json!({"name": "B", "iss": "https://b.example.org/fhir"})),
        ]);
        assert!(
            err.contains("A: legacy_callback shares {public-url}/callback, which only a lone EHR may use; register {public-url}/callback/ehr-example-org-fhir-r4"),
            "{err}"
        );
        // Paths differ only in case: the derived keys collide.
        let err = start(vec![
            entry(serde_json::json!({})),
            entry(serde_json::json!({"name": "B", "iss": "https://ehr.example.org/fhir/r4"})),
        ]);
        assert_eq!(
            err,
            "Passerelle is not configured correctly: A and B have the same redirect URI http://app/callback/ehr-example-org-fhir-r4; give one of them another id"
        );
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let t = Tokens {
            access: "eyJsecret".into(),
            refresh: Some("r3fresh".into()),
            id_token: None,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("eyJsecret") && !shown.contains("r3fresh"));
    }
}

/// The `id_token` checks (OpenID Connect Core §3.1.3.7), each refusal with
/// keys made here, and the JWKS refetch against a JWKS served in the test.
#[cfg(test)]
mod id_token_tests {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;
    use crate::auth::keys::jwks;

    const ISSUER: &str = "https://ehr.example.org";
    const CLIENT: &str = "passerelle";
    const NONCE: &str = "n0nce-of-this-sign-in";

    const EXPECTED: IdTokenExpected<'static> = IdTokenExpected {
        issuer: ISSUER,
        client_id: CLIENT,
        nonce: Some(NONCE),
    };

    /// One RSA key for every test (2048-bit generation is slow) and its
    /// public key as PEM, the bytes an HS256 forgery would use as secret.
    static RSA: LazyLock<(SigningKey, String)> = LazyLock::new(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key = SigningKey::from_pem("ehr-rs256", Algorithm::RS256, pem.as_bytes()).unwrap();
        let public = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (key, public)
    });

    fn rsa() -> &'static SigningKey {
        &RSA.0
    }

    fn es(kid: &str) -> SigningKey {
        SigningKey::generate_es384(kid).unwrap()
    }

    fn set_of(keys: &[&SigningKey]) -> JwkSet {
        let keys: Vec<SigningKey> = keys.iter().map(|k| (*k).clone()).collect();
        serde_json::from_value(jwks(&keys)).unwrap()
    }

    fn claims() -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": ISSUER, "sub": "pas-prac-moreau", "aud": CLIENT,
            "iat": now, "exp": now + 300, "nonce": NONCE,
            "fhirUser": "https://ehr.example.org/fhir/Practitioner/pas-prac-moreau",
        })
    }

    fn with(mut claims: Value, change: Value) -> Value {
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    /// The message of an `id_token` refusal.
    fn refusal(result: Result<Value, AuthError>) -> String {
        match result {
            Err(AuthError::IdToken(why)) => why,
            other => panic!("expected an id_token refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_well_signed_id_token_is_accepted_and_its_claims_returned() {
        let key = es("ehr-es384");
        let token = key.sign(&claims()).unwrap();
        let claims = verify_id_token_with(&set_of(&[&key, rsa()]), &token, &EXPECTED).unwrap();
        assert_eq!(claims["sub"], "pas-prac-moreau");
        let token = rsa().sign(&self::claims()).unwrap();
        assert!(verify_id_token_with(&set_of(&[&key, rsa()]), &token, &EXPECTED).is_ok());
    }

    #[test]
    fn alg_none_is_refused() {
        let key = es("ehr-es384");
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let unsigned = format!(
            "{}.{}.",
            part(&json!({"alg": "none", "typ": "JWT", "kid": key.kid()})),
            part(&claims())
        );
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &unsigned, &EXPECTED));
        assert!(why.contains("no accepted algorithm"), "{why}");
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
        let (key, public_pem) = &*RSA;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_string());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(public_pem.as_bytes()),
        )
        .unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[key]), &forged, &EXPECTED));
        assert_eq!(why, "unexpected algorithm HS256");
    }

    #[test]
    fn a_wrong_audience_is_refused() {
        let key = es("ehr-es384");
        let token = key
            .sign(&with(claims(), json!({"aud": "another-app"})))
            .unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &token, &EXPECTED));
        assert_eq!(why, "InvalidAudience");
    }

    #[test]
    fn a_wrong_issuer_is_refused() {
        let key = es("ehr-es384");
        let token = key
            .sign(&with(claims(), json!({"iss": "https://evil.example.org"})))
            .unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &token, &EXPECTED));
        assert_eq!(why, "InvalidIssuer");
        let slash = format!("{ISSUER}/");
        let discovered_with_slash = IdTokenExpected {
            issuer: &slash,
            ..EXPECTED
        };
        let token = key.sign(&claims()).unwrap();
        assert!(
            verify_id_token_with(&set_of(&[&key]), &token, &discovered_with_slash).is_ok(),
            "an issuer discovered with a trailing slash, named without"
        );
    }

    #[test]
    fn an_expired_token_and_one_not_yet_valid_are_refused() {
        let key = es("ehr-es384");
        let now = jsonwebtoken::get_current_timestamp();
        let expired = key
            .sign(&with(claims(), json!({"exp": now - 600, "iat": now - 900})))
            .unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &expired, &EXPECTED));
        assert_eq!(why, "ExpiredSignature");
        let early = key
            .sign(&with(claims(), json!({"nbf": now + 600})))
            .unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &early, &EXPECTED));
        assert_eq!(why, "ImmatureSignature");
    }

    #[test]
    fn a_missing_nonce_is_refused() {
        let key = es("ehr-es384");
        let token = key.sign(&with(claims(), json!({"nonce": null}))).unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &token, &EXPECTED));
        assert_eq!(why, "it carries no nonce");
    }

    #[test]
    fn a_wrong_nonce_is_refused() {
        let key = es("ehr-es384");
        let token = key
            .sign(&with(claims(), json!({"nonce": "another-sign-in"})))
            .unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&key]), &token, &EXPECTED));
        assert_eq!(why, "its nonce is not this sign-in's");
    }

    #[test]
    fn azp_must_be_our_client_when_present_or_when_there_are_several_audiences() {
        let key = es("ehr-es384");
        let set = set_of(&[&key]);
        let verify = |change: Value| {
            let token = key.sign(&with(claims(), change)).unwrap();
            verify_id_token_with(&set, &token, &EXPECTED)
        };
        let why = refusal(verify(json!({"aud": [CLIENT, "another-app"]})));
        assert_eq!(why, "several audiences and no azp");
        let why = refusal(verify(
            json!({"aud": [CLIENT, "another-app"], "azp": "another-app"}),
        ));
        assert_eq!(why, "issued to another party (azp)");
        let why = refusal(verify(json!({"azp": "another-app"})));
        assert_eq!(why, "issued to another party (azp)");
        assert!(verify(json!({"aud": [CLIENT, "another-app"], "azp": CLIENT})).is_ok());
    }

    #[test]
    fn a_kid_less_token_is_verified_with_the_one_key_that_fits_its_algorithm() {
        let key = es("ehr-es384");
        let token = key.sign_without_kid(&claims()).unwrap();
        assert!(jsonwebtoken::decode_header(&token).unwrap().kid.is_none());
        // An RSA key does not fit ES384, nor does an EC key on another curve.
        let other_curve: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": "p256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }))
        .unwrap();
        let mut set = set_of(&[rsa(), &key]);
        set.keys.push(other_curve);
        let claims = verify_id_token_with(&set, &token, &EXPECTED).unwrap();
        assert_eq!(claims["sub"], "pas-prac-moreau");
    }

    #[test]
    fn a_kid_less_token_with_two_fitting_keys_is_refused() {
        let (a, b) = (es("ehr-es384-a"), es("ehr-es384-b"));
        let token = a.sign_without_kid(&claims()).unwrap();
        let why = refusal(verify_id_token_with(&set_of(&[&a, &b]), &token, &EXPECTED));
        assert_eq!(why, "no kid, and several keys of the EHR's JWKS fit ES384");
    }

    #[test]
    fn a_kid_less_token_refuses_keys_for_encryption_or_another_algorithm() {
        let key = es("ehr-es384");
        let token = key.sign_without_kid(&claims()).unwrap();
        for (member, value) in [("use", "enc"), ("alg", "ES256")] {
            let mut jwk = key.public_jwk().clone();
            jwk[member] = json!(value);
            let set = JwkSet {
                keys: vec![serde_json::from_value(jwk).unwrap()],
            };
            let why = refusal(verify_id_token_with(&set, &token, &EXPECTED));
            assert_eq!(
                why, "no kid, and no key of the EHR's JWKS fits ES384",
                "{member}"
            );
        }
    }

    #[test]
    fn a_kid_naming_a_key_of_another_kind_is_refused() {
        let key = es("ehr-es384");
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(rsa().kid().to_string());
        let pem = {
            use p384::pkcs8::{EncodePrivateKey, LineEnding};
            p384::SecretKey::random(&mut rand::rngs::OsRng)
                .to_pkcs8_pem(LineEnding::LF)
                .unwrap()
        };
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let why = refusal(verify_id_token_with(
            &set_of(&[rsa(), &key]),
            &token,
            &EXPECTED,
        ));
        assert_eq!(why, "the key it names is not a ES384 signing key");
    }

    /// A JWKS served on loopback, swappable, counting its fetches.
    struct JwksServer {
        url: Url,
        set: Arc<Mutex<Value>>,
        hits: Arc<AtomicUsize>,
    }

    impl JwksServer {
        async fn start(keys: &[SigningKey]) -> JwksServer {
            let set = Arc::new(Mutex::new(jwks(keys)));
            let hits = Arc::new(AtomicUsize::new(0));
            let (served, counted) = (set.clone(), hits.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    async move { axum::Json(body) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url =
                Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            JwksServer { url, set, hits }
        }

        fn rotate_to(&self, keys: &[SigningKey]) {
            *self.set.lock().unwrap() = jwks(keys);
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    /// A SMART client for one EHR whose discovery names `jwks_uri`.
    fn client_and_config(jwks_uri: &Url) -> (SmartClient, Ehr, SmartConfiguration) {
        let configs: Vec<EhrConfig> = serde_json::from_value(json!([{
            "name": "A", "iss": format!("{ISSUER}/fhir"), "client_id": CLIENT, "client_auth": "none"
        }]))
        .unwrap();
        let client = SmartClient::new(configs, vec![], Url::parse("http://app/").unwrap()).unwrap();
        let ehr = client.ehrs()[0].clone();
        let config = serde_json::from_value(json!({
            "issuer": ISSUER, "jwks_uri": jwks_uri,
            "authorization_endpoint": format!("{ISSUER}/authorize"),
            "token_endpoint": format!("{ISSUER}/token"),
            "code_challenge_methods_supported": ["S256"],
        }))
        .unwrap();
        (client, ehr, config)
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_the_jwks_once_more_and_the_rotated_key_is_accepted() {
        let (old, new) = (es("ehr-es384"), es("ehr-es384"));
        let server = JwksServer::start(std::slice::from_ref(&old)).await;
        let (client, ehr, config) = client_and_config(&server.url);
        let before = old.sign(&claims()).unwrap();
        client
            .verify_id_token(&ehr, &config, &before, Some(NONCE))
            .await
            .unwrap();
        assert_eq!(server.hits(), 1);
        server.rotate_to(std::slice::from_ref(&new));
        let after = new.sign(&claims()).unwrap();
        let claims = client
            .verify_id_token(&ehr, &config, &after, Some(NONCE))
            .await
            .unwrap();
        assert_eq!(claims["sub"], "pas-prac-moreau");
        assert_eq!(server.hits(), 2, "one refetch for the rotated key");
        client
            .verify_id_token(&ehr, &config, &after, Some(NONCE))
            .await
            .unwrap();
        assert_eq!(server.hits(), 2, "the new set is cached");
    }

    #[tokio::test]
    async fn forged_tokens_with_unknown_kids_refetch_the_jwks_at_most_once_a_minute() {
        let key = es("ehr-es384");
        let server = JwksServer::start(std::slice::from_ref(&key)).await;
        let (client, ehr, config) = client_and_config(&server.url);
        for _ in 0..20 {
            let forged = es("ehr-es384").sign(&claims()).unwrap();
            let why = refusal(
                client
                    .verify_id_token(&ehr, &config, &forged, Some(NONCE))
                    .await,
            );
            assert_eq!(why, "signed with an unknown key");
        }
        assert_eq!(server.hits(), 2, "the first fetch and one refetch");
        let good = key.sign(&claims()).unwrap();
        assert!(
            client
                .verify_id_token(&ehr, &config, &good, Some(NONCE))
                .await
                .is_ok(),
            "the real key still works"
        );
        let unsigned = format!("{}.e30.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        refusal(
            client
                .verify_id_token(&ehr, &config, &unsigned, Some(NONCE))
                .await,
        );
        assert_eq!(server.hits(), 2, "alg none is refused before any fetch");
    }

    fn two_ehrs() -> SmartClient {
        let configs: Vec<EhrConfig> = serde_json::from_value(json!([
            {"name": "A", "iss": "https://a.example.org/fhir/", "client_id": CLIENT, "client_auth": "none"},
            {"name": "B", "iss": "https://b.example.org/r4", "client_id": CLIENT, "client_auth": "none",
             "issuer": "https://login.b-auth.example.net/oauth2"},
            {"name": "C", "iss": "https://a.example.org/tenant-c/fhir", "client_id": CLIENT, "client_auth": "none"}
        ]))
        .unwrap();
        SmartClient::new(configs, vec![], Url::parse("http://app/").unwrap()).unwrap()
    }

    fn discovered(issuer: Option<&str>, iss_parameter: bool) -> SmartConfiguration {
        serde_json::from_value(json!({
            "issuer": issuer,
            "authorization_endpoint": "https://a.example.org/authorize",
            "token_endpoint": "https://a.example.org/token",
            "authorization_response_iss_parameter_supported": iss_parameter,
        }))
        .unwrap()
    }

    #[test]
    fn the_authorization_responses_iss_must_name_the_ehr_the_request_went_to() {
        let c = two_ehrs();
        let a = c.ehr("https://a.example.org/fhir").unwrap();
        let config = discovered(Some("https://a.example.org"), false);
        for ok in [
            "https://a.example.org",
            "https://a.example.org/",
            "https://a.example.org/fhir",
        ] {
            assert_eq!(
                c.check_response_issuer(a, &config, Some(ok)),
                Ok(()),
                "{ok}"
            );
        }
        for relayed in [
            "https://b.example.org/r4",
            "https://login.b-auth.example.net/oauth2",
            "https://a.example.org/tenant-c/fhir",
            "not a url",
        ] {
            assert!(
                matches!(
                    c.check_response_issuer(a, &config, Some(relayed)),
                    Err(AuthError::ResponseIssuer(_))
                ),
                "{relayed}"
            );
        }
        assert_eq!(c.check_response_issuer(a, &config, None), Ok(()));
        let announced = discovered(Some("https://a.example.org"), true);
        let err = c.check_response_issuer(a, &announced, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not name the authorization server"),
            "{err}"
        );
        let b = c.ehr("https://b.example.org/r4").unwrap();
        let config = discovered(None, false);
        assert_eq!(
            c.check_response_issuer(b, &config, Some("https://login.b-auth.example.net/oauth2/")),
            Ok(()),
            "the configured issuer"
        );
    }

    #[test]
    fn discovery_may_name_only_the_ehrs_own_issuer() {
        let c = two_ehrs();
        let a = c.ehr("https://a.example.org/fhir").unwrap();
        assert_eq!(
            c.check_discovered_issuer(a, "https://a.example.org"),
            Ok(())
        );
        assert_eq!(
            c.check_discovered_issuer(a, "https://a.example.org/fhir/"),
            Ok(())
        );
        let err = c
            .check_discovered_issuer(a, "https://b.example.org/r4")
            .unwrap_err();
        assert!(matches!(err, AuthError::Discovery(_)));
        assert!(err.to_string().contains("which is not this EHR's"), "{err}");
        let err = c
            .check_discovered_issuer(a, "https://a.example.org/tenant-c/fhir")
            .unwrap_err();
        assert!(
            err.to_string().contains("another EHR on Passerelle's list"),
            "{err}"
        );
        let b = c.ehr("https://b.example.org/r4").unwrap();
        assert_eq!(
            c.check_discovered_issuer(b, "https://login.b-auth.example.net/oauth2"),
            Ok(()),
            "an issuer elsewhere, configured"
        );
        assert!(
            c.check_discovered_issuer(b, "https://b.example.org")
                .is_err(),
            "only the configured one"
        );
    }

    #[test]
    fn the_authorize_request_sends_a_nonce_when_it_asks_for_openid_only() {
        let configs: Vec<EhrConfig> = serde_json::from_value(json!([
            {"name": "A", "iss": "https://a.example.org/fhir", "client_id": CLIENT, "client_auth": "none"},
            {"name": "B", "iss": "https://b.example.org/fhir", "client_id": CLIENT, "client_auth": "none",
             "scopes": "launch user/Patient.rs"}
        ]))
        .unwrap();
        let c = SmartClient::new(configs, vec![], Url::parse("http://app/").unwrap()).unwrap();
        let config = discovered(None, false);
        let config = SmartConfiguration {
            code_challenge_methods_supported: vec!["S256".into()],
            ..config
        };
        let nonce_of = |r: &AuthorizeRequest| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "nonce")
                .map(|(_, v)| v.to_string())
        };
        let a = c.ehr("https://a.example.org/fhir").unwrap();
        let first = c.authorize(a, &config, Some("l")).unwrap();
        let sent = nonce_of(&first).expect("a nonce with openid");
        assert_eq!(Some(&sent), first.nonce.as_ref());
        assert!(sent.len() >= 22, "128 bits");
        let second = c.authorize(a, &config, Some("l")).unwrap();
        assert_ne!(first.nonce, second.nonce);
        let b = c.ehr("https://b.example.org/fhir").unwrap();
        let without = c.authorize(b, &config, Some("l")).unwrap();
        assert_eq!((nonce_of(&without), without.nonce), (None, None));
    }
}
