//! The authorization server: discovery, `/authorize`, `/token`, `/revoke`
//! and `/jwks` (SMART App Launch 2.2.0, OAuth 2.0 RFC 6749, PKCE RFC 7636,
//! token revocation RFC 7009).
//!
//! * `/authorize` (GET or form POST) checks the client and its redirect URI
//!   first: when either is wrong the user sees an error page, and nothing is
//!   sent to a URI nobody registered. Every later problem (no PKCE S256, no
//!   `state`, an `aud` that is not the FHIR base, an unknown launch) goes
//!   back to the client as `?error=…&state=…`. An EHR launch with a valid
//!   `launch` is approved at once; a standalone launch shows the picker
//!   ([`super::pages`]), whose form comes back to `/authorize/approve`.
//! * `/token` authenticates the client ([`super::client_auth`]) before it
//!   looks at anything else, then redeems a code (once, within a minute,
//!   for the same client and redirect URI, with the PKCE verifier), a
//!   refresh token (rotated: each is good once) or, for Backend Services,
//!   the client's own credentials.
//! * Errors are the JSON of RFC 6749 §5.2, with a description that says
//!   what to fix; none of them echoes a token or a secret.

use std::time::Instant;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::client_auth::{self, Presented};
use super::pages::{self, PageError};
use super::scopes::{self, Compartment, Grant, LaunchKind, Policy, Scope};
use super::store::{Code, LaunchContext, Pending, Refresh, RefreshRefused};
use super::{ClientAuth, RegisteredClient, Shared, Simulation, State as AppState, unix_now};
use passerelle::auth::keys::{jwks, random_token};
use passerelle::fhir::client::is_valid_id;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .route(
            "/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/jwks", get(key_set))
        .route("/authorize", get(authorize_get).post(authorize_post))
        .route("/authorize/approve", post(approve))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
}

/// The `intent` of every launch (SMART App Launch 2.2.0 §Launch context).
pub const INTENT: &str = "passerelle-visit";
/// The `tenant` of every launch.
pub const TENANT: &str = "default";
/// An expired token (simulation) expired this long ago: beyond the leeway
/// of any JWT library, so the FHIR server refuses it.
const EXPIRED_AGO: u64 = 600;

// ---------------------------------------------------------------- discovery

fn capabilities(sim: Simulation) -> Vec<&'static str> {
    let mut caps = vec![
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-passthrough-banner",
        "context-passthrough-style",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-standalone-patient",
        "permission-offline",
        "permission-user",
        "permission-patient",
        "permission-v1",
        "permission-v2",
        "authorize-post",
        "sso-openid-connect",
    ];
    if sim == Simulation::V1Only {
        caps.retain(|c| *c != "permission-v2");
    }
    caps
}

fn scopes_supported(sim: Simulation) -> Vec<&'static str> {
    let mut s = vec![
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
        "patient/*.read",
        "patient/*.write",
        "user/*.read",
        "user/*.write",
        "system/*.read",
        "system/*.write",
    ];
    if sim != Simulation::V1Only {
        s.extend(["patient/*.cruds", "user/*.cruds", "system/*.cruds"]);
    }
    s
}

/// SMART App Launch 2.2.0 §Discovery, at `{iss}/.well-known/smart-configuration`.
pub fn smart_document(shared: &Shared, sim: Simulation) -> Value {
    json!({
        "issuer": shared.issuer(),
        "jwks_uri": shared.endpoint("jwks"),
        "authorization_endpoint": shared.endpoint("authorize"),
        "token_endpoint": shared.endpoint("token"),
        "revocation_endpoint": shared.endpoint("revoke"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": scopes_supported(sim),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "capabilities": capabilities(sim),
    })
}

async fn smart_configuration(State(shared): State<AppState>) -> Response {
    let sim = shared.simulation();
    if sim == Simulation::MissingWellKnown {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "error_description": "simulation: missing-well-known"})),
        )
            .into_response();
    }
    Json(smart_document(&shared, sim)).into_response()
}

