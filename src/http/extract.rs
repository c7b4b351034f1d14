//! What a handler is given of its launch before it runs: axum extractors
//! that open the launch `{id}` of the path (`/l/{id}/…`) with the browser's
//! cookie, so that no handler opens one itself and every page refuses alike
//! a launch that is not this browser's or has expired. Some also check what
//! the page needs of the launch: a patient in context ([`PatientLaunch`]),
//! or a coordinator's sign-in and its EHR's queue ([`Coordinator`]). A
//! request a page makes by itself opens its launch quietly
//! ([`QuietCoordinator`]: the queue's live updates are the only such
//! requests), so an open page does not keep an idle launch alive.
//!
//! Also what a launch's forms are checked by: the CSRF token
//! ([`check_csrf`]) and the write id ([`WriteId`]); and who is signed in
//! ([`practitioner_of`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::{AppError, AppState};
use crate::auth::keys::random_token;
use crate::auth::session::Launch;
use crate::auth::smart::AuthError;
use crate::fhir::Id;
use crate::queue::Queue;

/// The one cookie Passerelle sets: the browser's id, given by a launch.
pub const BROWSER_COOKIE: &str = "__Host-passerelle";

/// The browser's id, from its cookie.
pub(super) fn existing_browser(jar: &CookieJar) -> Result<String, AppError> {
    jar.get(BROWSER_COOKIE)
        .map(|c| c.value().to_string())
        .ok_or(AppError::Auth(AuthError::WrongLaunch))
}

/// Open this browser's launch `id`; `touch` starts its idle clock again.
async fn open_launch(
    state: &AppState,
    jar: &CookieJar,
    id: &str,
    touch: bool,
) -> Result<Launch, AppError> {
    let browser = existing_browser(jar)?;
    Ok(state.sessions()?.open_with(id, &browser, touch).await?)
}

/// Open the launch the request's path names.
async fn open(parts: &mut Parts, state: &AppState, touch: bool) -> Result<Launch, Response> {
    let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let id = params
        .remove("id")
        .ok_or_else(|| AppError::internal("a launch's route has no {id}").into_response())?;
    let jar = CookieJar::from_headers(&parts.headers);
    open_launch(state, &jar, &id, touch)
        .await
        .map_err(IntoResponse::into_response)
}

/// The FHIR id a page's address names after its launch (`/l/{id}/task/{tid}`
/// and the like), validated before anything else: an address that does not
/// name a valid id is a clear 400, and never reaches a request URL.
pub(super) struct ResourceId(pub Id);

impl FromRequestParts<AppState> for ResourceId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::internal("a page's route has no parameters"))?;
        let (_, value) = params
            .into_iter()
            .find(|(name, _)| name != "id")
            .ok_or_else(|| AppError::internal("a page's route names no resource"))?;
        Id::parse(value).map(ResourceId).map_err(|_| {
            AppError::BadRequest(
                "This address does not name a valid record; go back and reload the page.".into(),
            )
        })
    }
}

/// The launch of a page the user asked for: its idle clock starts again.
pub(super) struct Launched(pub Launch);

impl FromRequestParts<AppState> for Launched {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        open(parts, state, true).await.map(Launched)
    }
}

/// The patient in context of `launch`, or the words asking for one.
pub(super) fn patient_of(launch: &Launch) -> Result<String, AppError> {
    launch
        .context
        .patient
        .clone()
        .ok_or_else(|| AppError::BadRequest("Choose a patient first.".into()))
}

/// A launch with a patient in context, for the pages of a chart.
pub(super) struct PatientLaunch {
    pub launch: Launch,
    /// The patient's id.
    pub patient: String,
}

impl FromRequestParts<AppState> for PatientLaunch {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let launch = open(parts, state, true).await?;
        let patient = patient_of(&launch).map_err(IntoResponse::into_response)?;
        Ok(PatientLaunch { launch, patient })
    }
}

/// A coordinator's launch and the queue of its EHR. Only a launch with no
/// patient in context and a `user/` Task grant is one: the queue shows
/// every patient's tasks, which a launch for one patient, or a `patient/`
/// grant, must not.
pub(super) struct Coordinator {
    pub launch: Launch,
    pub queue: Arc<Queue>,
}

