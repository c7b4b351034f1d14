//! Acting on barriers from the visit: refer the patient to a community
//! service (or give them the contact), start an appeal of a denial, and move
//! Tasks through their lifecycle.
//!
//! * `GET /l/{launch}/refer?domain=…` lists services from the directory for
//!   a domain (or peer support, or a medicine), near the patient's postal
//!   code, in their language, open to them; `POST` records the referral
//!   (ServiceRequest + Task + Consent) or a Task for the patient.
//! * `GET /l/{launch}/appeal[?denial=<ClaimResponse id>]` prepares an appeal
//!   of a denial read from the EHR, or of one entered by hand; `POST`
//!   records the appeal Task.
//! * `GET /l/{launch}/task/{id}` shows a Task; `POST` changes its status
//!   through the state machine, with `If-Match` on the version shown.
//!
//! Every write is built from what the FHIR server says now (never from
//! hidden form fields), validated against the R4 schema, checked to concern
//! the launch's patient, kept in the outbox and sent idempotently.

use std::collections::BTreeSet;

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde_json::Value;

use super::launch::{check_csrf, open_launch};
use super::screen::{relative_reference, write_through_outbox};
use super::visit::{render, today};
use super::{AppError, AppState};
use crate::auth::keys::random_token;
use crate::auth::session::Launch;
use crate::domain::appeal::{
    AppealKind, AppealOutcome, HandDenial, HandDenialFields, ReasonSystem, SERVICE_CODE_SYSTEMS,
    plan,
};
use crate::domain::coverage::{DeadlineWarning, deadline_warning};
use crate::domain::directory::{Capacity, Query as DirQuery, chart_facts, medication_term};
use crate::domain::referral::{Party, Status, next};
use crate::domain::sdoh::Domain;
use crate::domain::visit::{Concern, DomainScreening, latest_screenings};
use crate::fhir::FhirClient;
use crate::fhir::appeal::{APPEAL_INPUT_SYSTEM, AppealRecord, DenialInputs};
use crate::fhir::referral::{
    PatientTaskKind, PatientTaskRecord, ReferralRecord, default_code, no_contact_required,
};
use crate::fhir::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/l/{id}/refer", get(refer_page).post(refer))
        .route("/l/{id}/appeal", get(appeal_page).post(appeal))
        .route("/l/{id}/task/{tid}", get(task_page).post(change_task))
}

/// FHIR dateTime of now.
pub(super) fn now_fhir() -> Result<String, AppError> {
    time::OffsetDateTime::now_utc()
        .replace_millisecond(0)
        .map_err(|e| AppError::Internal(e.to_string()))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| AppError::Internal(e.to_string()))
}

/// The visit page showing what became of write `id`; `new` false when the
/// same form had been sent before (nothing new was recorded).
pub(super) fn done_url(launch: &str, id: &str, new: bool) -> String {
    format!(
        "/l/{launch}/visit?done={id}{}",
        if new { "" } else { "&again=1" }
    )
}

/// A write id made by a page and posted back: letters, digits, - and _.
pub(super) fn check_write_id(id: &str) -> Result<(), AppError> {
    if id.len() < 16
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AppError::BadRequest(
            "This form has no valid id; reload the page.".into(),
        ));
    }
    Ok(())
}

pub(super) fn patient_of(launch: &Launch) -> Result<String, AppError> {
    launch
        .context
        .patient
        .clone()
        .ok_or_else(|| AppError::BadRequest("Choose a patient first.".into()))
}

/// `Practitioner/…` of the signed-in user, when they are a practitioner.
pub(super) fn practitioner_of(launch: &Launch) -> Option<String> {
    launch
        .context
        .fhir_user
        .as_deref()
        .and_then(relative_reference)
        .filter(|r| r.starts_with("Practitioner/"))
}

// ---------------------------------------------------------------- referral

/// What a referral is built from, read from the EHR.
struct ReferContext {
    patient: crate::domain::visit::PatientSummary,
    facts: BTreeSet<String>,
    screenings: Vec<DomainScreening>,
    concerns: Vec<Concern>,
    /// References to the SDOH Conditions and Observations per domain.
    reasons: Vec<(Domain, String)>,
    /// Active medications (display text).
    medications: Vec<String>,
}

