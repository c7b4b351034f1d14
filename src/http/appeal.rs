//! Appealing a denial from the visit.
//!
//! `GET /l/{launch}/appeal[?denial=<ClaimResponse id>]` prepares an appeal
//! of a denial read from the EHR, or of one entered by hand: the kind of
//! appeal suggested by the payer's words, the coverage and its appeal
//! regime, the deadline; `POST` records the appeal Task.
//!
//! Every write is built from what the FHIR server says now (never from
//! hidden form fields), validated against the R4 schema, checked to concern
//! the launch's patient, kept in the outbox and sent idempotently.

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::clock::{now_fhir, today};
use super::error::render;
use super::extract::{Launched, PatientLaunch, WriteId, check_csrf, patient_of, practitioner_of};
use super::outbox::{done_url, write_through};
use super::{AppError, AppState};
use crate::auth::session::Launch;
use crate::domain::appeal::{
    AppealKind, HandDenial, HandDenialFields, ReasonSystem, SERVICE_CODE_SYSTEMS, plan,
};
use crate::domain::coverage::CoverageFacts;
use crate::fhir::appeal::{AppealRecord, DenialInputs, patient_coverages, read_denial};
use crate::fhir::people;

pub fn router() -> Router<AppState> {
    Router::new().route("/l/{id}/appeal", get(appeal_page).post(appeal))
}

#[derive(Deserialize, Default)]
struct AppealQuery {
    denial: Option<String>,
}

struct CoverageChoice {
    id: String,
    label: String,
    regime: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "appeal.html")]
struct AppealPage {
    launch_id: String,
    csrf: String,
    appeal_id: String,
    patient: String,
    /// Empty for a denial entered by hand.
    denial_id: String,
    /// (payer, date, service, reasons "code words", verbatim text)
    denial: Option<(String, String, String, Vec<String>, String)>,
    kinds: Vec<(String, String, bool)>,
    coverages: Vec<CoverageChoice>,
    reason_systems: Vec<(String, String)>,
    service_systems: Vec<String>,
    today: String,
    errors: Vec<String>,
    form: AppealForm,
}

/// The coverage choices of the appeal form: `selected`, else the first active.
fn coverage_choices(
    state: &AppState,
    facts: &[CoverageFacts],
    selected: Option<&str>,
) -> Vec<CoverageChoice> {
    let today = today();
    let first_active = facts
        .iter()
        .find(|c| c.is_active_on(today))
        .map(|c| c.id.clone());
    let selected = selected.map(String::from).or(first_active);
    facts
        .iter()
        .map(|c| CoverageChoice {
            id: c.id.clone(),
            label: format!(
                "{}{}{}",
                c.payer,
                c.plan
                    .as_deref()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default(),
                c.member_id
                    .as_deref()
                    .map(|m| format!(" (member {m})"))
                    .unwrap_or_default()
            ),
            regime: state
                .regimes()
                .regime_for(&c.types)
                .map(|r| format!("{}: {} days", r.label, r.file_within_days))
                .unwrap_or_else(|| "no regime: enter the deadline from the notice".into()),
            selected: selected.as_deref() == Some(c.id.as_str()),
        })
        .collect()
}

#[derive(Deserialize, Default, Clone)]
struct AppealForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    appeal_id: WriteId,
    #[serde(default)]
    denial: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    expedited: String,
    #[serde(default)]
    coverage: String,
    /// A deadline printed on the notice, which wins over the regime's.
    #[serde(default)]
    deadline: String,
    #[serde(default)]
    notice: String,
    // Hand entry.
    #[serde(default)]
    payer: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    service_system: String,
    #[serde(default)]
    service_code: String,
    #[serde(default)]
    reason_system: String,
    #[serde(default)]
    reason_code: String,
    #[serde(default)]
    text: String,
}

async fn appeal_page(
    State(state): State<AppState>,
    Query(q): Query<AppealQuery>,
    PatientLaunch { launch, patient }: PatientLaunch,
) -> Result<Response, AppError> {
    let form = AppealForm {
        denial: q.denial.unwrap_or_default(),
        ..Default::default()
    };
    let appeal_id = WriteId::fresh().to_string();
    appeal_form_page(&state, &launch, &patient, form, vec![], appeal_id).await
}

