//! The FHIR layer's one error type: each variant says, in words a clinician or
//! an integrator can act on, what went wrong with the FHIR server. None of
//! them carries patient data: decoding errors name a JSON path, never a value.
//!
//! [`ReadError`] is what a read on behalf of a page can also answer: that what
//! the page asked for is not to be shown (not a valid id, another patient's).

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FhirError {
    #[error("The FHIR server at {base} could not be reached.")]
    Unreachable { base: String },

    #[error("The FHIR server did not answer within {} s.", .after.as_secs())]
    Timeout { after: Duration },

    #[error("The FHIR server no longer accepts this authorization (401). {message}")]
    Unauthorized { message: String },

    #[error("{what} was not found on the FHIR server.")]
    NotFound { what: String },

    #[error("The FHIR server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },

    #[error("Someone else changed this record first ({status}). {message}")]
    Conflict { status: u16, message: String },

    #[error("The FHIR server is busy and asked us to slow down (429){}.", .retry_after.map(|s| format!("; try again in {s} s")).unwrap_or_default())]
    RateLimited { retry_after: Option<u64> },

    #[error("The FHIR server failed ({status}): {message}")]
    Server { status: u16, message: String },

    /// A transaction the server answered 2xx as a whole but not entry by
    /// entry (FHIR R4 http.html#transaction-response): `index` is the
    /// position in `Bundle.entry`, `status` the entry's HTTP status.
    #[error("The FHIR server did not record Bundle.entry[{index}] ({resource_type}): {status_line}{}", .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    EntryFailed {
        index: usize,
        resource_type: String,
        status: u16,
        status_line: String,
        message: Option<String>,
    },

    #[error("The FHIR server sent more than {limit} bytes; the answer was refused.")]
    TooLarge { limit: usize },

    #[error("The FHIR server sent {what} that is not valid FHIR R4 ({detail}).")]
    Invalid { what: String, detail: String },

    #[error("{resource_type} does not conform to the FHIR R4 schema: {}", .problems.join("; "))]
    Schema {
        resource_type: String,
        problems: Vec<String>,
    },

    #[error("The FHIR request could not be made: {0}")]
    Request(String),

    /// A FHIR Bulk Data export still in progress when the bound on its wait
    /// ran out (it is then cancelled with `DELETE`).
    #[error("The FHIR server's Bulk Data export was not complete after {} s, the longest Passerelle waits.", .after.as_secs())]
    ExportTooSlow { after: Duration },
}

impl FhirError {
    /// Worth trying again later (the user can press reload, the outbox can resend).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FhirError::Unreachable { .. }
                | FhirError::Timeout { .. }
                | FhirError::RateLimited { .. }
                | FhirError::Server { .. }
        ) || matches!(self, FhirError::EntryFailed { status, .. } if *status == 429 || *status >= 500)
    }

    /// A short kind for log lines and metrics (never the message, which may
    /// quote the server).
    pub fn kind(&self) -> &'static str {
        match self {
            FhirError::Unreachable { .. } => "unreachable",
            FhirError::Timeout { .. } => "timeout",
            FhirError::Unauthorized { .. } => "unauthorized",
            FhirError::NotFound { .. } => "not-found",
            FhirError::Refused { .. } => "refused",
            FhirError::Conflict { .. } => "conflict",
            FhirError::RateLimited { .. } => "rate-limited",
            FhirError::Server { .. } => "server-error",
            FhirError::EntryFailed { .. } => "entry-failed",
            FhirError::TooLarge { .. } => "too-large",
            FhirError::Invalid { .. } => "invalid",
            FhirError::Schema { .. } => "schema",
            FhirError::Request(_) => "request",
            FhirError::ExportTooSlow { .. } => "export-too-slow",
        }
    }
}

/// Why a read a page asked for gives nothing: the server failed, or what
/// was named cannot be shown (it is not a valid id, or it is not about the
/// patient in context), which is said in words for the user.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error(transparent)]
    Fhir(#[from] FhirError),
    #[error("{0}")]
    Refused(String),
}

impl ReadError {
    pub(crate) fn refused(words: &str) -> ReadError {
        ReadError::Refused(words.to_string())
    }
}
