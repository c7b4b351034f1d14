//! SMART launches over HTTP.
//!
//! * `GET /launch?iss=…&launch=…`: EHR launch;
//! * `GET /standalone`, `GET /standalone/start?iss=…`: standalone launch;
//! * `GET /callback`: the redirect back from the EHR;
//! * `GET /l/{launch}/visit`: the visit page of one launch;
//!   `POST /l/{launch}/patient`, `POST /l/{launch}/logout` (CSRF-protected);
//! * `GET /.well-known/jwks.json`: Passerelle's public keys.
//!
//! The browser keeps one cookie, `__Host-passerelle` (HttpOnly, Secure,
//! SameSite=None so it works inside the EHR's iframe, Partitioned so it is
//! the EHR's alone); tokens never leave the server.

use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::visit::{SessionView, VisitPage, render, today};
use super::{AppError, AppState};
use crate::auth::keys::{jwks, random_token};
use crate::auth::scopes::disabled_features;
use crate::auth::session::Launch;
use crate::auth::smart::AuthError;
use crate::fhir::client::is_valid_id;
use crate::fhir::{context, views};

pub const BROWSER_COOKIE: &str = "__Host-passerelle";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/launch", get(ehr_launch))
        .route("/standalone", get(standalone))
        .route("/standalone/start", get(standalone_start))
        .route("/callback", get(callback))
        .route("/l/{id}/visit", get(visit))
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

fn existing_browser(jar: &CookieJar) -> Result<String, AppError> {
    jar.get(BROWSER_COOKIE)
        .map(|c| c.value().to_string())
        .ok_or(AppError::Auth(AuthError::WrongLaunch))
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
    jar: CookieJar,
    iss: &str,
    launch: Option<&str>,
    coordinator: bool,
) -> Result<Response, AppError> {
    let sessions = state.sessions()?;
    // The allow-list is checked before anything is sent to `iss`.
    sessions.smart().ehr(iss)?;
    let (jar, browser) = browser(jar);
    let request = sessions.begin(iss, launch, &browser, coordinator).await?;
    match request.post {
        None => Ok((jar, Redirect::to(request.url.as_str())).into_response()),
        Some((action, fields)) => {
            // The EHR redirects the form back to our callback: browsers apply
            // form-action to that redirect too, hence 'self'.
            let origin = action.origin().ascii_serialization();
            let csp = format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; form-action {origin} 'self'; base-uri 'none'; frame-ancestors *"
            );
            let page = render(AuthorizePost {
                action: action.to_string(),
                fields,
            })?;
            let mut response = (jar, page).into_response();
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&csp).map_err(|e| AppError::Internal(e.to_string()))?,
            );
            Ok(response)
        }
    }
}

async fn ehr_launch(
    State(state): State<AppState>,
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
    start(&state, jar, iss, Some(launch), false).await
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
    jar: CookieJar,
    Query(q): Query<LaunchQuery>,
) -> Result<Response, AppError> {
    let iss = q
        .iss
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AppError::BadRequest("Choose an EHR to sign in to.".into()))?;
    start(&state, jar, iss, None, q.queue.is_some()).await
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<CallbackQuery>,
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
    let id = sessions.complete(&st, &code, &browser).await?;
    Ok(Redirect::to(&format!("/l/{id}/visit")).into_response())
}

pub(super) async fn open_launch(
    state: &AppState,
    jar: &CookieJar,
    id: &str,
) -> Result<Launch, AppError> {
    open_launch_with(state, jar, id, true).await
}

/// [`open_launch`] for requests a page makes by itself (live updates): the
/// launch's idle clock is not reset by them.
pub(super) async fn open_launch_quietly(
    state: &AppState,
    jar: &CookieJar,
    id: &str,
) -> Result<Launch, AppError> {
    open_launch_with(state, jar, id, false).await
}

async fn open_launch_with(
    state: &AppState,
    jar: &CookieJar,
    id: &str,
    touch: bool,
) -> Result<Launch, AppError> {
    let browser = existing_browser(jar)?;
    Ok(state.sessions()?.open_with(id, &browser, touch).await?)
}

#[derive(Template)]
#[template(path = "launch_patients.html")]
struct LaunchPatients {
    launch_id: String,
    csrf: String,
    name: String,
    patients: Vec<(String, String, String)>,
}