async fn load_refer_context(
    state: &AppState,
    client: &FhirClient,
    patient_id: &str,
) -> Result<ReferContext, AppError> {
    use fhir_sdk::r4b::resources::{Condition, Coverage, Observation, Patient};
    let subject = format!("Patient/{patient_id}");
    let sdoh = |extra: &[(&'static str, &str)]| {
        let mut p: Vec<(&str, String)> = vec![
            ("subject", subject.clone()),
            ("category", "sdoh".into()),
            ("_count", "200".into()),
        ];
        p.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        p
    };
    let obs_q = sdoh(&[("_sort", "-date")]);
    let cond_q = sdoh(&[]);
    let cov_q = [("beneficiary", subject.clone()), ("_count", "50".into())];
    let med_q = [
        ("subject", subject.clone()),
        ("status", "active".to_string()),
        ("_count", "50".to_string()),
    ];
    let (patient, observations, conditions, coverages, meds) = tokio::join!(
        client.read::<Patient>("Patient", patient_id),
        client.search("Observation", &obs_q),
        client.search("Condition", &cond_q),
        client.search("Coverage", &cov_q),
        client.search("MedicationRequest", &med_q),
    );
    let patient = views::patient(&patient?.resource);
    let observations = observations?;
    let conditions = conditions?;
    let obs = observations.resources::<Observation>("Observation").items;
    let screening_obs: Vec<_> = obs.iter().map(views::screening_observation).collect();
    let screenings = latest_screenings(&screening_obs);
    let concerns: Vec<Concern> = conditions
        .resources::<Condition>("Condition")
        .items
        .iter()
        .map(views::concern)
        .collect();
    let mut reasons: Vec<(Domain, String)> = concerns
        .iter()
        .filter(|c| c.verification.as_deref() != Some("refuted"))
        .filter(|c| c.clinical_status.as_deref() != Some("resolved"))
        .flat_map(|c| {
            c.domains
                .iter()
                .map(|d| (*d, format!("Condition/{}", c.id)))
        })
        .collect();
    // Without a concern, the positive screening answer is the reason.
    for (o, s) in obs.iter().zip(&screening_obs) {
        let Some(id) = o.id.as_ref().filter(|_| s.positive) else {
            continue;
        };
        for d in &s.domains {
            if !reasons.iter().any(|(rd, _)| rd == d) {
                reasons.push((*d, format!("Observation/{id}")));
            }
        }
    }
    let coverage_facts: Vec<_> = coverages?
        .resources::<Coverage>("Coverage")
        .items
        .iter()
        .map(|c| views::coverage(c, |_| None))
        .collect();
    let today = today();
    let facts = chart_facts(
        &coverage_facts,
        &state.regimes().payer_type_system,
        patient.age_on(today),
        today,
    );
    let medications = meds?
        .raw("MedicationRequest")
        .filter_map(|m| {
            m["medicationCodeableConcept"]["text"]
                .as_str()
                .or(m["medicationCodeableConcept"]["coding"][0]["display"].as_str())
                .map(String::from)
        })
        .collect();
    Ok(ReferContext {
        patient,
        facts,
        screenings,
        concerns,
        reasons,
        medications,
    })
}

#[derive(Deserialize, Default)]
struct ReferQuery {
    domain: Option<String>,
    /// Peer-support groups and patient associations.
    peer: Option<String>,
    /// A medicine: assistance programs covering it.
    medication: Option<String>,
    /// Language filter: a code, or `any`.
    lang: Option<String>,
    /// Include services that are full.
    all: Option<String>,
}

struct ServiceCard {
    id: String,
    name: String,
    organization: String,
    description: String,
    distance: String,
    languages: String,
    capacity: String,
    full: bool,
    eligibility: String,
    to_check: String,
    phone: String,
}

#[derive(Template)]
#[template(path = "refer.html")]
struct ReferPage {
    launch_id: String,
    csrf: String,
    referral_id: String,
    patient: String,
    title: String,
    domain: String,
    peer: bool,
    medication: String,
    lang: String,
    lang_label: String,
    all: bool,
    near: String,
    no_contact: bool,
    services: Vec<ServiceCard>,
    /// Other medicines the patient takes, to search by.
    medications: Vec<String>,
    /// For a medicine-cost barrier with a denial: start a formulary exception.
    suggest_formulary: bool,
}

fn capacity_words(c: Capacity, note: &Option<String>) -> String {
    let base = match c {
        Capacity::Accepting => "Taking new people",
        Capacity::Waitlist => "Waiting list",
        Capacity::Full => "Full",
        Capacity::Unknown => "Capacity unknown",
    };
    match note {
        Some(n) if !n.is_empty() => format!("{base}: {n}"),
        _ => base.to_string(),
    }
}

fn parse_domain(code: Option<&str>) -> Result<Option<Domain>, AppError> {
    match code.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => Domain::ALL
            .into_iter()
            .find(|d| d.code() == c)
            .map(Some)
            .ok_or_else(|| AppError::BadRequest(format!("Unknown social-risk domain {c:?}."))),
    }
}