/// OpenID Connect Discovery 1.0, for verifying id tokens.
async fn openid_configuration(State(shared): State<AppState>) -> Json<Value> {
    Json(json!({
        "issuer": shared.issuer(),
        "jwks_uri": shared.endpoint("jwks"),
        "authorization_endpoint": shared.endpoint("authorize"),
        "token_endpoint": shared.endpoint("token"),
        "revocation_endpoint": shared.endpoint("revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "nonce"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn key_set(State(shared): State<AppState>) -> Json<Value> {
    Json(jwks(std::slice::from_ref(&shared.key)))
}

// ---------------------------------------------------------------- errors

/// RFC 6749 §5.2 (and RFC 7009 §2.2.1) error answers.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("the launcher could not sign a token")]
    Server(String),
}

impl OAuthError {
    fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::Server(_) => "server_error",
        }
    }
}

impl From<client_auth::Refused> for OAuthError {
    fn from(r: client_auth::Refused) -> Self {
        OAuthError::InvalidClient(r.0)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match &self {
            OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
            OAuthError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        match &self {
            OAuthError::Server(cause) => tracing::error!(%cause, "token not issued"),
            _ => tracing::info!(error = self.code(), "token request refused"),
        }
        let mut response = (
            status,
            Json(json!({ "error": self.code(), "error_description": self.to_string() })),
        )
            .into_response();
        let h = response.headers_mut();
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"development launcher\""),
            );
        }
        response
    }
}

/// What `/authorize` does when it cannot go on.
#[derive(Debug)]
pub enum AuthorizeError {
    /// Shown to the user: the client or its redirect URI is not trusted.
    Page(PageError),
    /// Sent back to the client (RFC 6749 §4.1.2.1), with the launcher's
    /// issuer as `iss` (RFC 9207 §2).
    Redirect {
        to: Url,
        error: &'static str,
        description: String,
        state: Option<String>,
        iss: String,
    },
}

impl From<PageError> for AuthorizeError {
    fn from(p: PageError) -> Self {
        AuthorizeError::Page(p)
    }
}

impl IntoResponse for AuthorizeError {
    fn into_response(self) -> Response {
        match self {
            AuthorizeError::Page(p) => p.into_response(),
            AuthorizeError::Redirect {
                mut to,
                error,
                description,
                state,
                iss,
            } => {
                tracing::info!(error, "authorization request refused");
                {
                    let mut q = to.query_pairs_mut();
                    q.append_pair("error", error);
                    q.append_pair("error_description", &description);
                    if let Some(s) = &state {
                        q.append_pair("state", s);
                    }
                    q.append_pair("iss", &iss);
                }
                found(&to)
            }
        }
    }
}

