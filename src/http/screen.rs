//! The screening page of a launch.
//!
//! `GET /l/{launch}/screen[?form=…&lang=…&large=1]` shows an instrument in
//! the patient's preferred language (switchable; a large-print view to go
//! through with the patient). The page carries a screening id made when it
//! is shown: it keys every resource recorded, so sending twice records once.
//! `POST /l/{launch}/screen` scores the answers, builds the SDOHCC
//! transaction, validates it against the R4 schema, checks it concerns the
//! launch's patient only, and records it in one FHIR round trip.

use std::sync::OnceLock;

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::clock::{now_fhir, today};
use super::error::render;
use super::extract::{Launched, PatientLaunch, ResourceId, WriteId, check_csrf, practitioner_of};
use super::outbox::{write_through, written};
use super::{AppError, AppState};
use crate::domain::screening::{ItemResponse, Rules, score};
use crate::fhir::people;
use crate::fhir::questionnaire::{self, Form, Item, Kind, LANGUAGES, Posted};
use crate::fhir::screening::{ConditionTable, RecordedItem, ScreeningRecord, history, transaction};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/l/{id}/screen", get(show).post(record))
        .route("/l/{id}/screen/{sid}", get(status))
        .route("/l/{id}/concern/{cid}", axum::routing::post(decide_concern))
}

/// The instruments the practice uses, in its order (all when not configured).
fn active_forms(state: &AppState) -> Vec<&'static Form> {
    let configured = state.screening_instruments();
    if configured.is_empty() {
        return forms().values().collect();
    }
    configured.iter().filter_map(|id| forms().get(id)).collect()
}

fn forms() -> &'static std::collections::BTreeMap<String, Form> {
    static FORMS: OnceLock<std::collections::BTreeMap<String, Form>> = OnceLock::new();
    FORMS.get_or_init(|| {
        questionnaire::shipped().expect("the shipped Questionnaires are valid (tested)")
    })
}

/// One line of the form as the template lays it out.
enum Row {
    /// (title, enableWhen as JSON for the page's script, or empty)
    GroupStart(String, String),
    GroupEnd,
    Note(String),
    Question(Question),
}

struct Question {
    name: String,
    text: String,
    required: bool,
    /// radio, checkbox, yesno, number, text
    widget: &'static str,
    options: Vec<(String, String)>,
    /// An open-choice item: a text field for an answer not listed.
    open: bool,
    conditional: bool,
    /// enableWhen as JSON for the page's script, or empty.
    when: String,
}

/// An item's `enableWhen`, for `enable-when.js` (the server checks it too).
fn when_json(item: &Item) -> String {
    use crate::fhir::questionnaire::Condition;
    if item.enable_when.is_empty() {
        return String::new();
    }
    let conditions: Vec<serde_json::Value> = item
        .enable_when
        .iter()
        .map(|c| match c {
            Condition::Equals(q, a) => serde_json::json!({ "q": q, "op": "=", "a": a }),
            Condition::NotEquals(q, a) => serde_json::json!({ "q": q, "op": "!=", "a": a }),
            Condition::Exists(q, want) => {
                serde_json::json!({ "q": q, "op": "exists", "a": want.to_string() })
            }
        })
        .collect();
    serde_json::json!({ "any": item.enable_any, "c": conditions }).to_string()
}

fn rows(items: &[Item], lang: &str, not_asked: &[String], out: &mut Vec<Row>) {
    for item in items {
        if not_asked.contains(&item.link_id) {
            continue;
        }
        match item.kind {
            Kind::Group => {
                out.push(Row::GroupStart(
                    item.text.get(lang).to_string(),
                    when_json(item),
                ));
                rows(&item.items, lang, not_asked, out);
                out.push(Row::GroupEnd);
            }
            Kind::Display => out.push(Row::Note(item.text.get(lang).to_string())),
            _ if item.read_only => {}
            kind => out.push(Row::Question(Question {
                name: item.link_id.clone(),
                text: item.text.get(lang).to_string(),
                required: item.required,
                widget: match kind {
                    Kind::Choice | Kind::OpenChoice if item.repeats => "checkbox",
                    Kind::Choice | Kind::OpenChoice => "radio",
                    Kind::Boolean => "yesno",
                    Kind::Integer | Kind::Decimal => "number",
                    _ => "text",
                },
                options: item
                    .choices
                    .iter()
                    .map(|c| (c.coding.code.clone(), c.display.get(lang).to_string()))
                    .collect(),
                open: kind == Kind::OpenChoice,
                conditional: !item.enable_when.is_empty(),
                when: when_json(item),
            })),
        }
    }
}