async fn refer_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
    Query(q): Query<ReferQuery>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    let patient_id = patient_of(&launch)?;
    let domain = parse_domain(q.domain.as_deref())?;
    let peer = q.peer.is_some();
    if domain.is_none() && !peer && q.medication.is_none() {
        return Err(AppError::BadRequest(
            "Say what to look for: a domain, peer support or a medicine.".into(),
        ));
    }
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let ctx = load_refer_context(&state, &client, &patient_id).await?;
    let patient_lang = ctx
        .patient
        .language
        .as_ref()
        .map(|l| l.code.split('-').next().unwrap_or("en").to_lowercase());
    let lang = match q.lang.as_deref() {
        Some("any") => None,
        Some(l) if !l.is_empty() => Some(l.to_lowercase()),
        _ => patient_lang.filter(|l| l != "en"),
    };
    // A medicine-cost barrier with a known medicine: the programs covering it.
    let medication = q
        .medication
        .clone()
        .or_else(|| {
            (domain == Some(Domain::MedicalCostBurden))
                .then(|| ctx.medications.first().cloned())
                .flatten()
        })
        .filter(|m| !m.trim().is_empty());
    let term = medication.as_deref().and_then(medication_term);
    let all = q.all.is_some();
    let directory = state.directory();
    let hits = directory.search(&DirQuery {
        domain,
        peer_support: peer,
        near_postal_code: ctx.patient.postal_code.as_deref(),
        language: lang.as_deref(),
        facts: Some(ctx.facts.clone()),
        medication: term.as_deref(),
        include_full: all,
    });
    let services = hits
        .iter()
        .map(|h| ServiceCard {
            id: h.service.id.clone(),
            name: h.service.name.clone(),
            organization: h.service.organization.clone(),
            description: h.service.description.clone(),
            distance: h.km.map(|k| format!("{k:.1} km")).unwrap_or_default(),
            languages: h
                .service
                .languages
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            capacity: capacity_words(h.service.capacity, &h.service.capacity_note),
            full: h.service.capacity == Capacity::Full,
            eligibility: h.service.eligibility.clone(),
            to_check: h.to_check.join(", "),
            phone: h.service.phone.clone().unwrap_or_default(),
        })
        .collect();
    let title = match (domain, peer, &medication) {
        (_, true, _) => "Peer support and patient associations".to_string(),
        (Some(Domain::MedicalCostBurden), _, Some(m)) => format!("Help paying for {m}"),
        (Some(d), _, _) => format!("Services for {}", d.label().to_lowercase()),
        (None, _, Some(m)) => format!("Help paying for {m}"),
        (None, false, None) => "Services".to_string(),
    };
    let suggest_formulary = domain == Some(Domain::MedicalCostBurden) && medication.is_some();
    render(ReferPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        referral_id: random_token(16),
        patient: ctx.patient.name.clone(),
        title,
        domain: domain.map(|d| d.code().to_string()).unwrap_or_default(),
        peer,
        medication: medication.clone().unwrap_or_default(),
        lang_label: lang.clone().unwrap_or_else(|| "any language".into()),
        lang: lang.unwrap_or_default(),
        all,
        near: ctx.patient.postal_code.clone().unwrap_or_default(),
        no_contact: no_contact_required(&ctx.screenings, &ctx.concerns),
        services,
        medications: ctx
            .medications
            .iter()
            .filter(|m| Some(*m) != medication.as_ref())
            .cloned()
            .collect(),
        suggest_formulary,
    })
}

#[derive(Deserialize)]
struct ReferForm {
    csrf: String,
    referral_id: String,
    domain: String,
    #[serde(default)]
    peer: String,
    service: String,
    /// `refer` (the patient agrees to share) or `patient-task` (they call).
    action: String,
    #[serde(default)]
    priority: String,
}