/// 302 to `to`.
fn found(to: &Url) -> Response {
    match HeaderValue::from_str(to.as_str()) {
        Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
        Err(_) => PageError::bad_request(
            "Redirect URI not usable",
            "The app's redirect URI cannot be sent as a header.".into(),
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------- authorize

#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    aud: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    launch: Option<String>,
    nonce: Option<String>,
}

async fn authorize_get(
    State(shared): State<AppState>,
    params: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    match params {
        Ok(Query(p)) => authorize(&shared, p).await.into_response(),
        Err(_) => unreadable_request().into_response(),
    }
}

async fn authorize_post(
    State(shared): State<AppState>,
    params: Result<Form<AuthorizeParams>, FormRejection>,
) -> Response {
    match params {
        Ok(Form(p)) => authorize(&shared, p).await.into_response(),
        Err(_) => unreadable_request().into_response(),
    }
}

fn unreadable_request() -> PageError {
    PageError::bad_request(
        "Authorization request not readable",
        "The app's authorization request could not be read (a parameter is repeated or not text)."
            .into(),
    )
}

/// A parameter that is present and not empty, verbatim (`state` and
/// `nonce` must come back exactly as sent).
fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// RFC 7636 §4.2: 43 to 128 unreserved characters.
fn valid_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The client and its redirect URI, or an error page.
fn client_and_redirect<'s>(
    shared: &'s Shared,
    client_id: Option<&str>,
    redirect_uri: Option<&str>,
) -> Result<(&'s RegisteredClient, Url), PageError> {
    let client_id = client_id.ok_or_else(|| {
        PageError::bad_request(
            "No client",
            "The authorization request names no client (client_id).".into(),
        )
    })?;
    let client = shared.client(client_id).ok_or_else(|| {
        PageError::bad_request(
            "Unknown app",
            format!("No app is registered with the client id {client_id:?}."),
        )
    })?;
    let not_registered = || {
        PageError::bad_request(
            "Redirect URI not registered",
            format!(
                "The redirect URI of this request is not one registered for {client_id:?}, so the launcher will not send anything to it."
            ),
        )
    };
    let redirect = redirect_uri
        .and_then(|r| Url::parse(r).ok())
        .ok_or_else(not_registered)?;
    if shared.simulation() == Simulation::WrongRedirectUri
        || !client.redirect_uris.contains(&redirect)
    {
        return Err(not_registered());
    }
    Ok((client, redirect))
}

async fn authorize(shared: &Shared, p: AuthorizeParams) -> Result<Response, AuthorizeError> {
    let (client, redirect) =
        client_and_redirect(shared, nonempty(&p.client_id), nonempty(&p.redirect_uri))?;
    let state = nonempty(&p.state).map(str::to_string);
    let fail = |error: &'static str, description: String| AuthorizeError::Redirect {
        to: redirect.clone(),
        error,
        description,
        state: state.clone(),
        iss: shared.issuer(),
    };
    if p.response_type.as_deref() != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "response_type must be code".into(),
        ));
    }
    let Some(state) = state.clone() else {
        return Err(fail("invalid_request", "state is required".into()));
    };
    if p.code_challenge_method.as_deref() != Some("S256") {
        return Err(fail(
            "invalid_request",
            "PKCE is required: code_challenge_method must be S256".into(),
        ));
    }
    let challenge = nonempty(&p.code_challenge)
        .filter(|c| valid_pkce_string(c))
        .ok_or_else(|| {
            fail(
                "invalid_request",
                "PKCE is required: code_challenge is missing or malformed".into(),
            )
        })?
        .to_string();
    let fhir_base = shared.fhir_base();
    let aud_ok = nonempty(&p.aud)
        .and_then(|a| Url::parse(a).ok())
        .is_some_and(|a| passerelle::http::normalise_base(&a) == fhir_base);
    if !aud_ok {
        return Err(fail(
            "invalid_request",
            format!("aud must be the FHIR base URL, {fhir_base}"),
        ));
    }
    let Some(scope) = nonempty(&p.scope).map(str::to_string) else {
        return Err(fail("invalid_scope", "scope is required".into()));
    };
    let requested = scopes::parse(&scope);
    let nonce = nonempty(&p.nonce).map(str::to_string);
    let sim = shared.simulation();
    let now = Instant::now();

    if let Some(launch) = nonempty(&p.launch) {
        if !requested.contains(&Scope::Other("launch".into())) {
            return Err(fail(
                "invalid_scope",
                "an EHR launch needs the launch scope".into(),
            ));
        }
        let context = shared.store().launch(launch, now).ok_or_else(|| {
            fail(
                "invalid_request",
                "the launch parameter is unknown or has expired; launch again from the EHR".into(),
            )
        })?;
        let grant = Grant::new(
            &requested,
            Policy {
                kind: LaunchKind::Ehr,
                has_patient: context.patient.is_some(),
                downgrade: sim == Simulation::DowngradedScopes,
                v1_only: sim == Simulation::V1Only,
            },
        );
        return Ok(issue_code(
            shared,
            Code {
                client_id: client.client_id.clone(),
                redirect_uri: redirect.to_string(),
                code_challenge: challenge,
                grant,
                context,
                nonce,
            },
            redirect,
            &state,
        ));
    }

    // Standalone: the user picks who and what in the picker.
    let needs_patient = requested.iter().any(|s| match s {
        Scope::Other(o) => o == "launch/patient",
        Scope::Resource(r) => r.compartment == Compartment::Patient,
        Scope::Unknown(_) => false,
    });
    let pending = Pending {
        client_id: client.client_id.clone(),
        redirect_uri: redirect.to_string(),
        state,
        code_challenge: challenge,
        nonce,
        scope,
        needs_patient,
    };
    let id = shared.store().new_pending(pending.clone(), now);
    Ok(pages::picker(shared, &id, &pending, &redirect).await?)
}

