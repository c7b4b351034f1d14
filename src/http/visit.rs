//! The visit page, of a SMART launch or on an open server.
//!
//! * `GET /l/{launch}/visit`: the visit page of one SMART launch, with what
//!   became of the write just made; without a patient in context, the
//!   coordinator's queue or a patient search.
//! * `GET /launch/open?iss=<base>&patient=<id>[&encounter=<id>]` opens a
//!   visit on a FHIR server the configuration lists as open (no
//!   authorization), such as the public HAPI R4 sandbox. Without `patient`,
//!   it lists the server's patients to pick from. A base that is not listed
//!   is refused before any request is sent.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use time::Date;

use super::clock::today;
use super::error::render;
use super::extract::Launched;
use super::outbox::written;
use super::{AppError, AppState};
use crate::auth::scopes::disabled_features;
use crate::domain::coverage::{CoverageGap, DeadlineWarning, deadline_warning};
use crate::domain::visit::{Section, VisitContext};
use crate::fhir::client::is_valid_id;
use crate::fhir::{context, people};
use crate::store::OutboxStatus;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/launch/open", get(open_launch))
        .route("/l/{id}/visit", get(visit))
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    servers: Vec<String>,
}

async fn home(State(state): State<AppState>) -> Result<Response, AppError> {
    render(HomePage {
        servers: state.open_servers().iter().map(|u| u.to_string()).collect(),
    })
}

#[derive(Debug, Deserialize)]
struct OpenLaunch {
    iss: Option<String>,
    patient: Option<String>,
    encounter: Option<String>,
    name: Option<String>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn open_launch(
    State(state): State<AppState>,
    Query(q): Query<OpenLaunch>,
) -> Result<Response, AppError> {
    let iss = non_empty(&q.iss).ok_or_else(|| {
        AppError::BadRequest("The launch did not say which FHIR server (iss) to open.".into())
    })?;
    let client = state.open_client(iss)?;
    let Some(patient) = non_empty(&q.patient) else {
        return pick_patient(&client, non_empty(&q.name)).await;
    };
    if !is_valid_id(patient) {
        return Err(AppError::BadRequest(
            "The patient id is not a valid FHIR id.".into(),
        ));
    }
    let encounter = non_empty(&q.encounter);
    if encounter.is_some_and(|e| !is_valid_id(e)) {
        return Err(AppError::BadRequest(
            "The encounter id is not a valid FHIR id.".into(),
        ));
    }
    let today = today();
    let ctx = context::load_visit(&client, patient, encounter, state.regimes(), today).await?;
    render(VisitPage::new(ctx, client.base().as_str(), today))
}

#[derive(Template)]
#[template(path = "patients.html")]
struct PatientsPage {
    iss: String,
    name: String,
    patients: Vec<PatientRow>,
    skipped: usize,
}

struct PatientRow {
    id: String,
    name: String,
    birth_date: String,
}

async fn pick_patient(
    client: &crate::fhir::FhirClient,
    name: Option<&str>,
) -> Result<Response, AppError> {
    let found = people::search_patients(client, name).await?;
    let patients = found
        .patients
        .into_iter()
        .map(|p| PatientRow {
            birth_date: fmt_date(p.birth_date),
            id: p.id,
            name: p.name,
        })
        .collect();
    render(PatientsPage {
        iss: client.base().to_string(),
        name: name.unwrap_or_default().to_string(),
        patients,
        skipped: found.skipped,
    })
}

fn fmt_date(d: Option<Date>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "unknown".into())
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
    Query(q): Query<VisitQuery>,
    Launched(launch): Launched,
) -> Result<Response, AppError> {
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let Some(patient) = launch.context.patient.clone() else {
        // A coordinator's launch (no patient): the queue, when there is one.
        if q.name.is_none() && q.pick.is_none() && state.queue(&launch.iss).is_some() {
            return Ok(Redirect::to(&format!("/l/{}/queue", launch.id)).into_response());
        }
        // Standalone launch on an EHR without a patient picker: search here.
        let name = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
        let patients = people::search_patients(&client, name)
            .await?
            .patients
            .into_iter()
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
    let user = people::signed_in_name(&client, launch.context.fhir_user.as_deref());
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
        page.flash = written(&state, &launch.id, done).await?.map(|i| {
            let summary: serde_json::Value = serde_json::from_str(&i.summary).unwrap_or_default();
            let what = summary["what"].as_str().unwrap_or("Saved").to_string();
            let words = match i.status {
                OutboxStatus::Sent => what,
                _ => format!("{what} ({})", i.last_error.unwrap_or_default()),
            };
            let words = if q.again.is_some() {
                format!("This form had been sent already, nothing new was recorded. {words}")
            } else {
                words
            };
            (i.status.as_str().to_string(), words)
        });
    }
    render(page)
}

