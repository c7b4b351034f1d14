//! The SMART App Launch 2.2.0 client: the EHR allow-list, discovery, the
//! authorization request (PKCE S256, `state`, `aud`, v1 or v2 scopes), the
//! token exchange for public, symmetric and asymmetric clients, refresh, the
//! `id_token` check, revocation and Backend Services.
//!
//! Security choices follow RFC 9700 (OAuth 2.0 Security BCP): `iss` is
//! checked against the allow-list before any request; discovery failures
//! fail closed; the token endpoint is called by a client that follows no
//! redirects; tokens never reach the browser.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
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
    /// `client_secret_basic`, the secret read from an environment variable.
    ClientSecretBasic,
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
    /// For `client_secret_basic`: the environment variable holding the secret.
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
}

impl BackendConfig {
    pub const DEFAULT_SCOPE: &'static str = "system/Task.rus system/Patient.rs system/ServiceRequest.rus system/ClaimResponse.rs system/Organization.rs system/Condition.rus system/PractitionerRole.rs system/Practitioner.rs system/Coverage.rs system/Claim.rs system/Observation.rs system/Encounter.rs system/Procedure.rs";

    fn default_scope() -> String {
        Self::DEFAULT_SCOPE.to_string()
    }

    fn default_poll() -> u64 {
        900
    }
}

/// An allow-listed EHR, checked and ready.
#[derive(Clone)]
pub struct Ehr {
    pub config: EhrConfig,
    secret: Option<SecretString>,
}

impl std::fmt::Debug for Ehr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ehr")
            .field("name", &self.config.name)
            .field("iss", &self.config.iss.as_str())
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
    #[error("Your authorization has ended. Launch Passerelle again from the EHR.")]
    LaunchAgain,
    #[error("This page belongs to another launch or browser. Open the chart again from the EHR.")]
    WrongLaunch,
    #[error("Passerelle is not configured correctly: {0}")]
    Config(String),
    /// The bound on sign-ins in progress is reached (a flood of launches).
    #[error("Too many sign-ins are in progress right now; nothing was sent to the EHR.")]
    Busy,
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
    redirect_uri: Url,
    http: reqwest::Client,
    discovered: Mutex<HashMap<String, Arc<SmartConfiguration>>>,
    jwks: Mutex<HashMap<String, Arc<JwkSet>>>,
}

impl SmartClient {
    /// Check the allow-list: secrets present, key algorithms available.
    pub fn new(
        configs: Vec<EhrConfig>,
        keys: Vec<SigningKey>,
        redirect_uri: Url,
    ) -> Result<Self, AuthError> {
        let mut ehrs = Vec::new();
        for config in configs {
            let secret = match config.client_auth {
                ClientAuthMethod::ClientSecretBasic => {
                    let var = config.client_secret_env.as_deref().ok_or_else(|| {
                        AuthError::Config(format!(
                            "{}: client_secret_basic needs client_secret_env",
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
            ehrs.push(Ehr { config, secret });
        }
        // Redirects are never followed: a token endpoint that redirects is refused.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("passerelle/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("TLS backend initialises");
        Ok(SmartClient {
            ehrs,
            keys,
            redirect_uri,
            http,
            discovered: Mutex::default(),
            jwks: Mutex::default(),
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
                .set_redirect_uri(RedirectUrl::from_url(self.redirect_uri.clone()));
        client = match ehr.config.client_auth {
            ClientAuthMethod::ClientSecretBasic => client
                .set_client_secret(ClientSecret::new(
                    ehr.secret
                        .as_ref()
                        .expect("checked at start")
                        .expose_secret()
                        .to_string(),
                ))
                .set_auth_type(AuthType::BasicAuth),
            _ => client.set_auth_type(AuthType::RequestBody),
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
    /// the `state`, and the secret (PKCE verifier) to keep for the callback.
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
            .set_redirect_uri(RedirectUrl::from_url(self.redirect_uri.clone()));
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
        let mut request = self.http.post(endpoint.clone()).form(&form);
        if let Some(secret) = &ehr.secret {
            request = request.basic_auth(&ehr.config.client_id, Some(secret.expose_secret()));
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

    /// Verify an `id_token` (OpenID Connect Core §3.1.3.7): signature against
    /// the issuer's JWKS, `iss`, `aud` = our client id, `exp`. Returns its claims.
    pub async fn verify_id_token(
        &self,
        ehr: &Ehr,
        config: &SmartConfiguration,
        id_token: &str,
    ) -> Result<Value, AuthError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|_| AuthError::IdToken("not a JWT".into()))?;
        let jwks_uri = config
            .jwks_uri
            .clone()
            .ok_or_else(|| AuthError::IdToken("the EHR publishes no jwks_uri".into()))?;
        let issuer = config
            .issuer
            .clone()
            .ok_or_else(|| AuthError::IdToken("the EHR names no issuer".into()))?;
        let mut set = self.jwks_for(&jwks_uri, false).await?;
        let find = |set: &JwkSet| header.kid.as_deref().and_then(|k| set.find(k)).cloned();
        let jwk = match find(&set) {
            Some(j) => j,
            None => {
                set = self.jwks_for(&jwks_uri, true).await?;
                find(&set).ok_or_else(|| AuthError::IdToken("signed with an unknown key".into()))?
            }
        };
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|_| AuthError::IdToken("unusable key".into()))?;
        if !matches!(
            header.alg,
            jsonwebtoken::Algorithm::RS256
                | jsonwebtoken::Algorithm::RS384
                | jsonwebtoken::Algorithm::ES256
                | jsonwebtoken::Algorithm::ES384
        ) {
            return Err(AuthError::IdToken("unexpected algorithm".into()));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer.trim_end_matches('/'), issuer.as_str()]);
        validation.set_audience(&[ehr.config.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(id_token, &key, &validation).map_err(|e| {
            AuthError::IdToken(format!("{:?}", e.kind()).chars().take(80).collect())
        })?;
        Ok(data.claims)
    }

    async fn jwks_for(&self, uri: &Url, refresh: bool) -> Result<Arc<JwkSet>, AuthError> {
        if !refresh && let Some(set) = self.jwks.lock().expect("lock").get(uri.as_str()) {
            return Ok(set.clone());
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

/// A prepared authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub url: Url,
    /// When the EHR advertises `authorize-post`: where to POST, and the fields.
    pub post: Option<(Url, Vec<(String, String)>)>,
    pub state: String,
    pub verifier: String,
    pub scope: String,
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
            Url::parse("http://app/callback").unwrap(),
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
        assert_eq!(q["redirect_uri"], "http://app/callback");
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
