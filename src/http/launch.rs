//! SMART launches over HTTP.
//!
//! * `GET /launch?iss=…&launch=…`: EHR launch;
//! * `GET /standalone`, `GET /standalone/start?iss=…`: standalone launch;
//! * `GET /callback/{key}`: the redirect back from the EHR whose redirect
//!   URI this is (each EHR has its own, RFC 9700 §4.4.2), to the launch's
//!   visit page; `GET /callback` for a lone EHR with `legacy_callback`;
//! * `POST /l/{launch}/patient`, `POST /l/{launch}/logout` (CSRF-protected);
//! * `GET /.well-known/jwks.json`: Passerelle's public keys.
//!
//! The browser keeps one cookie, `__Host-passerelle` (HttpOnly, Secure,
//! SameSite=None so it works inside the EHR's iframe, Partitioned so it is
//! the EHR's alone), set here and read by the launch extractors; tokens never
//! leave the server.

use askama::Template;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::error::render;
use super::extract::{BROWSER_COOKIE, Launched, check_csrf, existing_browser};
use super::{AppError, AppState};
use crate::auth::keys::{jwks, random_token};
use crate::auth::smart::AuthError;
use crate::fhir::client::is_valid_id;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/launch", get(ehr_launch))
        .route("/standalone", get(standalone))
        .route("/standalone/start", get(standalone_start))
        .route("/callback", get(shared_callback))
        .route("/callback/{key}", get(ehr_callback))
        .route("/l/{id}/patient", post(choose_patient))
        .route("/l/{id}/logout", post(logout))
        .route("/.well-known/jwks.json", get(public_keys))
}

/// The browser's id, from its cookie, or a new one (and the cookie to set).
fn browser(jar: CookieJar) -> (CookieJar, String) {
    if let Some(c) = jar.get(BROWSER_COOKIE)
        && c.value().len() >= 22
    {
        let id = c.value().to_string();
        return (jar, id);
    }
    let id = random_token(16);
    let cookie = Cookie::build((BROWSER_COOKIE, id.clone()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::None)
        .partitioned(true)
        .build();
    (jar.add(cookie), id)
}

#[derive(Deserialize)]
struct LaunchQuery {
    iss: Option<String>,
    launch: Option<String>,
    /// A coordinator's sign-in: the queue, no patient in context.
    queue: Option<String>,
}

#[derive(Template)]
#[template(path = "authorize_post.html")]
struct AuthorizePost {
    action: String,
    fields: Vec<(String, String)>,
}

async fn start(
    state: &AppState,
    peer: SocketAddr,
    jar: CookieJar,
    iss: &str,
    launch: Option<&str>,
    coordinator: bool,
) -> Result<Response, AppError> {
    let sessions = state.sessions()?;
    // Before anything is stored or sent: a loop of launches stops here.
    state.admit_launch(peer.ip())?;
    // The allow-list is checked before anything is sent to `iss`.
    let ehr = sessions.smart().ehr(iss)?;
    let ancestors = state.frame_ancestors_for(&ehr.config.frame_ancestors);
    let (jar, browser) = browser(jar);
    let request = sessions.begin(iss, launch, &browser, coordinator).await?;
    match request.post {
        None => Ok((jar, Redirect::to(request.url.as_str())).into_response()),
        Some((action, fields)) => {
            // The EHR redirects the form back to our callback: browsers apply
            // form-action to that redirect too, hence 'self'.
            let origin = action.origin().ascii_serialization();
            // Framed by the EHR that launched it (the launch runs in its
            // iframe), and by no other site: a page that auto-submits an
            // authorization request must not be framed by an attacker.
            let csp = format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; form-action {origin} 'self'; base-uri 'none'; frame-ancestors {ancestors}"
            );
            let page = render(AuthorizePost {
                action: action.to_string(),
                fields,
            })?;
            let mut response = (jar, page).into_response();
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&csp)?,
            );
            Ok(response)
        }
    }
}