/// Instructions for the patient in their language (en, fr, es, pt).
fn patient_instruction(lang: &str, service: &str, phone: Option<&str>) -> String {
    let phone = phone.unwrap_or_default();
    let with_phone = |s: String, p: &str| {
        if phone.is_empty() {
            s
        } else {
            format!("{s} {p} {phone}.")
        }
    };
    match lang {
        "fr" => with_phone(format!("Contactez {service}."), "Téléphone :"),
        "es" => with_phone(format!("Comuníquese con {service}."), "Teléfono:"),
        "pt" => with_phone(format!("Entre em contato com {service}."), "Telefone:"),
        _ => with_phone(format!("Contact {service}."), "Phone:"),
    }
}

/// A review-material Task's description in the patient's language.
fn reading_instruction(lang: &str, service: &str) -> String {
    match lang {
        "fr" => format!("Lisez les informations sur {service}."),
        "es" => format!("Lea la información sobre {service}."),
        "pt" => format!("Leia as informações sobre {service}."),
        _ => format!("Read the information about {service}."),
    }
}

async fn refer(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
    AxumForm(form): AxumForm<ReferForm>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    check_csrf(&launch, &form.csrf)?;
    check_write_id(&form.referral_id)?;
    // Each action of a card is its own write: a referral, a call or the
    // material to read are three records, each recorded once.
    let write_id = format!(
        "{}-{}",
        form.referral_id,
        match form.action.as_str() {
            "refer" => "referral",
            "patient-task" => "call",
            "patient-material" => "read",
            _ => {
                return Err(AppError::BadRequest(
                    "Choose refer or give the patient the contact.".into(),
                ));
            }
        }
    );
    let patient_id = patient_of(&launch)?;
    let peer = !form.peer.is_empty();
    let domain = parse_domain(Some(&form.domain))?;
    let service = state
        .directory()
        .services
        .iter()
        .find(|s| s.id == form.service)
        .ok_or_else(|| {
            AppError::BadRequest("This service is not in the directory (any more).".into())
        })?;
    let domain = domain
        .or_else(|| service.domains.iter().next().copied())
        .unwrap_or(Domain::SocialConnection);
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let ctx = load_refer_context(&state, &client, &patient_id).await?;
    let patient = format!("Patient/{patient_id}");
    let requester = practitioner_of(&launch);
    let authored = now_fhir()?;
    let (bundle, what) = match form.action.as_str() {
        "refer" => {
            let reasons: Vec<String> = ctx
                .reasons
                .iter()
                .filter(|(d, _)| *d == domain && !peer)
                .map(|(_, r)| r.clone())
                .collect();
            let priority = match form.priority.as_str() {
                "urgent" | "asap" | "stat" => form.priority.as_str(),
                _ => "routine",
            };
            let encounter = launch
                .context
                .encounter
                .as_ref()
                .map(|e| format!("Encounter/{e}"));
            let record = ReferralRecord {
                id: &write_id,
                patient: &patient,
                encounter: encounter.as_deref(),
                requester: requester.as_deref(),
                domain,
                service,
                reasons: &reasons,
                screenings: &ctx.screenings,
                concerns: &ctx.concerns,
                authored: &authored,
                priority,
                code: if peer { None } else { default_code(domain) },
                consent: true,
                practice: None,
            };
            (
                crate::fhir::referral::transaction(&record),
                format!("Referral to {} sent", service.name),
            )
        }
        "patient-task" | "patient-material" => {
            let lang = ctx
                .patient
                .language
                .as_ref()
                .map(|l| l.code.split('-').next().unwrap_or("en").to_lowercase())
                .filter(|l| ["en", "fr", "es", "pt"].contains(&l.as_str()))
                .unwrap_or_else(|| "en".into());
            let kind = if form.action == "patient-material" {
                PatientTaskKind::ReviewMaterial
            } else {
                PatientTaskKind::MakeContact
            };
            let description = match kind {
                PatientTaskKind::MakeContact => {
                    patient_instruction(&lang, &service.name, service.phone.as_deref())
                }
                PatientTaskKind::ReviewMaterial => reading_instruction(&lang, &service.name),
            };
            let record = PatientTaskRecord {
                id: &write_id,
                patient: &patient,
                requester: requester.as_deref(),
                kind,
                service,
                description: &description,
                language: &lang,
                authored: &authored,
            };
            (
                crate::fhir::referral::patient_task(&record),
                format!("Task for the patient recorded: {description}"),
            )
        }
        _ => {
            return Err(AppError::BadRequest(
                "Choose refer or give the patient the contact.".into(),
            ));
        }
    };
    state.schema()?.validate_bundle(&bundle)?;
    launch.check_write(&bundle)?;
    let summary = serde_json::json!({ "what": what });
    let new = write_through_outbox(&state, &launch.id, &write_id, &bundle, &summary).await?;
    Ok(Redirect::to(&done_url(&launch.id, &write_id, new)).into_response())
}

