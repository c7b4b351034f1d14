//! The pages' side of the outbox ([`crate::outbox`]): a page keeps each write
//! in Passerelle's store and sends it once at once ([`write_through`]), then
//! shows what became of it ([`written`], [`done_url`]). The resending, after
//! a failure or a restart, is the outbox's worker's.

use serde_json::Value;

use super::{AppError, AppState};
use crate::store::OutboxItem;

/// Keep a write in Passerelle's store, then send it once now: nothing is
/// lost if the FHIR server fails, the outbox sends it again. `id` is the
/// write's idempotency key; a second POST with the same id sends nothing
/// new. Returns false when that id had been written before.
pub(super) async fn write_through(
    state: &AppState,
    launch_id: &str,
    id: &str,
    bundle: &Value,
    summary: &Value,
) -> Result<bool, AppError> {
    let sessions = state.sessions()?;
    let payload = serde_json::to_vec(bundle)?;
    let new = sessions
        .store()
        .put_outbox(id, launch_id, &payload, &summary.to_string())
        .await?;
    // Claimed, not only read: with several instances, the outbox worker of
    // another one does not send it at the same time.
    if let Some(item) = sessions.store().claim_outbox(id).await? {
        crate::outbox::send(sessions, &item, state.http().clone(), state.limits()).await;
    }
    Ok(new)
}

/// The write `id` of launch `launch_id`, as the outbox has it now; `None`
/// for a write of another launch.
pub(super) async fn written(
    state: &AppState,
    launch_id: &str,
    id: &str,
) -> Result<Option<OutboxItem>, AppError> {
    Ok(state
        .sessions()?
        .store()
        .outbox(id)
        .await?
        .filter(|i| i.launch == launch_id))
}

/// The visit page showing what became of write `id`; `new` false when the
/// same form had been sent before (nothing new was recorded).
pub(super) fn done_url(launch: &str, id: &str, new: bool) -> String {
    format!(
        "/l/{launch}/visit?done={id}{}",
        if new { "" } else { "&again=1" }
    )
}
