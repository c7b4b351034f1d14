//! The outbox: every write a clinician makes is kept in Passerelle's store
//! (sealed) before it is sent, and sent again until the FHIR server has it.
//! Writes are idempotent (conditional creates on identifiers), so sending
//! again after a lost answer records nothing twice. A worker resends what is
//! pending, also after a restart.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::session::Sessions;
use crate::fhir::{FhirError, Limits};
use crate::store::OutboxItem;

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Kept, to be sent again (the server failed or could not be reached).
    Pending(String),
    /// The server refused it for good (the message says why); kept in the store.
    Failed(String),
}

/// Send one item through its launch and record the attempt. Sent means
/// the server's answer was read entry by entry
/// ([`crate::fhir::bundle::check_transaction_response`]), not just a 2xx;
/// an entry refused with 429 or 5xx keeps the write pending (it may
/// succeed later), with another 4xx failed (kept, with the entry named).
pub async fn send(
    sessions: &Arc<Sessions>,
    item: &OutboxItem,
    http: reqwest::Client,
    limits: Limits,
) -> Outcome {
    let outcome = match sessions.client_for(&item.launch, http, limits).await {
        Err(e) => Outcome::Pending(format!(
            "waiting for a launch from the EHR to send it ({e})"
        )),
        Ok(client) => match serde_json::from_slice(&item.payload) {
            Err(_) => Outcome::Failed("the kept write could not be read".into()),
            Ok(bundle) => match client.transaction(&bundle).await {
                Ok(_) => Outcome::Sent,
                Err(e) if e.is_transient() || matches!(e, FhirError::Unauthorized { .. }) => {
                    Outcome::Pending(e.to_string())
                }
                Err(e) => Outcome::Failed(e.to_string()),
            },
        },
    };
    let recorded = match &outcome {
        Outcome::Sent => Ok(()),
        Outcome::Pending(m) => Err((m.as_str(), false)),
        Outcome::Failed(m) => Err((m.as_str(), true)),
    };
    if let Err(e) = sessions.store().outbox_attempt(&item.id, recorded).await {
        tracing::error!(error = %e, "the outbox could not record an attempt");
    }
    match &outcome {
        Outcome::Sent => tracing::info!(attempts = item.attempts + 1, "outbox write sent"),
        Outcome::Pending(_) => {
            tracing::info!(attempts = item.attempts + 1, "outbox write kept for later")
        }
        Outcome::Failed(_) => tracing::warn!(
            attempts = item.attempts + 1,
            "outbox write refused by the server"
        ),
    }
    outcome
}

/// Send everything pending, every `every`, until the process stops.
pub async fn worker(
    sessions: Arc<Sessions>,
    http: reqwest::Client,
    limits: Limits,
    every: Duration,
) {
    loop {
        match sessions.store().pending_outbox(50).await {
            Ok(items) => {
                for item in items {
                    send(&sessions, &item, http.clone(), limits).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "the outbox could not be read"),
        }
        tokio::time::sleep(every).await;
    }
}