#[derive(Template)]
#[template(path = "screen.html")]
struct ScreenPage {
    launch_id: String,
    csrf: String,
    screening_id: String,
    form_id: String,
    title: String,
    lang: String,
    large: bool,
    patient: String,
    languages: Vec<(String, String, bool)>,
    instruments: Vec<(String, String, bool)>,
    /// (domain, date, positive) screened within the interval: not asked again.
    recent: Vec<(String, String, bool)>,
    not_asked: String,
    rows: Vec<Row>,
    yes: &'static str,
    no: &'static str,
    other: &'static str,
    submit: &'static str,
}

fn words(lang: &str) -> (&'static str, &'static str, &'static str) {
    match lang {
        "fr" => ("Oui", "Non", "Enregistrer le dépistage"),
        "es" => ("Sí", "No", "Registrar la evaluación"),
        _ => ("Yes", "No", "Record the screening"),
    }
}

#[derive(Deserialize)]
struct ShowQuery {
    form: Option<String>,
    lang: Option<String>,
    large: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    Query(q): Query<ShowQuery>,
    PatientLaunch {
        launch,
        patient: patient_id,
    }: PatientLaunch,
) -> Result<Response, AppError> {
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    // The patient and their screening history, in one round trip's time.
    let (patient, observations) = tokio::join!(
        people::patient(&client, &patient_id),
        history(&client, &patient_id),
    );
    let patient = patient?;
    let observations = observations?;
    let since = today() - time::Duration::days(state.screening_interval_days());
    // Only results (positive or negative) within the interval are not asked
    // again; declined, entered-in-error, cancelled and undated records are.
    let recent: Vec<_> = observations
        .into_iter()
        .filter(|s| s.recent(since))
        .collect();
    let active = active_forms(&state);
    let form_id = q
        .form
        .or_else(|| active.first().map(|f| f.id.clone()))
        .unwrap_or_default();
    let form = active
        .iter()
        .find(|f| f.id == form_id)
        .copied()
        .ok_or_else(|| {
            AppError::BadRequest("This screening instrument is not used in this practice.".into())
        })?;
    let preferred = patient
        .language
        .as_ref()
        .map(|l| l.code.split('-').next().unwrap_or("en").to_string());
    let lang = q
        .lang
        .or(preferred)
        .filter(|l| LANGUAGES.iter().any(|(c, _)| c == l))
        .unwrap_or_else(|| "en".into());
    let item_domains = rules().item_domains.get(&form.id);
    let not_asked: Vec<String> = form
        .all_items()
        .iter()
        .filter(|i| {
            item_domains
                .and_then(|m| m.get(&i.link_id))
                .is_some_and(|d| recent.iter().any(|r| r.domain == *d))
        })
        .map(|i| i.link_id.clone())
        .collect();
    let mut list = Vec::new();
    rows(&form.items, &lang, &not_asked, &mut list);
    let (yes, no, submit) = words(&lang);
    let other = other_word(&lang);
    render(ScreenPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        screening_id: WriteId::fresh().to_string(),
        form_id: form.id.clone(),
        title: form.title.get(&lang).to_string(),
        large: q.large.is_some(),
        patient: patient.name,
        languages: LANGUAGES
            .iter()
            .map(|(c, n)| (c.to_string(), n.to_string(), *c == lang))
            .collect(),
        instruments: active
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    f.title.get(&lang).to_string(),
                    f.id == form.id,
                )
            })
            .collect(),
        recent: recent
            .iter()
            .map(|r| {
                let date = r.date.map(|d| d.to_string()).unwrap_or_default();
                let by = r
                    .source
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                (
                    r.domain.label().to_string(),
                    format!("{date}{by}"),
                    r.positive(),
                )
            })
            .collect(),
        not_asked: not_asked.join(","),
        lang,
        rows: list,
        yes,
        no,
        other,
        submit,
    })
}

#[derive(Template)]
#[template(path = "screen_done.html")]
struct DonePage {
    launch_id: String,
    screening_id: String,
    /// pending, sent or failed
    status: String,
    message: String,
    positive: Vec<String>,
    screened: usize,
    resources: usize,
}