/// Store the code and send the user back to the client with it, and with
/// `iss` (RFC 9207 §2), so a client of several EHRs knows who answered.
fn issue_code(shared: &Shared, code: Code, mut redirect: Url, state: &str) -> Response {
    let id = shared.store().new_code(code, Instant::now());
    redirect
        .query_pairs_mut()
        .append_pair("code", &id)
        .append_pair("state", state)
        .append_pair("iss", &shared.issuer());
    found(&redirect)
}

#[derive(Debug, Deserialize)]
pub struct Approval {
    request: String,
    decision: Option<String>,
    practitioner: Option<String>,
    patient: Option<String>,
    encounter: Option<String>,
}

/// The picker's answer.
async fn approve(
    State(shared): State<AppState>,
    form: Result<Form<Approval>, FormRejection>,
) -> Result<Response, AuthorizeError> {
    let Ok(Form(a)) = form else {
        return Err(unreadable_request().into());
    };
    let now = Instant::now();
    let pending = shared.store().pending(&a.request, now).ok_or_else(|| {
        PageError::bad_request(
            "This sign-in has expired",
            "The launcher no longer knows this request; start again from the app.".into(),
        )
    })?;
    let redirect = Url::parse(&pending.redirect_uri).map_err(|_| unreadable_request())?;
    if a.decision.as_deref() == Some("deny") {
        shared.store().remove_pending(&a.request);
        return Err(AuthorizeError::Redirect {
            to: redirect,
            error: "access_denied",
            description: "the user denied access".into(),
            state: Some(pending.state),
            iss: shared.issuer(),
        });
    }
    let id = |v: &Option<String>| nonempty(v).map(str::to_string);
    let practitioner = id(&a.practitioner)
        .filter(|p| is_valid_id(p))
        .ok_or_else(|| {
            PageError::bad_request(
                "Choose a practitioner",
                "Pick the practitioner who signs in (a FHIR id).".into(),
            )
        })?;
    let patient = id(&a.patient);
    if patient.as_deref().is_some_and(|p| !is_valid_id(p))
        || (pending.needs_patient && patient.is_none())
    {
        return Err(PageError::bad_request(
            "Choose a patient",
            "This app asked for a patient: pick one.".into(),
        )
        .into());
    }
    let encounter = id(&a.encounter);
    if let Some(e) = &encounter {
        let Some(p) = &patient else {
            return Err(PageError::bad_request(
                "Choose a patient",
                "An encounter needs its patient: pick the patient too.".into(),
            )
            .into());
        };
        pages::check_encounter(&shared, e, p).await?;
    }
    shared.store().remove_pending(&a.request);
    let sim = shared.simulation();
    let grant = Grant::new(
        &scopes::parse(&pending.scope),
        Policy {
            kind: LaunchKind::Standalone,
            has_patient: patient.is_some(),
            downgrade: sim == Simulation::DowngradedScopes,
            v1_only: sim == Simulation::V1Only,
        },
    );
    let context = LaunchContext {
        practitioner,
        patient,
        encounter,
        ehr: false,
    };
    Ok(issue_code(
        &shared,
        Code {
            client_id: pending.client_id,
            redirect_uri: pending.redirect_uri,
            code_challenge: pending.code_challenge,
            grant,
            context,
            nonce: pending.nonce,
        },
        redirect,
        &pending.state,
    ))
}