// ------------------------------------------------------------------ appeal

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

/// A denial read from the EHR, with what the appeal needs of it.
struct ReadDenial {
    denial: crate::domain::visit::Denial,
    /// The Coverage the claim was made under, if the Claim says.
    coverage: Option<String>,
    /// The item's code (system, code).
    item_code: Option<(String, String)>,
}

async fn read_denial(
    client: &FhirClient,
    patient_id: &str,
    cr_id: &str,
) -> Result<ReadDenial, AppError> {
    use fhir_sdk::r4b::resources::ClaimResponse;
    if !crate::fhir::client::is_valid_id(cr_id) {
        return Err(AppError::BadRequest(
            "The denial id is not a valid FHIR id.".into(),
        ));
    }
    let page = client
        .search(
            "ClaimResponse",
            &[
                ("_id", cr_id.to_string()),
                ("patient", format!("Patient/{patient_id}")),
                ("_include", "ClaimResponse:request".into()),
                ("_include", "ClaimResponse:insurer".into()),
            ],
        )
        .await?;
    let claim = page.raw("Claim").next().cloned();
    let names = crate::fhir::context::organization_names(&page, &mut |_, _| {});
    let service = claim.as_ref().and_then(|c| {
        c["item"][0]["productOrService"]["text"]
            .as_str()
            .map(String::from)
    });
    // The server was asked for this patient's denial; checked here too, so a
    // lenient server cannot put another patient's denial in this appeal.
    let patient_ref = format!("Patient/{patient_id}");
    let cr = page
        .resources::<ClaimResponse>("ClaimResponse")
        .items
        .into_iter()
        .find(|c| c.patient.reference.as_deref() == Some(patient_ref.as_str()))
        .ok_or_else(|| AppError::BadRequest("There is no such denial for this patient.".into()))?;
    let denial = views::denial(&cr, |r| crate::fhir::context::lookup(&names, r), service)
        .ok_or_else(|| AppError::BadRequest("This claim response denies nothing.".into()))?;
    Ok(ReadDenial {
        denial,
        coverage: claim.as_ref().and_then(|c| {
            c["insurance"][0]["coverage"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Coverage/"))
                .map(String::from)
        }),
        item_code: claim.as_ref().and_then(|c| {
            let k = &c["item"][0]["productOrService"]["coding"][0];
            Some((
                k["system"].as_str()?.to_string(),
                k["code"].as_str()?.to_string(),
            ))
        }),
    })
}

/// [`read_denial`] when the form names a denial.
async fn read_denial_if_any(
    client: &FhirClient,
    patient_id: &str,
    denial: &str,
) -> Result<Option<ReadDenial>, AppError> {
    if denial.is_empty() {
        return Ok(None);
    }
    read_denial(client, patient_id, denial).await.map(Some)
}

/// The patient's coverages, with their payers' names (one search).
async fn patient_coverages(
    client: &FhirClient,
    patient_id: &str,
) -> Result<Vec<crate::domain::coverage::CoverageFacts>, AppError> {
    use fhir_sdk::r4b::resources::Coverage;
    let page = client
        .search(
            "Coverage",
            &[
                ("beneficiary", format!("Patient/{patient_id}")),
                ("_include", "Coverage:payor".into()),
                ("_count", "50".into()),
            ],
        )
        .await?;
    let names = crate::fhir::context::organization_names(&page, &mut |_, _| {});
    Ok(page
        .resources::<Coverage>("Coverage")
        .items
        .iter()
        .map(|c| views::coverage(c, |r| crate::fhir::context::lookup(&names, r)))
        .collect())
}

/// The coverage choices of the appeal form: `selected`, else the first active.
fn coverage_choices(
    state: &AppState,
    facts: &[crate::domain::coverage::CoverageFacts],
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
    appeal_id: String,
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
    jar: CookieJar,
    Path(id): Path<String>,
    Query(q): Query<AppealQuery>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    let form = AppealForm {
        denial: q.denial.unwrap_or_default(),
        ..Default::default()
    };
    appeal_form_page(&state, &launch, form, vec![], random_token(16)).await
}

async fn appeal_form_page(
    state: &AppState,
    launch: &Launch,
    mut form: AppealForm,
    errors: Vec<String>,
    appeal_id: String,
) -> Result<Response, AppError> {
    let patient_id = patient_of(launch)?;
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let (read, patient, facts) = tokio::join!(
        read_denial_if_any(&client, &patient_id, &form.denial),
        client.read::<fhir_sdk::r4b::resources::Patient>("Patient", &patient_id),
        patient_coverages(&client, &patient_id),
    );
    let read = read?;
    let patient = views::patient(&patient?.resource);
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
    jar: CookieJar,
    Path(id): Path<String>,
    AxumForm(form): AxumForm<AppealForm>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    check_csrf(&launch, &form.csrf)?;
    check_write_id(&form.appeal_id)?;
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
        read_denial_if_any(&client, &patient_id, &form.denial),
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
        let appeal_id = form.appeal_id.clone();
        let page = appeal_form_page(&state, &launch, form, errors, appeal_id).await?;
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
        id: &form.appeal_id,
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
    let new = write_through_outbox(
        &state,
        &launch.id,
        &form.appeal_id,
        &bundle,
        &serde_json::json!({ "what": what }),
    )
    .await?;
    Ok(Redirect::to(&done_url(&launch.id, &form.appeal_id, new)).into_response())
}

// -------------------------------------------------------------------- task

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

fn moves(from: Status, party: Party) -> Vec<Move> {
    let key = match party {
        Party::Requester => "requester",
        Party::Performer => "performer",
    };
    next(from, party)
        .into_iter()
        .map(|s| Move {
            value: format!("{key}:{}", s.code()),
            label: move_label(s).to_string(),
            needs_reason: crate::domain::referral::NEEDS_REASON.contains(&s),
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

fn value_text(v: &Value) -> String {
    for key in ["valueString", "valueDate", "valueDateTime"] {
        if let Some(s) = v[key].as_str() {
            return s.to_string();
        }
    }
    if let Some(cc) = v.get("valueCodeableConcept") {
        let coding = &cc["coding"][0];
        let code = coding["code"].as_str().unwrap_or_default();
        let words = coding["display"]
            .as_str()
            .or(cc["text"].as_str())
            .unwrap_or_default();
        return format!("{code} {words}").trim().to_string();
    }
    if let Some(r) = v.get("valueReference") {
        return r["display"].as_str().unwrap_or_default().to_string();
    }
    String::new()
}

#[derive(Deserialize, Default)]
struct TaskQuery {
    /// A letter for this task had been stored already.
    again: Option<String>,
}

async fn task_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Path((id, tid)): Path<(String, String)>,
    Query(q): Query<TaskQuery>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
    let notice = q.again.map(|_| {
        "This letter had been stored already: nothing new was recorded. Draft it again to store another version.".to_string()
    });
    show_task(&state, &launch, &tid, notice, ChangeForm::default()).await
}

pub(super) async fn read_task(
    client: &FhirClient,
    launch: &Launch,
    tid: &str,
) -> Result<(Value, String), AppError> {
    if !crate::fhir::client::is_valid_id(tid) {
        return Err(AppError::BadRequest(
            "The task id is not a valid FHIR id.".into(),
        ));
    }
    let read = client.read_json("Task", tid).await?;
    // A Task of another patient is not shown in this patient's launch.
    if let Some(p) = launch.patient_ref()
        && read.resource["for"]["reference"].as_str() != Some(p.as_str())
    {
        return Err(AppError::BadRequest(
            "This task is not about this launch's patient.".into(),
        ));
    }
    let version = read
        .version
        .clone()
        .or_else(|| {
            read.resource["meta"]["versionId"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default();
    Ok((read.resource, version))
}

async fn show_task(
    state: &AppState,
    launch: &Launch,
    tid: &str,
    conflict: Option<String>,
    kept: ChangeForm,
) -> Result<Response, AppError> {
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let mut letters_q = vec![
        ("related", format!("Task/{tid}")),
        ("_count", "20".to_string()),
    ];
    if let Some(p) = launch.patient_ref() {
        letters_q.push(("subject", p));
    }
    let (task, letters) = tokio::join!(
        read_task(&client, launch, tid),
        client.search("DocumentReference", &letters_q),
    );
    let (task, version) = task?;
    let status = Status::parse(task["status"].as_str().unwrap_or_default());
    let code = task["code"]["coding"][0]["code"]
        .as_str()
        .unwrap_or_default();
    let is_appeal = task["code"]["coding"][0]["system"] == crate::domain::visit::APPEAL_TASK_SYSTEM;
    let deadline = task["restriction"]["period"]["end"]
        .as_str()
        .map(|d| d.chars().take(10).collect::<String>())
        .unwrap_or_default();
    let warning = crate::domain::iso_date(&deadline)
        .and_then(|d| deadline_warning(d, today()))
        .map(|w| match w {
            DeadlineWarning::Overdue { days_late } => format!("Overdue by {days_late} day(s)"),
            DeadlineWarning::DueSoon { days_left: 0, .. } => "Due today".to_string(),
            DeadlineWarning::DueSoon { days_left, .. } => format!("Due in {days_left} day(s)"),
        })
        .unwrap_or_default();
    let list = |key: &str| task[key].as_array().cloned().unwrap_or_default();
    // Appeals are the practice's own work: one set of buttons. Referrals
    // show what the practice may do and what the service reports apart.
    let (ours, theirs) = match status {
        Some(s) if is_appeal => {
            let mut all = moves(s, Party::Performer);
            all.extend(
                moves(s, Party::Requester)
                    .into_iter()
                    .filter(|m| !m.value.ends_with(":cancelled")),
            );
            (all, vec![])
        }
        Some(s) => (moves(s, Party::Requester), moves(s, Party::Performer)),
        None => (vec![], vec![]),
    };
    render(TaskPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        task_id: tid.to_string(),
        version,
        title: task["description"]
            .as_str()
            .unwrap_or("(no description)")
            .to_string(),
        kind: task["code"]["coding"][0]["display"]
            .as_str()
            .unwrap_or(code)
            .to_string(),
        is_appeal,
        status: task["status"].as_str().unwrap_or_default().to_string(),
        status_reason: task["statusReason"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        priority: task["priority"].as_str().unwrap_or("routine").to_string(),
        owner: task["owner"]["display"]
            .as_str()
            .or(task["owner"]["reference"].as_str())
            .unwrap_or("unassigned")
            .to_string(),
        authored: task["authoredOn"]
            .as_str()
            .map(|d| d.chars().take(10).collect())
            .unwrap_or_default(),
        deadline,
        deadline_warning: warning,
        inputs: list("input")
            .iter()
            .map(|i| {
                let code = i["type"]["coding"][0]["code"].as_str().unwrap_or_default();
                (input_label(code).to_string(), value_text(i))
            })
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        outputs: list("output")
            .iter()
            .filter(|o| o["type"]["coding"][0]["system"] == APPEAL_INPUT_SYSTEM)
            .map(value_text)
            .collect(),
        notes: list("note")
            .iter()
            .map(|n| {
                (
                    n["time"]
                        .as_str()
                        .map(|t| t.chars().take(16).collect())
                        .unwrap_or_default(),
                    n["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        ours,
        theirs,
        outcomes: AppealOutcome::ALL
            .iter()
            .map(|o| (o.code().to_string(), o.label().to_string()))
            .collect(),
        letters: letters
            .map(|page| {
                page.raw("DocumentReference")
                    .filter_map(crate::fhir::letter::summary)
                    .collect()
            })
            .unwrap_or_default(),
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
    jar: CookieJar,
    Path((id, tid)): Path<(String, String)>,
    AxumForm(form): AxumForm<ChangeForm>,
) -> Result<Response, AppError> {
    let launch = open_launch(&state, &jar, &id).await?;
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
    let (current, version) = read_task(&client, &launch, &tid).await?;
    let author = practitioner_of(&launch);
    let now = now_fhir()?;
    let is_appeal =
        current["code"]["coding"][0]["system"] == crate::domain::visit::APPEAL_TASK_SYSTEM;
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
                current["status"].as_str().unwrap_or("changed")
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
        Ok(mut saved) => {
            if let Some(queue) = state.queue(&launch.iss) {
                // The index keeps the version the server gave (its ETag).
                if let Some(v) = &saved.version {
                    saved.resource["meta"]["versionId"] = serde_json::json!(v);
                }
                queue.written(&saved.resource);
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
