//! Referring the patient from the visit: to a community service, or
//! giving them the contact.
//!
//! `GET /l/{launch}/refer?domain=…` lists services from the directory for a
//! domain (or peer support, or a medicine), near the patient's postal code,
//! in their language, open to them; `POST` records the referral
//! (ServiceRequest + Task, a Consent only when the user ticked that the
//! patient agreed, and the service as HealthcareService + Organization)
//! or a Task for the patient. The requester is the signed-in user's
//! PractitionerRole, else the practice's Organization
//! ([`crate::fhir::people::requester`]); with neither, nothing is written.
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
use super::extract::{Launched, PatientLaunch, WriteId, check_csrf, patient_of, user_reference};
use super::outbox::{done_url, write_through};
use super::{AppError, AppState};
use crate::domain::directory::{Capacity, Query as DirQuery, medication_term};
use crate::domain::sdoh::Domain;
use crate::fhir::referral::{
    Consented, PatientTaskKind, PatientTaskRecord, ReferralRecord, default_code,
    no_contact_required, peer_support_code, read_context,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/l/{id}/refer", get(refer_page).post(refer))
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
    Query(q): Query<ReferQuery>,
    PatientLaunch {
        launch,
        patient: patient_id,
    }: PatientLaunch,
) -> Result<Response, AppError> {
    let domain = parse_domain(q.domain.as_deref())?;
    let peer = q.peer.is_some();
    if domain.is_none() && !peer && q.medication.is_none() {
        return Err(AppError::BadRequest(
            "Say what to look for: a domain, peer support or a medicine.".into(),
        ));
    }
    let client = launch.fhir_client(state.http().clone(), state.limits())?;
    let ctx = read_context(
        &client,
        &patient_id,
        &state.regimes().payer_type_system,
        today(),
    )
    .await?;
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
        referral_id: WriteId::fresh().to_string(),
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
    referral_id: WriteId,
    domain: String,
    #[serde(default)]
    peer: String,
    service: String,
    /// `refer` (the patient agrees to share) or `patient-task` (they call).
    action: String,
    #[serde(default)]
    priority: String,
    /// `yes` when the user ticked that the patient agrees to share their
    /// need and contact details with the service.
    #[serde(default)]
    consent: String,
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
    Launched(launch): Launched,
    AxumForm(form): AxumForm<ReferForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let referral_id = form.referral_id.check()?;
    // Each action of a card is its own write: a referral, a call or the
    // material to read are three records, each recorded once.
    let write_id = format!(
        "{}-{}",
        referral_id,
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
    let ctx = read_context(
        &client,
        &patient_id,
        &state.regimes().payer_type_system,
        today(),
    )
    .await?;
    let patient = format!("Patient/{patient_id}");
    let user = user_reference(&launch);
    let requester = crate::fhir::people::requester(
        &client,
        user.as_deref(),
        state.practice_organization(),
    )
    .await?
    .ok_or_else(|| {
        AppError::Unprocessable(
            "Passerelle cannot name who asks for this: the signed-in user has no PractitionerRole on the EHR's server and no practice Organization is configured (PASSERELLE_PRACTICE_ORGANIZATION). Nothing was recorded.".into(),
        )
    })?;
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
            let consent = match (form.consent.as_str(), requester.organization.as_deref()) {
                ("yes", Some(organization)) => Some(Consented { organization }),
                ("yes", None) => {
                    return Err(AppError::Unprocessable(
                        "The patient's consent needs the practice's Organization (SDOHCC Consent names it), and none is known: configure PASSERELLE_PRACTICE_ORGANIZATION. Nothing was recorded.".into(),
                    ));
                }
                _ => None,
            };
            let record = ReferralRecord {
                id: &write_id,
                patient: &patient,
                encounter: encounter.as_deref(),
                requester: &requester.reference,
                domain,
                service,
                reasons: &reasons,
                screenings: &ctx.screenings,
                concerns: &ctx.concerns,
                authored: &authored,
                priority,
                code: if peer {
                    peer_support_code()
                } else {
                    default_code(domain)
                },
                consent,
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
                requester: &requester.reference,
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
    let new = write_through(&state, &launch.id, &write_id, &bundle, &summary).await?;
    Ok(Redirect::to(&done_url(&launch.id, &write_id, new)).into_response())
}