/// Who is signed in, in a SMART launch, and what the grant does not allow.
struct SessionView {
    launch_id: String,
    csrf: String,
    user: String,
    /// (feature, reason)
    disabled: Vec<(String, String)>,
}

/// The visit page: everything pre-formatted, so the template only lays out.
#[derive(Template)]
#[template(path = "visit.html")]
struct VisitPage {
    session: Option<SessionView>,
    /// What became of the write the user just made: (sent|pending|failed, words).
    flash: Option<(String, String)>,
    /// False when the EHR already shows its own banner (`need_patient_banner`).
    show_banner: bool,
    iss: String,
    patient_id: String,
    name: String,
    birth: String,
    age: String,
    gender: String,
    identifiers: Vec<(String, String)>,
    language: String,
    interpreter: String,
    encounter: Option<Result<EncounterView, String>>,
    coverage_alerts: Vec<String>,
    coverages: Result<Vec<CoverageView>, String>,
    screenings: Result<Vec<ScreeningView>, String>,
    concerns: Result<Vec<ConcernRow>, String>,
    referrals: Result<Vec<Row>, String>,
    closed_referrals: Result<Vec<Row>, String>,
    appeals: Result<Vec<Row>, String>,
    patient_tasks: Result<Vec<Row>, String>,
    denials: Result<Vec<DenialView>, String>,
    skipped: Vec<String>,
}

struct EncounterView {
    summary: String,
    period: String,
    status: String,
}

struct CoverageView {
    payer: String,
    plan: String,
    member_id: String,
    kind: String,
    period: String,
    status: String,
    active: bool,
    regime: String,
    costs: Vec<String>,
    alerts: Vec<String>,
}

struct ScreeningView {
    code: String,
    domain: String,
    /// Positive, Negative or Declined, with "(preliminary)" when so.
    result: String,
    date: String,
    /// Who recorded it ("Passerelle", the other system, "the patient").
    source: String,
    positive: bool,
}

/// A domain's result in words: declined is no result, preliminary says so.
fn screening_result(s: &crate::domain::visit::DomainScreening) -> String {
    use crate::domain::visit::Finding;
    let word = match s.finding {
        Finding::Positive => "Positive",
        Finding::Negative => "Negative",
        Finding::Declined => "Declined to answer",
    };
    if s.preliminary {
        format!("{word} (preliminary)")
    } else {
        word.to_string()
    }
}

/// A health concern, with what the confirm and refute buttons need.
struct ConcernRow {
    id: String,
    version: String,
    unconfirmed: bool,
    title: String,
    detail: String,
    status: String,
}

/// A generic list row: a title, details, and a status; `task` is the id of
/// the Task behind it, if any (the row then links to it); `report` what the
/// performer reported on it (the service's words: escaped like the rest).
struct Row {
    task: String,
    title: String,
    detail: String,
    status: String,
    report: String,
}

struct DenialView {
    id: String,
    date: String,
    payer: String,
    service: String,
    kind: String,
    /// (code, words)
    reasons: Vec<(String, String)>,
    text: String,
}