async fn record(
    State(state): State<AppState>,
    Launched(launch): Launched,
    AxumForm(fields): AxumForm<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    check_csrf(&launch, &field("csrf"))?;
    let screening_id = WriteId::from(field("screening_id"));
    let screening_id = screening_id.check()?;
    let form_id = field("form");
    let form = active_forms(&state)
        .into_iter()
        .find(|f| f.id == form_id)
        .ok_or_else(|| {
            AppError::BadRequest("This screening instrument is not used in this practice.".into())
        })?;
    let lang = field("lang");
    let mut posted = Posted::new();
    for (k, v) in &fields {
        if !matches!(
            k.as_str(),
            "csrf" | "screening_id" | "form" | "lang" | "not_asked"
        ) {
            posted
                .entry(k.clone())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    let known: std::collections::HashSet<String> =
        form.all_items().iter().map(|i| i.link_id.clone()).collect();
    let not_asked: std::collections::HashSet<String> = field("not_asked")
        .split(',')
        .filter(|l| known.contains(*l))
        .map(String::from)
        .collect();
    let items = questionnaire::recorded(form, &posted, &not_asked).map_err(AppError::BadRequest)?;
    let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
    let scored = score(rules(), &responses, &form.ordinals());
    let patient = launch
        .patient_ref()
        .ok_or_else(|| AppError::BadRequest("Choose a patient first.".into()))?;
    let encounter = launch
        .context
        .encounter
        .as_ref()
        .map(|e| format!("Encounter/{e}"));
    let author = practitioner_of(&launch);
    let authored = now_fhir()?;
    let canonical = form.canonical();
    let bundle = transaction(
        &ScreeningRecord {
            id: screening_id,
            patient: &patient,
            encounter: encounter.as_deref(),
            author: author.as_deref(),
            questionnaire: &canonical,
            language: if lang.is_empty() { "en" } else { &lang },
            authored: &authored,
            items: &items,
            scored: &scored,
        },
        conditions(),
    );
    state.schema()?.validate_bundle(&bundle)?;
    launch.check_write(&bundle)?;
    let summary = serde_json::json!({
        "positive": scored.positive.iter().map(|d| d.label()).collect::<Vec<_>>(),
        "screened": scored.screened.len(),
        "resources": bundle["entry"].as_array().map_or(0, Vec::len),
    });
    write_through(&state, &launch.id, screening_id, &bundle, &summary).await?;
    // Post/redirect/get: reloading the result never posts again.
    Ok(
        axum::response::Redirect::to(&format!("/l/{}/screen/{}", launch.id, screening_id))
            .into_response(),
    )
}

/// The screening's state: recorded, saved here and sending, or refused.
async fn status(
    State(state): State<AppState>,
    Path((_, sid)): Path<(String, String)>,
    Launched(launch): Launched,
) -> Result<Response, AppError> {
    status_page(&state, &launch.id, &sid).await
}

async fn status_page(state: &AppState, launch_id: &str, sid: &str) -> Result<Response, AppError> {
    let item = written(state, launch_id, sid)
        .await?
        .ok_or_else(|| AppError::BadRequest("There is no such screening in this launch.".into()))?;
    let summary: serde_json::Value = serde_json::from_str(&item.summary).unwrap_or_default();
    render(DonePage {
        launch_id: launch_id.to_string(),
        screening_id: sid.to_string(),
        status: item.status.as_str().to_string(),
        message: item.last_error.clone().unwrap_or_default(),
        positive: summary["positive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(String::from))
            .collect(),
        screened: summary["screened"].as_u64().unwrap_or(0) as usize,
        resources: summary["resources"].as_u64().unwrap_or(0) as usize,
    })
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(Rules::shipped)
}

fn conditions() -> &'static ConditionTable {
    static TABLE: OnceLock<ConditionTable> = OnceLock::new();
    TABLE.get_or_init(ConditionTable::shipped)
}

#[derive(Deserialize)]
struct VerdictForm {
    csrf: String,
    version: String,
    verdict: String,
}

/// Confirm or refute a health concern, with `If-Match` on the version the
/// clinician saw: if someone changed it since, nothing is overwritten and
/// the page says so.
async fn decide_concern(
    State(state): State<AppState>,
    ResourceId(cid): ResourceId,
    Launched(launch): Launched,
    AxumForm(form): AxumForm<VerdictForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let verdict = match form.verdict.as_str() {
        "confirm" => crate::fhir::screening::Verdict::Confirm,
        "refute" => crate::fhir::screening::Verdict::Refute,
        _ => return Err(AppError::BadRequest("Choose confirm or refute.".into())),
    };
    if form.version.is_empty() {
        return Err(AppError::BadRequest(
            "This concern cannot be identified; reload the page.".into(),
        ));
    }
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let decided = crate::fhir::screening::read_and_decide(&client, &cid, verdict).await?;
    state.schema()?.validate(&decided)?;
    launch.check_write(&decided)?;
    client.update(&decided, Some(&form.version)).await?;
    Ok(
        axum::response::Redirect::to(&format!("/l/{}/visit#concern-{cid}", launch.id))
            .into_response(),
    )
}

/// The label of an open-choice item's free-text answer.
fn other_word(lang: &str) -> &'static str {
    match lang {
        "fr" => "Autre :",
        "es" => "Otro:",
        _ => "Other:",
    }
}