async fn appeal_form_page(
    state: &AppState,
    launch: &Launch,
    patient_id: &str,
    mut form: AppealForm,
    errors: Vec<String>,
    appeal_id: String,
) -> Result<Response, AppError> {
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let (read, patient, facts) = tokio::join!(
        read_denial(&client, patient_id, &form.denial),
        people::patient(&client, patient_id),
        patient_coverages(&client, patient_id),
    );
    let read = read?;
    let patient = patient?;
    let selected_coverage = if form.coverage.is_empty() {
        read.as_ref().and_then(|r| r.coverage.clone())
    } else {
        Some(form.coverage.clone())
    };
    let coverages = coverage_choices(state, &facts?, selected_coverage.as_deref());
    let suggested = read
        .as_ref()
        .map(|r| AppealKind::suggested_for(r.denial.disposition.as_deref().unwrap_or_default()))
        .unwrap_or(AppealKind::InternalAppeal);
    let chosen = AppealKind::parse(&form.kind).unwrap_or(suggested);
    if form.notice.is_empty() {
        form.notice = read
            .as_ref()
            .and_then(|r| r.denial.created)
            .map(|d| d.to_string())
            .unwrap_or_default();
    }
    render(AppealPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        appeal_id,
        patient: patient.name,
        denial_id: form.denial.clone(),
        denial: read.map(|r| {
            (
                r.denial.payer.clone(),
                r.denial.created.map(|d| d.to_string()).unwrap_or_default(),
                r.denial
                    .service
                    .clone()
                    .unwrap_or_else(|| "service not named".into()),
                r.denial
                    .reasons
                    .iter()
                    .map(|c| format!("{} {}", c.code, c.display.clone().unwrap_or_default()))
                    .collect(),
                r.denial.disposition.clone().unwrap_or_default(),
            )
        }),
        kinds: AppealKind::ALL
            .iter()
            .map(|k| (k.code().to_string(), k.label().to_string(), *k == chosen))
            .collect(),
        coverages,
        reason_systems: ReasonSystem::ALL
            .iter()
            .map(|s| (s.key().to_string(), s.label().to_string()))
            .collect(),
        service_systems: SERVICE_CODE_SYSTEMS
            .iter()
            .map(|(k, _)| k.to_string())
            .collect(),
        today: today().to_string(),
        errors,
        form,
    })
}