// ---------------------------------------------------------------- token

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

impl TokenForm {
    fn presented(&self) -> Presented<'_> {
        Presented {
            client_id: self.client_id.as_deref(),
            client_secret: self.client_secret.as_deref(),
            assertion_type: self.client_assertion_type.as_deref(),
            assertion: self.client_assertion.as_deref(),
        }
    }
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    nonempty(value).ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
}

async fn token(
    State(shared): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Ok(Form(form)) = form else {
        return Err(OAuthError::InvalidRequest(
            "the token request must be a form (application/x-www-form-urlencoded) without repeated parameters".into(),
        ));
    };
    if shared.simulation() == Simulation::InvalidClient {
        return Err(OAuthError::InvalidClient(
            "simulation: invalid-client (every client is refused)".into(),
        ));
    }
    let client = client_auth::authenticate(&shared, &headers, form.presented()).await?;
    let body = match nonempty(&form.grant_type) {
        Some("authorization_code") => redeem_code(&shared, client, &form)?,
        Some("refresh_token") => {
            let delay = shared.refresh_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            redeem_refresh(&shared, client, &form)?
        }
        Some("client_credentials") => client_credentials(&shared, client, &form)?,
        Some(other) => {
            return Err(OAuthError::UnsupportedGrantType(format!(
                "grant_type {other:?} is not supported"
            )));
        }
        None => return Err(OAuthError::InvalidRequest("grant_type is required".into())),
    };
    Ok(token_answer(body))
}

/// RFC 6749 §5.1: JSON, never cached.
fn token_answer(body: Value) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn redeem_code(
    shared: &Shared,
    client: &RegisteredClient,
    form: &TokenForm,
) -> Result<Value, OAuthError> {
    let code_id = required(&form.code, "code")?;
    let redirect_uri = required(&form.redirect_uri, "redirect_uri")?;
    let verifier = required(&form.code_verifier, "code_verifier (PKCE)")?;
    let code = shared
        .store()
        .take_code(code_id, Instant::now())
        .ok_or_else(|| {
            OAuthError::InvalidGrant("the code is unknown, expired (60 s) or already used".into())
        })?;
    if code.client_id != client.client_id {
        return Err(OAuthError::InvalidGrant(
            "the code was issued to another client".into(),
        ));
    }
    let same_redirect = Url::parse(redirect_uri)
        .ok()
        .is_some_and(|r| r.as_str() == code.redirect_uri);
    if !same_redirect {
        return Err(OAuthError::InvalidGrant(
            "redirect_uri differs from the one of the authorization request".into(),
        ));
    }
    if !valid_pkce_string(verifier)
        || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != code.code_challenge
    {
        return Err(OAuthError::InvalidGrant(
            "the code_verifier does not match the code_challenge (PKCE S256)".into(),
        ));
    }
    issue(
        shared,
        client,
        &code.grant,
        &code.context,
        code.nonce.as_deref(),
    )
}

fn redeem_refresh(
    shared: &Shared,
    client: &RegisteredClient,
    form: &TokenForm,
) -> Result<Value, OAuthError> {
    shared
        .refresh_requests
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let token = required(&form.refresh_token, "refresh_token")?;
    let refresh =
        shared
            .store()
            .take_refresh(token, &client.client_id)
            .map_err(|why| {
                OAuthError::InvalidGrant(match why {
                RefreshRefused::Unknown => {
                    "the refresh token is unknown, revoked or already used (they are rotated)"
                }
                RefreshRefused::OtherClient => "the refresh token was issued to another client",
            }
            .into())
            })?;
    let grant = match nonempty(&form.scope) {
        None => refresh.grant.clone(),
        Some(scope) => match refresh.grant.narrowed(&scopes::parse(scope)) {
            Some(g) => g,
            None => {
                // Not redeemed after all: the client may try again.
                shared.store().restore_refresh(token, refresh);
                return Err(OAuthError::InvalidScope(
                    "a refresh may ask for the granted scopes or fewer, not more".into(),
                ));
            }
        },
    };
    issue(shared, client, &grant, &refresh.context, None)
}

