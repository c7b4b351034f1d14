//! Following a Task up from the visit (or the queue): `GET
//! /l/{launch}/task/{id}` shows a referral, appeal or patient Task, its
//! inputs, outputs, notes and letters; `POST` changes its status through
//! its state machine (a referral's, [`crate::domain::referral`]; a Task for
//! the patient's, [`crate::domain::patient_task`]), with `If-Match` on the
//! version shown, so nobody overwrites someone else's change: a conflict
//! shows the task as it is now with the user's change kept to apply again
//! (409), a move the machine forbids names its rule (422). Moves that
//! belong to the performer are offered apart, labelled as recorded on its
//! behalf, and the Task gets a note saying so ([`crate::fhir::task`]).

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::clock::{now_fhir, today};
use super::error::render;
use super::extract::{Launched, ResourceId, check_csrf, practitioner_of};
use super::{AppError, AppState};
use crate::auth::session::Launch;
use crate::domain::appeal::AppealOutcome;
use crate::domain::coverage::{DeadlineWarning, deadline_warning};
use crate::domain::referral::{Party, Status, next};
use crate::fhir::task::{TaskRead, stamped};

pub fn router() -> Router<AppState> {
    Router::new().route("/l/{id}/task/{tid}", get(task_page).post(change_task))
}

/// A button the task page offers: a status, and on whose behalf.
struct Move {
    value: String,
    label: String,
    needs_reason: bool,
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    launch_id: String,
    csrf: String,
    task_id: String,
    version: String,
    title: String,
    kind: String,
    is_appeal: bool,
    status: String,
    status_reason: String,
    business_status: String,
    /// Whose moves `theirs` are: "the service", "the patient".
    performer: String,
    priority: String,
    owner: String,
    authored: String,
    deadline: String,
    deadline_warning: String,
    /// (label, value) of the Task's inputs, the denial's words verbatim.
    inputs: Vec<(String, String)>,
    outputs: Vec<String>,
    notes: Vec<(String, String)>,
    ours: Vec<Move>,
    theirs: Vec<Move>,
    outcomes: Vec<(String, String)>,
    /// (id, title, date) of letters related to this Task.
    letters: Vec<(String, String, String)>,
    /// A change that could not be saved, kept to apply again.
    conflict: Option<String>,
    kept: ChangeForm,
    /// Opened from the queue (a launch without a patient).
    from_queue: bool,
}

fn move_label(s: Status) -> &'static str {
    match s {
        Status::Draft => "Back to draft",
        Status::Requested => "Send the request",
        Status::Received => "Received",
        Status::Accepted => "Accepted",
        Status::Rejected => "Declined",
        Status::Ready => "Ready",
        Status::Cancelled => "Cancel",
        Status::InProgress => "In progress",
        Status::OnHold => "On hold",
        Status::Failed => "Could not be done",
        Status::Completed => "Completed",
        Status::EnteredInError => "Entered in error",
    }
}

/// The buttons for `party`, from the machine of the Task's kind.
fn moves(from: Status, party: Party, patient_task: bool) -> Vec<Move> {
    let key = match party {
        Party::Requester => "requester",
        Party::Performer => "performer",
    };
    let (to, needs_reason): (Vec<Status>, &[Status]) = if patient_task {
        (
            crate::domain::patient_task::next(from, party),
            &crate::domain::patient_task::NEEDS_REASON,
        )
    } else {
        (next(from, party), &crate::domain::referral::NEEDS_REASON)
    };
    to.into_iter()
        .map(|s| Move {
            value: format!("{key}:{}", s.code()),
            label: move_label(s).to_string(),
            needs_reason: needs_reason.contains(&s),
        })
        .collect()
}

fn input_label(code: &str) -> &str {
    match code {
        "notice-date" => "Notice date",
        "payer" => "Payer",
        "denied-item" => "Denied",
        "denial-reason" => "Reason code",
        "denial-text" => "Payer's words",
        "deadline-basis" => "Deadline from",
        "decision-due" => "Expedited decision due",
        other => other,
    }
}

#[derive(Deserialize, Default)]
struct TaskQuery {
    /// A letter for this task had been stored already.
    again: Option<String>,
}

async fn task_page(
    State(state): State<AppState>,
    ResourceId(tid): ResourceId,
    Query(q): Query<TaskQuery>,
    Launched(launch): Launched,
) -> Result<Response, AppError> {
    let notice = q.again.map(|_| {
        "This letter had been stored already: nothing new was recorded. Draft it again to store another version.".to_string()
    });
    show_task(&state, &launch, &tid, notice, ChangeForm::default()).await
}

