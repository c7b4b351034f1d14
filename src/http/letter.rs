//! Letters: drafted from the chart, edited on the page, stored as a
//! DocumentReference (PDF and text) linked to the appeal Task, printable.
//!
//! * `GET /l/{launch}/letter?kind=appeal|lmn[&task=…][&lang=en|fr]` drafts
//!   the letter from the chart and the templates the practice edits, and
//!   lists what the chart did not have;
//! * `POST /l/{launch}/letter` stores the edited letter (refusing one that
//!   still has a placeholder for a missing fact unless the clinician says
//!   so) and returns to the Task;
//! * `GET /l/{launch}/letter/{id}/pdf` serves the stored PDF to print.

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::clock::{now_fhir, today};
use super::error::render;
use super::extract::{
    Launched, PatientLaunch, ResourceId, WriteId, check_csrf, patient_of, practitioner_of,
};
use super::outbox::{done_url, write_through};
use super::{AppError, AppState};
use crate::domain::letter::{LANGUAGES, LetterKind, placeholders_in};
use crate::fhir::letter::{LetterRecord, facts, read_chart, read_pdf};
use crate::fhir::people::clinician_name;
use crate::fhir::task;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/l/{id}/letter", get(draft).post(store))
        .route("/l/{id}/letter/{doc}/pdf", get(pdf))
}

#[derive(Deserialize, Default)]
struct DraftQuery {
    kind: Option<String>,
    task: Option<String>,
    lang: Option<String>,
}

#[derive(Template)]
#[template(path = "letter.html")]
struct LetterPage {
    launch_id: String,
    csrf: String,
    letter_id: String,
    kind: String,
    task: String,
    lang: String,
    title: String,
    text: String,
    missing: Vec<String>,
    /// Characters the PDF's font cannot show (they print as `?`).
    unencodable: String,
    errors: Vec<String>,
}

async fn draft(
    State(state): State<AppState>,
    Query(q): Query<DraftQuery>,
    PatientLaunch {
        launch,
        patient: patient_id,
    }: PatientLaunch,
) -> Result<Response, AppError> {
    let kind = LetterKind::parse(q.kind.as_deref().unwrap_or("appeal")).ok_or_else(|| {
        AppError::BadRequest("Choose an appeal letter or a letter of medical necessity.".into())
    })?;
    let lang = q
        .lang
        .filter(|l| LANGUAGES.contains(&l.as_str()))
        .unwrap_or_else(|| "en".into());
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let task_id = q.task.filter(|t| !t.is_empty());
    let task = match &task_id {
        Some(t) => Some(
            task::read(&client, launch.patient_ref().as_deref(), t)
                .await?
                .resource,
        ),
        None => None,
    };
    let practitioner = practitioner_of(&launch);
    let (chart, clinician) = tokio::join!(
        read_chart(&client, &patient_id, task),
        clinician_name(&client, practitioner.as_deref()),
    );
    let facts = facts(&chart?, &lang, today(), clinician, None);
    let d = state.letters().draft(kind, &facts)?;
    render(LetterPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        letter_id: WriteId::fresh().to_string(),
        kind: kind.code().to_string(),
        task: task_id.unwrap_or_default(),
        lang,
        unencodable: unencodable(&d.text),
        title: d.title,
        text: d.text,
        missing: d.missing,
        errors: vec![],
    })
}

fn unencodable(text: &str) -> String {
    let mut chars = crate::pdf::unencodable(text);
    chars.dedup();
    chars
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Deserialize)]
struct StoreForm {
    csrf: String,
    letter_id: WriteId,
    kind: String,
    #[serde(default)]
    task: String,
    lang: String,
    title: String,
    text: String,
    /// The clinician saw the placeholders and stores the letter anyway.
    #[serde(default)]
    with_gaps: String,
}

/// Longest letter accepted: far more than any letter, far less than harm.
const MAX_LETTER_CHARS: usize = 60_000;