fn section<T, U>(s: Section<T>, f: impl FnOnce(T) -> U) -> Result<U, String> {
    s.map(f).map_err(|e| e.message)
}

fn gap_text(g: &CoverageGap) -> String {
    match g {
        CoverageGap::NoActiveCoverage => "No active coverage today.".into(),
        CoverageGap::EndsSoon { end, days_left, .. } => {
            format!(
                "Coverage ends on {end} ({days_left} day{} left).",
                if *days_left == 1 { "" } else { "s" }
            )
        }
        CoverageGap::LapsedMedicaid { ended: Some(d), .. } => {
            format!("Medicaid lapsed on {d}; no Medicaid coverage is active.")
        }
        CoverageGap::LapsedMedicaid { ended: None, .. } => {
            "Medicaid was cancelled; no Medicaid coverage is active.".into()
        }
    }
}

fn period(start: Option<Date>, end: Option<Date>) -> String {
    match (start, end) {
        (None, None) => "no period recorded".into(),
        (Some(s), None) => format!("from {s}"),
        (None, Some(e)) => format!("until {e}"),
        (Some(s), Some(e)) => format!("{s} to {e}"),
    }
}

impl VisitPage {
    fn new(ctx: VisitContext, iss: &str, today: Date) -> Self {
        let p = &ctx.patient;
        let coverage_alerts = match &ctx.coverage {
            Ok(summary) => summary
                .gaps
                .iter()
                .filter(|g| matches!(g, CoverageGap::NoActiveCoverage))
                .map(gap_text)
                .collect(),
            Err(_) => vec![],
        };
        VisitPage {
            session: None,
            flash: None,
            show_banner: true,
            iss: iss.to_string(),
            patient_id: p.id.clone(),
            name: p.name.clone(),
            birth: fmt_date(p.birth_date),
            age: p
                .age_on(today)
                .map(|a| format!("{a} y"))
                .unwrap_or_default(),
            gender: p.gender.clone().unwrap_or_default(),
            identifiers: p
                .identifiers
                .iter()
                .map(|i| (i.label.clone(), i.value.clone()))
                .collect(),
            language: p
                .language
                .as_ref()
                .map(|l| l.display.clone())
                .unwrap_or_else(|| "not recorded".into()),
            interpreter: match p.interpreter_needed {
                Some(true) => "Interpreter needed".into(),
                Some(false) => "No interpreter needed".into(),
                None => String::new(),
            },
            encounter: ctx.encounter.map(|e| {
                e.map(|e| EncounterView {
                    summary: [e.class.unwrap_or_default(), e.types.join(", ")]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" · "),
                    period: period(e.start, e.end),
                    status: e.status,
                })
                .map_err(|e| e.message)
            }),
            coverage_alerts,
            coverages: section(ctx.coverage, |s| {
                s.cards
                    .into_iter()
                    .map(|c| CoverageView {
                        payer: c.facts.payer,
                        plan: [c.facts.plan, c.facts.group.map(|g| format!("group {g}"))]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(", "),
                        member_id: c.facts.member_id.unwrap_or_else(|| "not recorded".into()),
                        kind: c.facts.type_label.unwrap_or_default(),
                        period: period(c.facts.start, c.facts.end),
                        status: if c.active {
                            "active".into()
                        } else {
                            "not active".into()
                        },
                        active: c.active,
                        regime: c
                            .regime
                            .map(|r| {
                                format!(
                                    "{}: appeal within {} days ({})",
                                    r.label, r.file_within_days, r.citation
                                )
                            })
                            .unwrap_or_else(|| "Appeal rules: see the plan's denial notice".into()),
                        costs: c.facts.costs,
                        alerts: c.gaps.iter().map(gap_text).collect(),
                    })
                    .collect()
            }),
            screenings: section(ctx.screenings, |list| {
                list.into_iter()
                    .map(|s| ScreeningView {
                        code: s.domain.code().into(),
                        domain: s.domain.label().into(),
                        result: screening_result(&s),
                        date: s
                            .date
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "date not recorded".into()),
                        source: s.source.clone().unwrap_or_default(),
                        positive: s.positive(),
                    })
                    .collect()
            }),
            concerns: section(ctx.concerns, |list| {
                list.into_iter()
                    .map(|c| ConcernRow {
                        unconfirmed: c.verification.as_deref() == Some("unconfirmed"),
                        id: c.id,
                        version: c.version.unwrap_or_default(),
                        title: c.text,
                        detail: [
                            c.domains
                                .iter()
                                .map(|d| d.label())
                                .collect::<Vec<_>>()
                                .join(", "),
                            c.recorded
                                .map(|d| format!("recorded {d}"))
                                .or_else(|| c.onset.map(|d| format!("since {d}")))
                                .unwrap_or_default(),
                            c.source
                                .as_deref()
                                .map(|s| format!("by {s}"))
                                .unwrap_or_default(),
                        ]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" · "),
                        status: c.verification.unwrap_or_default(),
                    })
                    .collect()
            }),
            referrals: section(ctx.referrals, |list| {
                list.into_iter()
                    .map(|r| Row {
                        task: r.task.as_ref().map(|t| t.id.clone()).unwrap_or_default(),
                        title: r.text,
                        detail: [
                            r.performer.unwrap_or_default(),
                            r.authored.map(|d| format!("sent {d}")).unwrap_or_default(),
                        ]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(" · "),
                        report: r
                            .task
                            .as_ref()
                            .map(|t| t.report.words())
                            .unwrap_or_default(),
                        status: r.task.map(|t| t.status).unwrap_or(r.status),
                    })
                    .collect()
            }),
            closed_referrals: section(ctx.closed_referrals, |list| {
                list.into_iter().map(task_row).collect()
            }),
            appeals: section(ctx.appeals, |list| {
                list.into_iter()
                    .map(|t| {
                        let warning = t.due.and_then(|d| deadline_warning(d, today));
                        let mut row = task_row(t);
                        if let Some(w) = warning {
                            let words = match w {
                                DeadlineWarning::Overdue { days_late } => {
                                    format!("overdue by {days_late} day{}", plural(days_late))
                                }
                                DeadlineWarning::DueSoon { days_left: 0, .. } => {
                                    "due today".to_string()
                                }
                                DeadlineWarning::DueSoon { days_left, .. } => {
                                    format!("due in {days_left} day{}", plural(days_left))
                                }
                            };
                            row.status = format!("{} · {words}", row.status);
                        }
                        row
                    })
                    .collect()
            }),
            patient_tasks: section(ctx.patient_tasks, |list| {
                list.into_iter().map(task_row).collect()
            }),
            denials: section(ctx.denials, |list| {
                list.into_iter()
                    .map(|d| DenialView {
                        id: d.id.clone(),
                        date: fmt_date(d.created),
                        payer: d.payer,
                        service: d.service.unwrap_or_else(|| "service not named".into()),
                        kind: if d.use_ == "preauthorization" {
                            "Prior authorization".into()
                        } else {
                            "Claim".into()
                        },
                        reasons: d
                            .reasons
                            .iter()
                            .map(|r| (r.code.clone(), r.display.clone().unwrap_or_default()))
                            .collect(),
                        text: d.disposition.unwrap_or_default(),
                    })
                    .collect()
            }),
            skipped: ctx
                .skipped
                .iter()
                .map(|(t, n)| {
                    format!(
                        "{n} {t} could not be read and {} left out.",
                        if *n == 1 { "was" } else { "were" }
                    )
                })
                .collect(),
        }
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn task_row(t: crate::domain::visit::TaskSummary) -> Row {
    Row {
        report: t.report.words(),
        task: t.id.clone(),
        title: t.description,
        detail: [
            t.due.map(|d| format!("due {d}")).unwrap_or_default(),
            t.owner.unwrap_or_default(),
            t.priority.filter(|p| p != "routine").unwrap_or_default(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · "),
        status: t.status,
    }
}
