//! What a handler answers: a page ([`render`]) or an error, which the user
//! reads with the right status code. The internal cause is logged (without
//! patient data); the page says what happened and what to do.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::auth::smart::AuthError;
use crate::fhir::{FhirError, ReadError};

/// A page, rendered from its template.
pub(super) fn render(t: impl Template) -> Result<Response, AppError> {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(AppError::from)
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The FHIR base is not one this Passerelle may open.
    #[error(
        "This FHIR server is not on Passerelle's list of servers it may open, so nothing was requested from it."
    )]
    ServerNotAllowed,
    #[error("{0}")]
    BadRequest(String),
    /// The request is understood but a rule forbids it (422); the message
    /// names the rule and says nothing was recorded.
    #[error("{0}")]
    Unprocessable(String),
    /// The user's own access at the EHR does not cover this page.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Fhir(#[from] FhirError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A setting this page needs is missing: the administrator's to fix,
    /// not the user's; the message names the setting.
    #[error("{0}")]
    NotConfigured(&'static str),
    /// The request's deadline passed before its page was ready.
    #[error("Passerelle could not answer within {0} s.")]
    TooSlow(u64),
    /// Too many launches from one address; it may start again in this many seconds.
    #[error(
        "Too many sign-ins were started from this address in the last minute (try again in {0} s)."
    )]
    TooManyLaunches(u64),
    /// A fault inside Passerelle. The source is kept for the log; the page
    /// shows only that something failed.
    #[error("Something went wrong inside Passerelle; the details are in its log.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// An internal fault described in words (for a broken invariant that has
    /// no error value of its own).
    pub fn internal(what: &'static str) -> Self {
        AppError::Internal(what.into())
    }
}

/// Every other layer's failure that a user cannot act on becomes
/// [`AppError::Internal`], its source kept for the log.
macro_rules! internal_from {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError::Internal(Box::new(e))
            }
        })*
    };
}

internal_from!(
    crate::store::StoreError,
    crate::domain::letter::LetterError,
    serde_json::Error,
    askama::Error,
    csv::Error,
    time::error::ComponentRange,
    time::error::Format,
    axum::http::header::InvalidHeaderValue,
);

/// A read the page asked for: the server's failure, or what cannot be
/// shown, said to the user as a bad request.
impl From<ReadError> for AppError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Fhir(e) => AppError::Fhir(e),
            ReadError::Refused(words) => AppError::BadRequest(words),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
    hint: &'a str,
}