fn client_credentials(
    shared: &Shared,
    client: &RegisteredClient,
    form: &TokenForm,
) -> Result<Value, OAuthError> {
    if !matches!(client.auth, ClientAuth::PrivateKeyJwt { .. }) {
        return Err(OAuthError::UnauthorizedClient(
            "client_credentials (Backend Services) needs a client registered for private_key_jwt"
                .into(),
        ));
    }
    let scope = required(&form.scope, "scope")?;
    let requested = scopes::parse(scope);
    let all_system = requested
        .iter()
        .all(|s| matches!(s, Scope::Resource(r) if r.compartment == Compartment::System));
    if !all_system {
        return Err(OAuthError::InvalidScope(
            "Backend Services ask for system/ scopes only".into(),
        ));
    }
    let sim = shared.simulation();
    let grant = Grant::new(
        &requested,
        Policy {
            kind: LaunchKind::Backend,
            has_patient: false,
            downgrade: sim == Simulation::DowngradedScopes,
            v1_only: sim == Simulation::V1Only,
        },
    );
    if !grant.has_resource_scope() {
        return Err(OAuthError::InvalidScope(
            "none of the requested scopes can be granted".into(),
        ));
    }
    let (exp, expires_in, iat) = lifetimes(shared, sim);
    let claims = json!({
        "iss": shared.issuer(),
        "sub": client.client_id,
        "aud": shared.audience(),
        "iat": iat,
        "exp": exp,
        "jti": random_token(16),
        "scope": grant.claim_scope(),
        "client_id": client.client_id,
    });
    let access = shared
        .key
        .sign(&claims)
        .map_err(|e| OAuthError::Server(e.to_string()))?;
    Ok(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": grant.response_scope(),
    }))
}

/// `exp`, `expires_in` and `iat` of a new access token.
fn lifetimes(shared: &Shared, sim: Simulation) -> (u64, u64, u64) {
    let now = unix_now();
    let lifetime = shared.token_lifetime.as_secs();
    if sim == Simulation::ExpiredToken {
        let exp = now.saturating_sub(EXPIRED_AGO);
        (exp, 0, exp.saturating_sub(lifetime))
    } else {
        (now + lifetime, lifetime, now)
    }
}