impl Coordinator {
    /// `launch` as a coordinator's, or why it is not one.
    pub(super) fn of(state: &AppState, launch: Launch) -> Result<Coordinator, AppError> {
        if launch.context.patient.is_some() {
            return Err(AppError::BadRequest(
                "The queue is for a coordinator's sign-in (the follow-up queue), not a patient's chart.".into(),
            ));
        }
        if !launch.granted.allows_user("Task", 's') {
            return Err(AppError::BadRequest(
                "The EHR did not grant this sign-in access to Tasks across patients (user/Task.rs)."
                    .into(),
            ));
        }
        let queue = state.queue(&launch.iss).cloned().ok_or_else(|| {
            AppError::NotConfigured(
                "The queue needs Backend Services configured for this EHR (\"backend\" in PASSERELLE_EHRS).",
            )
        })?;
        Ok(Coordinator { launch, queue })
    }

    /// What this coordinator may see of the queue: the Tasks their own
    /// token can read (see [`Queue::visible_to`]).
    pub(super) async fn visible(
        &self,
        state: &AppState,
    ) -> Result<crate::queue::Visible, AppError> {
        let client = self
            .launch
            .fhir_client(state.http().clone(), state.limits())?;
        Ok(self.queue.visible_to(&self.launch.id, &client).await?)
    }

    /// The patterns view counts every patient of the practice: it is for a
    /// user whose own token can read every Task of the queue, and refused to
    /// one from whom the EHR hides some.
    pub(super) async fn require_whole_practice(&self, state: &AppState) -> Result<(), AppError> {
        let visible = self.visible(state).await?;
        if visible.hidden > 0 {
            return Err(AppError::Forbidden(
                "The patterns view counts every patient of the practice, and your EHR account cannot read all of them, so it is not shown to you.".into(),
            ));
        }
        Ok(())
    }

    /// The coordinator's launch `id`, for a handler that knows only from the
    /// request's query whether the page asked for it (`touch`) or the user.
    pub(super) async fn open(
        state: &AppState,
        jar: &CookieJar,
        id: &str,
        touch: bool,
    ) -> Result<Coordinator, AppError> {
        let launch = open_launch(state, jar, id, touch).await?;
        Coordinator::of(state, launch)
    }
}

impl FromRequestParts<AppState> for Coordinator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let launch = open(parts, state, true).await?;
        Coordinator::of(state, launch).map_err(IntoResponse::into_response)
    }
}

/// [`Coordinator`] for a request the queue page makes by itself (its live
/// updates): the launch's idle clock is left alone, so an open page does not
/// keep an idle launch alive.
pub(super) struct QuietCoordinator(pub Coordinator);

impl FromRequestParts<AppState> for QuietCoordinator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let launch = open(parts, state, false).await?;
        Coordinator::of(state, launch)
            .map(QuietCoordinator)
            .map_err(IntoResponse::into_response)
    }
}

/// Check a form's CSRF token against its launch's, in constant time so it
/// cannot be guessed byte by byte.
pub(super) fn check_csrf(launch: &Launch, token: &str) -> Result<(), AppError> {
    if crate::auth::same_secret(&launch.csrf, token) {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "This form has expired; reload the page and try again.".into(),
        ))
    }
}

/// The id of a write, as a form posts it back: made by the page when it is
/// shown ([`WriteId::fresh`]), it keys every resource the form records, so
/// sending the form twice records once. [`WriteId::check`] refuses one that
/// no page made.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub(super) struct WriteId(String);

impl WriteId {
    /// A new id, for a page's form to carry.
    pub(super) fn fresh() -> WriteId {
        WriteId(random_token(16))
    }

    /// The id, if it is one a page made: letters, digits, - and _, 16 to 64
    /// of them.
    pub(super) fn check(&self) -> Result<&str, AppError> {
        let id = self.0.as_str();
        if id.len() < 16
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AppError::BadRequest(
                "This form has no valid id; reload the page.".into(),
            ));
        }
        Ok(id)
    }
}

impl From<String> for WriteId {
    fn from(id: String) -> Self {
        WriteId(id)
    }
}

impl std::fmt::Display for WriteId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The signed-in user as a relative reference (`Practitioner/7`,
/// `PractitionerRole/3`, …), from the launch's `fhirUser`.
pub(super) fn user_reference(launch: &Launch) -> Option<String> {
    launch
        .context
        .fhir_user
        .as_deref()
        .and_then(relative_reference)
}

/// `Practitioner/…` of the signed-in user, when they are a practitioner.
pub(super) fn practitioner_of(launch: &Launch) -> Option<String> {
    launch
        .context
        .fhir_user
        .as_deref()
        .and_then(relative_reference)
        .filter(|r| r.starts_with("Practitioner/"))
}

/// `http://ehr/fhir/Practitioner/7` → `Practitioner/7`.
fn relative_reference(url: &str) -> Option<String> {
    let mut parts = url.trim_end_matches('/').rsplit('/');
    let id = parts.next()?;
    let kind = parts.next()?;
    Some(format!("{kind}/{id}"))
}