impl AppError {
    fn status(&self) -> StatusCode {
        match self {
            AppError::ServerNotAllowed => StatusCode::FORBIDDEN,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::NotConfigured(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::TooManyLaunches(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::TooSlow(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Auth(e) => match e {
                AuthError::UnknownIss(_)
                | AuthError::WrongLaunch
                | AuthError::Refused(_)
                | AuthError::ResponseIssuer(_)
                | AuthError::WrongRedirect => StatusCode::FORBIDDEN,
                AuthError::Discovery(_) | AuthError::Unsupported(_) => StatusCode::BAD_GATEWAY,
                AuthError::BadState => StatusCode::BAD_REQUEST,
                AuthError::IdToken(_) | AuthError::LaunchAgain => StatusCode::UNAUTHORIZED,
                AuthError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
                AuthError::Busy | AuthError::RefreshPending => StatusCode::SERVICE_UNAVAILABLE,
            },
            AppError::Fhir(e) => match e {
                FhirError::NotFound { .. } => StatusCode::NOT_FOUND,
                FhirError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
                FhirError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                FhirError::RateLimited { .. } => StatusCode::SERVICE_UNAVAILABLE,
                FhirError::Conflict { .. } => StatusCode::CONFLICT,
                FhirError::Request(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            },
        }
    }

    fn title_and_hint(&self) -> (&'static str, &'static str) {
        match self {
            AppError::ServerNotAllowed => (
                "Server not allowed",
                "An administrator can add it to PASSERELLE_OPEN_SERVERS if it is meant to be opened without authorization.",
            ),
            AppError::BadRequest(_) => (
                "Incomplete request",
                "Open Passerelle again from the EHR or from its home page.",
            ),
            AppError::Unprocessable(_) => (
                "Not recorded",
                "Nothing was sent. The message above says what is missing.",
            ),
            AppError::Forbidden(_) => (
                "Not available to your account",
                "Your access is set in the EHR; ask its administrator if you need more.",
            ),
            AppError::Internal(_) => (
                "Passerelle failed",
                "Try again; if it happens again, tell your administrator.",
            ),
            AppError::NotConfigured(_) => (
                "Passerelle is not set up for this",
                "This is a setting, not something you did: tell your administrator, and give them the message above.",
            ),
            AppError::TooSlow(_) => (
                "Passerelle is slow to answer",
                "Try again in a moment; nothing you sent was lost (writes are kept until the EHR has them).",
            ),
            AppError::TooManyLaunches(_) => (
                "Please wait a moment",
                "Open Passerelle again from the EHR in a minute. If this address is shared by the whole practice, tell your administrator (PASSERELLE_LAUNCHES_PER_MINUTE).",
            ),
            AppError::Auth(e) => match e {
                AuthError::UnknownIss(_) => (
                    "EHR not allowed",
                    "An administrator can add this EHR to Passerelle's list (PASSERELLE_EHRS).",
                ),
                AuthError::LaunchAgain | AuthError::BadState | AuthError::WrongLaunch => (
                    "Launch again from the EHR",
                    "Open Passerelle again from the patient's chart.",
                ),
                AuthError::Config(_) => (
                    "Passerelle is not configured correctly",
                    "Tell your administrator.",
                ),
                AuthError::Busy => (
                    "Please wait a moment",
                    "Open Passerelle again from the EHR in a few minutes.",
                ),
                AuthError::RefreshPending => ("Please wait a moment", "Reload the page."),
                _ => (
                    "The sign-in did not succeed",
                    "Try again from the EHR; if it happens again, tell your administrator.",
                ),
            },
            AppError::Fhir(e) => match e {
                FhirError::NotFound { .. } => {
                    ("Not found", "Check the patient or encounter you opened.")
                }
                FhirError::Unauthorized { .. } => (
                    "Launch again from the EHR",
                    "Your authorization has ended; open Passerelle again from the patient's chart.",
                ),
                FhirError::Conflict { .. } => (
                    "Changed by someone else",
                    "Reload to see the current version.",
                ),
                e if e.is_transient() => (
                    "The EHR's FHIR server did not answer",
                    "Try again in a moment.",
                ),
                _ => (
                    "The EHR's FHIR server sent something Passerelle cannot use",
                    "Tell your administrator; the log names the resource type at fault.",
                ),
            },
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            AppError::Internal(cause) => {
                tracing::error!(cause = %Chain(cause.as_ref()), "internal error")
            }
            AppError::NotConfigured(what) => {
                tracing::warn!(setting = what, "a page needs a setting that is missing")
            }
            AppError::Fhir(e) => tracing::warn!(
                kind = e.kind(),
                status = status.as_u16(),
                "FHIR error shown to the user"
            ),
            AppError::Auth(e) => {
                tracing::warn!(
                    status = status.as_u16(),
                    reason = auth_kind(e),
                    "launch refused"
                )
            }
            _ => tracing::info!(status = status.as_u16(), "request refused"),
        }
        let (title, hint) = self.title_and_hint();
        let page = ErrorPage {
            title,
            message: self.to_string(),
            hint,
        };
        let mut response = match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, self.to_string()).into_response(),
        };
        if let AppError::TooManyLaunches(secs) = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

fn auth_kind(e: &AuthError) -> &'static str {
    match e {
        AuthError::UnknownIss(_) => "unknown-iss",
        AuthError::Discovery(_) => "discovery",
        AuthError::Unsupported(_) => "unsupported",
        AuthError::Refused(_) => "refused",
        AuthError::BadState => "bad-state",
        AuthError::IdToken(_) => "id-token",
        AuthError::ResponseIssuer(_) => "response-issuer",
        AuthError::WrongRedirect => "wrong-redirect",
        AuthError::LaunchAgain => "launch-again",
        AuthError::WrongLaunch => "wrong-launch",
        AuthError::Config(_) => "config",
        AuthError::Busy => "busy",
        AuthError::RefreshPending => "refresh-pending",
    }
}

/// An error and its sources, one after the other, for the log.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    async fn page(e: AppError) -> (StatusCode, String) {
        let response = e.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_missing_setting_is_a_503_that_names_it_and_sends_the_user_to_the_administrator() {
        let (status, html) = page(AppError::NotConfigured(
            "No EHR is configured for SMART launches on this Passerelle (PASSERELLE_EHRS).",
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(html.contains("Passerelle is not set up for this"), "{html}");
        assert!(html.contains("PASSERELLE_EHRS"), "{html}");
        assert!(html.contains("tell your administrator"), "{html}");
        assert!(!html.contains("Incomplete request"), "{html}");
    }

    #[tokio::test]
    async fn an_internal_error_keeps_its_source_for_the_log_and_never_shows_it() {
        let cause = serde_json::from_str::<serde_json::Value>("{oops").unwrap_err();
        let e = AppError::from(cause);
        assert!(e.source().is_some(), "the source is kept");
        let logged = match &e {
            AppError::Internal(c) => Chain(c.as_ref()).to_string(),
            _ => unreachable!(),
        };
        assert!(logged.contains("key must be a string"), "{logged}");
        let (status, html) = page(e).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!html.contains("key must be a string"), "{html}");
        assert!(html.contains("the details are in its log"), "{html}");
    }
}