async fn ehr_launch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Query(q): Query<LaunchQuery>,
) -> Result<Response, AppError> {
    let iss = q.iss.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        AppError::BadRequest(
            "The EHR launch did not say which FHIR server (iss) it comes from.".into(),
        )
    })?;
    let launch = q
        .launch
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            AppError::BadRequest("The EHR launch carries no launch parameter.".into())
        })?;
    start(&state, peer, jar, iss, Some(launch), false).await
}

#[derive(Template)]
#[template(path = "standalone.html")]
struct StandalonePage {
    ehrs: Vec<(String, String)>,
}

async fn standalone(State(state): State<AppState>) -> Result<Response, AppError> {
    let sessions = state.sessions()?;
    let ehrs = sessions
        .smart()
        .ehrs()
        .iter()
        .map(|e| (e.config.name.clone(), e.config.iss.to_string()))
        .collect();
    render(StandalonePage { ehrs })
}

async fn standalone_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    jar: CookieJar,
    Query(q): Query<LaunchQuery>,
) -> Result<Response, AppError> {
    let iss = q
        .iss
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AppError::BadRequest("Choose an EHR to sign in to.".into()))?;
    start(&state, peer, jar, iss, None, q.queue.is_some()).await
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// RFC 9207: the authorization server that answered.
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `/callback/{key}`: the redirect URI of the EHR with that key.
async fn ehr_callback(
    State(state): State<AppState>,
    Path(key): Path<String>,
    jar: CookieJar,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, AppError> {
    callback(state, Some(&key), jar, q).await
}

/// `/callback`: taken only for a lone EHR configured with
/// `legacy_callback`; any other EHR's state arriving here is refused.
async fn shared_callback(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, AppError> {
    callback(state, None, jar, q).await
}

async fn callback(
    state: AppState,
    arrived: Option<&str>,
    jar: CookieJar,
    q: CallbackQuery,
) -> Result<Response, AppError> {
    let sessions = state.sessions()?;
    if let Some(error) = q.error {
        let words: String = q
            .error_description
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(AuthError::Refused(if words.is_empty() {
            error
        } else {
            format!("{error} ({words})")
        })
        .into());
    }
    let (Some(code), Some(st)) = (q.code, q.state) else {
        return Err(AuthError::BadState.into());
    };
    let browser = existing_browser(&jar).map_err(|_| AuthError::BadState)?;
    let id = sessions
        .complete(&st, &code, q.iss.as_deref(), &browser, arrived)
        .await?;
    Ok(Redirect::to(&format!("/l/{id}/visit")).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
    patient: Option<String>,
}

async fn choose_patient(
    State(state): State<AppState>,
    Launched(mut launch): Launched,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    // A coordinator's sign-in works the queue across patients: binding it
    // to one patient would break the queue; a chart is another sign-in.
    if state.queue(&launch.iss).is_some() {
        return Err(AppError::BadRequest(
            "This sign-in works the follow-up queue. To open a patient's chart, sign in again for a patient (Passerelle's sign-in page).".into(),
        ));
    }
    if launch.context.patient.is_some() {
        return Err(AppError::BadRequest(
            "This launch already has a patient.".into(),
        ));
    }
    let patient = form
        .patient
        .as_deref()
        .filter(|p| is_valid_id(p))
        .ok_or_else(|| AppError::BadRequest("Choose a patient.".into()))?;
    launch.choose_patient(patient).await?;
    Ok(Redirect::to(&format!("/l/{}/visit", launch.id)).into_response())
}

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOut;

async fn logout(
    State(state): State<AppState>,
    Launched(launch): Launched,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    launch.sessions().logout(&launch).await?;
    if let Some(queue) = state.queue(&launch.iss) {
        queue.forget_viewer(&launch.id);
    }
    render(SignedOut)
}

async fn public_keys(State(state): State<AppState>) -> Result<Response, AppError> {
    let sessions = state.sessions()?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(jwks(sessions.smart().keys())),
    )
        .into_response())
}
