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
    let store = sessions.store();
    // Kept already claimed, so no outbox worker (of this instance or
    // another) takes it first. A write kept before is sent now only if it
    // is still pending and no one holds it.
    let (new, item) = match store
        .put_outbox_claimed(id, launch_id, &payload, &summary.to_string())
        .await?
    {
        Some(item) => (true, Some(item)),
        None => (false, store.claim_outbox(id).await?),
    };
    if let Some(item) = item {
        // In a task of its own: if the person's browser goes away, the
        // send still ends and records its attempt, rather than leaving the
        // write claimed until the lease runs out.
        let (sessions, http, limits) = (sessions.clone(), state.http().clone(), state.limits());
        let sending =
            tokio::spawn(async move { crate::outbox::send(&sessions, &item, http, limits).await });
        if sending.await.is_err() {
            tracing::error!("sending a kept write stopped; the outbox will send it again");
        }
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