async fn show_task(
    state: &AppState,
    launch: &Launch,
    tid: &str,
    conflict: Option<String>,
    kept: ChangeForm,
) -> Result<Response, AppError> {
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let patient = launch.patient_ref();
    let (task, letters) = tokio::join!(
        crate::fhir::task::read(&client, patient.as_deref(), tid),
        crate::fhir::letter::related(&client, tid, patient.as_deref()),
    );
    let TaskRead {
        view: task,
        version,
        ..
    } = task?;
    let status = Status::parse(task.status.as_deref().unwrap_or_default());
    let deadline = task.deadline.clone().unwrap_or_default();
    let warning = crate::domain::iso_date(&deadline)
        .and_then(|d| deadline_warning(d, today()))
        .map(|w| match w {
            DeadlineWarning::Overdue { days_late } => format!("Overdue by {days_late} day(s)"),
            DeadlineWarning::DueSoon { days_left: 0, .. } => "Due today".to_string(),
            DeadlineWarning::DueSoon { days_left, .. } => format!("Due in {days_left} day(s)"),
        })
        .unwrap_or_default();
    // Appeals are the practice's own work: one set of buttons. Referrals
    // show what the practice may do and what the service reports apart.
    let patient_task = task.is_patient_task;
    let (ours, theirs) = match status {
        Some(s) if task.is_appeal => {
            let mut all = moves(s, Party::Performer, false);
            all.extend(
                moves(s, Party::Requester, false)
                    .into_iter()
                    .filter(|m| !m.value.ends_with(":cancelled")),
            );
            (all, vec![])
        }
        Some(s) => (
            moves(s, Party::Requester, patient_task),
            moves(s, Party::Performer, patient_task),
        ),
        None => (vec![], vec![]),
    };
    let performer = if patient_task {
        "the patient".to_string()
    } else {
        task.owner
            .clone()
            .unwrap_or_else(|| "the service".to_string())
    };
    render(TaskPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        task_id: tid.to_string(),
        version,
        title: task
            .description
            .unwrap_or_else(|| "(no description)".to_string()),
        kind: task.display.or(task.code).unwrap_or_default(),
        is_appeal: task.is_appeal,
        status: task.status.unwrap_or_default(),
        status_reason: task.status_reason.unwrap_or_default(),
        business_status: task.business_status.unwrap_or_default(),
        performer,
        priority: task.priority.unwrap_or_else(|| "routine".to_string()),
        owner: task.owner.unwrap_or_else(|| "unassigned".to_string()),
        authored: task.authored.unwrap_or_default(),
        deadline,
        deadline_warning: warning,
        inputs: task
            .inputs
            .into_iter()
            .map(|(code, value)| (input_label(&code).to_string(), value))
            .collect(),
        outputs: task.outputs,
        notes: task.notes,
        ours,
        theirs,
        outcomes: AppealOutcome::ALL
            .iter()
            .map(|o| (o.code().to_string(), o.label().to_string()))
            .collect(),
        letters: letters.unwrap_or_default(),
        conflict,
        kept,
        from_queue: launch.context.patient.is_none(),
    })
}

#[derive(Deserialize, Default, Clone)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    version: String,
    /// `requester:<status>` or `performer:<status>`.
    #[serde(default)]
    to: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    outcome: String,
}

async fn change_task(
    State(state): State<AppState>,
    ResourceId(tid): ResourceId,
    Launched(launch): Launched,
    AxumForm(form): AxumForm<ChangeForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let (party, to) = form
        .to
        .split_once(':')
        .and_then(|(p, s)| {
            let party = match p {
                "requester" => Party::Requester,
                "performer" => Party::Performer,
                _ => return None,
            };
            Some((party, Status::parse(s)?))
        })
        .ok_or_else(|| AppError::BadRequest("Choose what happened to the task.".into()))?;
    if form.version.is_empty() {
        return Err(AppError::BadRequest(
            "This form has no version of the task; reload the page.".into(),
        ));
    }
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let TaskRead {
        resource: current,
        version,
        view,
    } = crate::fhir::task::read(&client, launch.patient_ref().as_deref(), &tid).await?;
    let author = practitioner_of(&launch);
    let now = now_fhir()?;
    let is_appeal = view.is_appeal;
    let outcome = AppealOutcome::parse(&form.outcome).filter(|_| is_appeal);
    if is_appeal && to == Status::Completed && outcome.is_none() {
        let page = show_task(
            &state,
            &launch,
            &tid,
            Some("Say how the appeal ended (overturned, partly overturned or upheld) to complete it.".into()),
            form,
        )
        .await?;
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let change = crate::fhir::task::Change {
        to,
        party,
        reason: Some(form.reason.as_str()),
        note: Some(form.note.as_str()),
        author: author.as_deref(),
        outcome,
        now: &now,
    };
    // Someone changed the Task since this page was shown: nothing is sent,
    // and the user's change is kept on the page to apply again.
    if version != form.version {
        return conflict_page(
            &state,
            &launch,
            &tid,
            format!(
                "Someone changed this task while you had it open (it is now {}). Your change was not saved; it is kept below: check the task and apply it again.",
                view.status.as_deref().unwrap_or("changed")
            ),
            form,
        )
        .await;
    }
    let updated = match crate::fhir::task::apply(current, &change) {
        Ok(t) => t,
        Err(e) => {
            let page = show_task(&state, &launch, &tid, Some(e.to_string()), form).await?;
            return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    state.schema()?.validate(&updated)?;
    launch.check_write(&updated)?;
    match client.update(&updated, Some(&form.version)).await {
        Ok(saved) => {
            if let Some(queue) = state.queue(&launch.iss) {
                // The index keeps the version the server gave (its ETag).
                queue.written(&stamped(saved));
                // A completed referral may close its loop: the queue's own
                // sync (Backend Services) checks and does it, now.
                if to == Status::Completed {
                    queue.notify();
                }
            }
            Ok(Redirect::to(&format!("/l/{}/task/{tid}", launch.id)).into_response())
        }
        Err(crate::fhir::FhirError::Conflict { .. }) => {
            conflict_page(
                &state,
                &launch,
                &tid,
                "Someone changed this task at the same moment. Your change was not saved; it is kept below: check the task and apply it again.".to_string(),
                form,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// The task as it is now, with the user's change kept to apply again (409).
async fn conflict_page(
    state: &AppState,
    launch: &Launch,
    tid: &str,
    message: String,
    form: ChangeForm,
) -> Result<Response, AppError> {
    let page = show_task(state, launch, tid, Some(message), form).await?;
    Ok((axum::http::StatusCode::CONFLICT, page).into_response())
}