#[derive(Deserialize)]
struct VisitQuery {
    name: Option<String>,
    /// The id of a write just made (referral, appeal…): its fate is shown.
    done: Option<String>,
    /// Open the patient search even when a queue is available.
    pick: Option<String>,
    /// The write had been sent before: nothing new was recorded.
    again: Option<String>,
}

async fn visit(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
    Query(q): Query<VisitQuery>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let Some(patient) = launch.context.patient.clone() else {
        // A coordinator's launch (no patient): the queue, when there is one.
        if q.name.is_none() && q.pick.is_none() && state.queue(&launch.iss).is_some() {
            return Ok(Redirect::to(&format!("/l/{}/queue", launch.id)).into_response());
        }
        // Standalone launch on an EHR without a patient picker: search here.
        let mut params = vec![("_count", "50".to_string())];
        if let Some(n) = q.name.as_deref().filter(|n| !n.trim().is_empty()) {
            params.push(("name", n.trim().to_string()));
        }
        let page = client.search("Patient", &params).await?;
        let patients = page
            .resources::<fhir_sdk::r4b::resources::Patient>("Patient")
            .items
            .iter()
            .map(views::patient)
            .map(|p| {
                (
                    p.id,
                    p.name,
                    p.birth_date.map(|d| d.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        return render(LaunchPatients {
            launch_id: launch.id,
            csrf: launch.csrf,
            name: q.name.unwrap_or_default(),
            patients,
        });
    };
    let today = today();
    let user = async {
        let fhir_user = launch.context.fhir_user.as_deref()?;
        let reference = fhir_user.rsplit('/').take(2).collect::<Vec<_>>();
        let (id, kind) = (reference.first()?, reference.get(1)?);
        if *kind != "Practitioner" || !is_valid_id(id) {
            return None;
        }
        let p = client
            .read::<fhir_sdk::r4b::resources::Practitioner>("Practitioner", id)
            .await
            .ok()?;
        p.resource.name.iter().flatten().next().and_then(|n| {
            let given: Vec<&str> = n.given.iter().flatten().map(String::as_str).collect();
            let full = format!(
                "{} {}",
                given.join(" "),
                n.family.clone().unwrap_or_default()
            );
            (!full.trim().is_empty()).then(|| full.trim().to_string())
        })
    };
    let (ctx, user) = tokio::join!(
        context::load_visit(
            &client,
            &patient,
            launch.context.encounter.as_deref(),
            state.regimes(),
            today
        ),
        user
    );
    let mut page = VisitPage::new(ctx?, &launch.iss, today);
    page.session = Some(SessionView {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        user: user
            .or_else(|| launch.context.fhir_user.clone())
            .unwrap_or_else(|| "signed in".into()),
        disabled: disabled_features(&launch.granted)
            .into_iter()
            .map(|(n, r)| (n.to_string(), r))
            .collect(),
    });
    page.show_banner = launch.context.need_patient_banner;
    if let Some(done) = q.done.as_deref().filter(|d| !d.is_empty()) {
        page.flash = state
            .sessions()?
            .store()
            .outbox(done)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .filter(|i| i.launch == launch.id)
            .map(|i| {
                let summary: serde_json::Value =
                    serde_json::from_str(&i.summary).unwrap_or_default();
                let what = summary["what"].as_str().unwrap_or("Saved").to_string();
                let words = match i.status.as_str() {
                    "sent" => what,
                    _ => format!("{what} ({})", i.last_error.unwrap_or_default()),
                };
                let words = if q.again.is_some() {
                    format!("This form had been sent already, nothing new was recorded. {words}")
                } else {
                    words
                };
                (i.status, words)
            });
    }
    render(page)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
    patient: Option<String>,
}

/// Check a form's CSRF token against its launch's, in constant time so it
/// cannot be guessed byte by byte.
pub(super) fn check_csrf(launch: &Launch, token: &str) -> Result<(), AppError> {
    let (a, b) = (launch.csrf.as_bytes(), token.as_bytes());
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if same {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "This form has expired; reload the page and try again.".into(),
        ))
    }
}

async fn choose_patient(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let mut launch = open_launch(&state, &jar, &id).await?;
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
    jar: CookieJar,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    check_csrf(&launch, &form.csrf)?;
    launch.sessions().logout(&launch).await?;
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