/// The token response of a user launch (code or refresh).
fn issue(
    shared: &Shared,
    client: &RegisteredClient,
    grant: &Grant,
    context: &LaunchContext,
    nonce: Option<&str>,
) -> Result<Value, OAuthError> {
    let sim = shared.simulation();
    let (exp, expires_in, iat) = lifetimes(shared, sim);
    let fhir_user = format!(
        "{}Practitioner/{}",
        shared.fhir_base(),
        context.practitioner
    );
    let mut claims = json!({
        "iss": shared.issuer(),
        "sub": context.practitioner,
        "aud": shared.audience(),
        "iat": iat,
        "exp": exp,
        "jti": random_token(16),
        "scope": grant.claim_scope(),
        "client_id": client.client_id,
        "fhirUser": fhir_user,
    });
    if let Some(p) = &context.patient {
        claims["patient"] = json!(p);
    }
    if let Some(e) = &context.encounter {
        claims["encounter"] = json!(e);
    }
    if sim == Simulation::RestrictedUser && context.patient.is_none() {
        // What the FHIR server enforces is narrower than the grant: the
        // user's scopes become one patient's compartment.
        claims["scope"] = json!(grant.claim_scope().replace("user/", "patient/"));
        claims["patient"] = json!(crate::launcher::RESTRICTED_USER_PATIENT);
    }
    let sign = |claims: &Value| {
        shared
            .key
            .sign(claims)
            .map_err(|e| OAuthError::Server(e.to_string()))
    };
    let mut body = json!({
        "access_token": sign(&claims)?,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": grant.response_scope(),
        "smart_style_url": shared.endpoint("smart-style.json"),
        "intent": INTENT,
        "tenant": TENANT,
    });
    if let Some(p) = &context.patient {
        body["patient"] = json!(p);
        // The EHR page shows its own patient banner; a standalone app must
        // show one itself (SMART App Launch 2.2 §need_patient_banner).
        body["need_patient_banner"] = json!(!context.ehr);
    }
    if let Some(e) = &context.encounter {
        body["encounter"] = json!(e);
        body["fhirContext"] = json!([{ "reference": format!("Encounter/{e}") }]);
    }
    if grant.wants_refresh() && sim != Simulation::ExpiredToken {
        let refresh = shared.store().new_refresh(Refresh {
            client_id: client.client_id.clone(),
            grant: grant.clone(),
            context: context.clone(),
        });
        body["refresh_token"] = json!(refresh);
    }
    if grant.has("openid") && grant.has("fhirUser") {
        let now = unix_now();
        let mut id = json!({
            "iss": shared.issuer(),
            "sub": context.practitioner,
            "aud": client.client_id,
            "iat": now,
            "exp": now + shared.token_lifetime.as_secs(),
            "fhirUser": fhir_user,
        });
        if let Some(n) = nonce {
            id["nonce"] = json!(n);
        }
        body["id_token"] = json!(if shared.id_token_without_kid {
            shared
                .key
                .sign_without_kid(&id)
                .map_err(|e| OAuthError::Server(e.to_string()))?
        } else {
            sign(&id)?
        });
    }
    Ok(body)
}

// ---------------------------------------------------------------- revoke

#[derive(Debug, Default, Deserialize)]
pub struct RevokeForm {
    token: Option<String>,
    #[allow(dead_code)] // RFC 7009 §2.1: a hint only; refresh tokens are looked up anyway
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// RFC 7009: the client proves who it is, and its refresh token is revoked.
/// The answer is 200 whether the token was known or not (§2.2); access
/// tokens are self-contained JWTs and stay valid until they expire.
async fn revoke(
    State(shared): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Result<Response, OAuthError> {
    let Ok(Form(form)) = form else {
        return Err(OAuthError::InvalidRequest(
            "the revocation request must be a form".into(),
        ));
    };
    let presented = Presented {
        client_id: form.client_id.as_deref(),
        client_secret: form.client_secret.as_deref(),
        assertion_type: form.client_assertion_type.as_deref(),
        assertion: form.client_assertion.as_deref(),
    };
    let client = client_auth::authenticate(&shared, &headers, presented).await?;
    let token = required(&form.token, "token")?;
    if shared.store().revoke_refresh(token, &client.client_id) {
        tracing::info!("refresh token revoked");
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_strings_follow_rfc_7636() {
        assert!(valid_pkce_string(&"a".repeat(43)));
        assert!(valid_pkce_string(&"A-._~9".repeat(20)));
        assert!(!valid_pkce_string(&"a".repeat(42)));
        assert!(!valid_pkce_string(&"a".repeat(129)));
        assert!(!valid_pkce_string(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn v1_only_drops_permission_v2_and_v2_scopes_from_discovery() {
        assert!(capabilities(Simulation::None).contains(&"permission-v2"));
        assert!(!capabilities(Simulation::V1Only).contains(&"permission-v2"));
        assert!(capabilities(Simulation::V1Only).contains(&"permission-v1"));
        assert!(!scopes_supported(Simulation::V1Only).contains(&"user/*.cruds"));
    }
}