async fn appeal(
    State(state): State<AppState>,
    Launched(launch): Launched,
    AxumForm(form): AxumForm<AppealForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let appeal_id = form.appeal_id.check()?.to_string();
    let patient_id = patient_of(&launch)?;
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let mut errors = Vec::new();
    let kind = AppealKind::parse(&form.kind);
    if kind.is_none() {
        errors.push("Kind of appeal: choose one.".to_string());
    }
    let stated = match form.deadline.trim() {
        "" => None,
        d => match crate::domain::iso_date(d) {
            Some(d) => Some(d),
            None => {
                errors.push("Deadline on the notice: use YYYY-MM-DD.".to_string());
                None
            }
        },
    };
    // The coverage and the denial, read again from the EHR at once.
    let (facts, read) = tokio::join!(
        patient_coverages(&client, &patient_id),
        read_denial(&client, &patient_id, &form.denial),
    );
    let (facts, read) = (facts?, read?);
    let coverage = facts.iter().find(|c| c.id == form.coverage);
    if !form.coverage.is_empty() && coverage.is_none() {
        errors.push("Coverage: it is not one of this patient's.".to_string());
    }
    let regime = coverage.and_then(|c| state.regimes().regime_for(&c.types));
    // A denial entered by hand is checked field by field.
    let hand = if read.is_none() {
        match HandDenial::parse(
            &HandDenialFields {
                payer: &form.payer,
                notice: &form.notice,
                service: &form.service,
                service_system: &form.service_system,
                service_code: &form.service_code,
                reason_system: &form.reason_system,
                reason_code: &form.reason_code,
                text: &form.text,
            },
            today(),
        ) {
            Ok(h) => Some(h),
            Err(e) => {
                errors.extend(e);
                None
            }
        }
    } else {
        None
    };
    if read.is_some() && !form.notice.trim().is_empty() {
        match crate::domain::iso_date(&form.notice) {
            Some(d) if d > today() => errors.push("Notice date: it is in the future.".to_string()),
            Some(d) if d.year() < 2000 => {
                errors.push("Notice date: it is before 2000.".to_string())
            }
            Some(_) => {}
            None => errors.push(
                "Notice date: enter the date printed on the notice (YYYY-MM-DD).".to_string(),
            ),
        }
    }
    let notice = match (&read, &hand) {
        (Some(r), _) => crate::domain::iso_date(&form.notice).or(r.denial.created),
        (_, Some(h)) => Some(h.notice),
        _ => None,
    };
    if read.is_some() && notice.is_none() {
        errors.push("Notice date: enter the date printed on the notice (YYYY-MM-DD).".to_string());
    }
    if regime.is_none() && stated.is_none() && errors.is_empty() {
        errors.push(
            "Deadline on the notice: no appeal regime applies to this coverage, so enter the date printed on the payer's notice."
                .to_string(),
        );
    }
    let (Some(kind), Some(notice), true) = (kind, notice, errors.is_empty()) else {
        let page = appeal_form_page(&state, &launch, &patient_id, form, errors, appeal_id).await?;
        return Ok((axum::http::StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    };
    let now = time::OffsetDateTime::now_utc();
    let p = plan(
        kind,
        !form.expedited.is_empty(),
        notice,
        regime,
        stated,
        now,
    );
    let patient = format!("Patient/{patient_id}");
    let requester = practitioner_of(&launch);
    let authored = now_fhir()?;
    let coverage_ref = coverage.map(|c| format!("Coverage/{}", c.id));
    let focus = read
        .as_ref()
        .map(|r| format!("ClaimResponse/{}", r.denial.id));
    let encounter = launch
        .context
        .encounter
        .as_ref()
        .map(|e| format!("Encounter/{e}"));
    let reasons: Vec<(String, String, Option<String>)> = match (&read, &hand) {
        (Some(r), _) => r
            .denial
            .reasons
            .iter()
            .map(|c| {
                (
                    c.system.clone().unwrap_or_default(),
                    c.code.clone(),
                    c.display.clone(),
                )
            })
            .filter(|(s, _, _)| !s.is_empty())
            .collect(),
        (_, Some(h)) => vec![(
            h.reason_system.uri().to_string(),
            h.reason_code.clone(),
            None,
        )],
        _ => vec![],
    };
    let denial = match (&read, &hand) {
        (Some(r), _) => DenialInputs {
            payer: Some(r.denial.payer.as_str()).filter(|p| !p.is_empty()),
            service: r.denial.service.as_deref(),
            service_code: r.item_code.as_ref().map(|(s, c)| (s.as_str(), c.as_str())),
            reasons: reasons
                .iter()
                .map(|(s, c, d)| (s.as_str(), c.as_str(), d.as_deref()))
                .collect(),
            text: r.denial.disposition.as_deref(),
        },
        (_, Some(h)) => DenialInputs {
            payer: Some(h.payer.as_str()),
            service: Some(h.service.as_str()),
            service_code: h
                .service_code
                .as_ref()
                .map(|(s, c)| (s.as_str(), c.as_str())),
            reasons: reasons
                .iter()
                .map(|(s, c, d)| (s.as_str(), c.as_str(), d.as_deref()))
                .collect(),
            text: Some(h.text.as_str()),
        },
        _ => DenialInputs::default(),
    };
    let bundle = crate::fhir::appeal::transaction(&AppealRecord {
        id: &appeal_id,
        patient: &patient,
        encounter: encounter.as_deref(),
        requester: requester.as_deref(),
        coverage: coverage_ref.as_deref(),
        focus: focus.as_deref(),
        plan: &p,
        denial,
        authored: &authored,
    });
    state.schema()?.validate_bundle(&bundle)?;
    launch.check_write(&bundle)?;
    let what = format!(
        "{} started{}",
        kind.label(),
        p.deadline
            .map(|d| format!("; file by {d}"))
            .unwrap_or_default()
    );
    let new = write_through(
        &state,
        &launch.id,
        &appeal_id,
        &bundle,
        &serde_json::json!({ "what": what }),
    )
    .await?;
    Ok(Redirect::to(&done_url(&launch.id, &appeal_id, new)).into_response())
}