async fn store(
    State(state): State<AppState>,
    Launched(launch): Launched,
    AxumForm(form): AxumForm<StoreForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let letter_id = form.letter_id.check()?;
    let patient_id = patient_of(&launch)?;
    let kind = LetterKind::parse(&form.kind)
        .ok_or_else(|| AppError::BadRequest("Unknown kind of letter.".into()))?;
    let lang = if LANGUAGES.contains(&form.lang.as_str()) {
        form.lang.clone()
    } else {
        "en".to_string()
    };
    let text = form.text.replace("\r\n", "\n");
    let title = form.title.trim().to_string();
    let mut errors = Vec::new();
    if text.trim().is_empty() {
        errors.push("The letter is empty.".to_string());
    }
    if text.chars().count() > MAX_LETTER_CHARS {
        errors.push(format!(
            "The letter is longer than {MAX_LETTER_CHARS} characters."
        ));
    }
    if title.is_empty() || title.chars().count() > 200 {
        errors.push("Give the letter a title (at most 200 characters).".to_string());
    }
    let gaps = placeholders_in(&text);
    if !gaps.is_empty() && form.with_gaps.is_empty() {
        errors.push(format!(
            "The letter still has {} placeholder(s) for facts the chart did not have: {}. Fill them in or remove them, or tick \"store it as it is\".",
            gaps.len(),
            gaps.iter().map(|g| g.message()).collect::<Vec<_>>().join("; ")
        ));
    }
    let task = Some(form.task.as_str()).filter(|t| !t.is_empty());
    if task.is_some_and(|t| !crate::fhir::client::is_valid_id(t)) {
        errors.push("The task id is not valid; reload the page.".to_string());
    }
    // The letter is linked to a Task of this launch's patient only.
    if let Some(t) = task.filter(|t| crate::fhir::client::is_valid_id(t)) {
        let client = launch.fhir_client(state.http().clone(), state.limits())?;
        task::read(&client, launch.patient_ref().as_deref(), t).await?;
    }
    if !errors.is_empty() {
        let page = render(LetterPage {
            launch_id: launch.id.clone(),
            csrf: launch.csrf.clone(),
            letter_id: letter_id.to_string(),
            kind: kind.code().to_string(),
            task: form.task.clone(),
            lang,
            unencodable: unencodable(&text),
            title,
            text,
            missing: gaps.iter().map(|g| g.message().to_string()).collect(),
            errors,
        })?;
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let pdf = crate::pdf::render(&title, &text);
    let patient = format!("Patient/{patient_id}");
    let author = practitioner_of(&launch);
    let encounter = launch
        .context
        .encounter
        .as_ref()
        .map(|e| format!("Encounter/{e}"));
    let task_ref = task.map(|t| format!("Task/{t}"));
    let date = now_fhir()?;
    let bundle = crate::fhir::letter::transaction(&LetterRecord {
        id: letter_id,
        patient: &patient,
        encounter: encounter.as_deref(),
        author: author.as_deref(),
        task: task_ref.as_deref(),
        kind,
        lang: &lang,
        title: &title,
        text: &text,
        pdf: &pdf,
        date: &date,
    });
    state.schema()?.validate_bundle(&bundle)?;
    launch.check_write(&bundle)?;
    let new = write_through(
        &state,
        &launch.id,
        letter_id,
        &bundle,
        &serde_json::json!({ "what": format!("{title} stored") }),
    )
    .await?;
    let to = match task {
        Some(t) if new => format!("/l/{}/task/{t}", launch.id),
        Some(t) => format!("/l/{}/task/{t}?again=1", launch.id),
        None => done_url(&launch.id, letter_id, new),
    };
    Ok(Redirect::to(&to).into_response())
}

async fn pdf(
    State(state): State<AppState>,
    ResourceId(doc): ResourceId,
    Launched(launch): Launched,
) -> Result<Response, AppError> {
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    // A chart's launch sees its patient's letters only; a coordinator's
    // launch (user-level access, no patient) those of any patient.
    let bytes = read_pdf(&client, &doc, launch.patient_ref().as_deref()).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf"),
            (
                header::CONTENT_DISPOSITION,
                "inline; filename=\"letter.pdf\"",
            ),
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        bytes,
    )
        .into_response())
}
