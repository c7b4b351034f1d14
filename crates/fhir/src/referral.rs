//! A referral as one FHIR transaction (Gravity SDOH Clinical Care IG STU
//! 2.3.0): an SDOHCC ServiceRequest and the SDOHCC Task for referral
//! management that tracks it (`code` fulfill, `intent` order, `focus` the
//! ServiceRequest, status `requested`), both created with `ifNoneExist` on
//! identifiers derived from the referral's id, so sending again records
//! nothing twice.
//!
//! Safety: when the patient's intimate-partner-violence screen is positive
//! (or such a concern is not refuted), the ServiceRequest carries
//! `orderDetail` = `contacting-subject-prohibited` (SDOHCC ServiceRequest,
//! slice SubjectContactDetail), so the service does not contact the patient.
//! This builder is the one path by which Passerelle creates referrals.
//!
//! What a referral is built from is read here too ([`read_context`]): the
//! patient, their SDOH screenings and concerns (the referral's reasons),
//! their coverage (which services they are eligible for) and medicines.

use std::collections::BTreeSet;

use fhir_sdk::r4b::resources::{Coverage, Patient};
use serde_json::{Value, json};
use time::Date;

use super::bundle::urn;
use super::client::FhirClient;
use super::error::FhirError;
use super::views;
use super::{profiles, sdoh};

use crate::domain::directory::{Service, chart_facts};
use crate::domain::evidence;
use crate::domain::screening::Rules;
use crate::domain::sdoh::{Domain, SDOHCC_TEMPORARY_CODES};
use crate::domain::visit::{
    Concern, DomainScreening, PatientSummary, TASK_CODE_SYSTEM, sort_concerns,
};

/// What a referral is built from, read from the EHR.
#[derive(Debug, Clone)]
pub struct ReferContext {
    pub patient: PatientSummary,
    /// What the directory's eligibility rules know of the patient
    /// ([`chart_facts`]).
    pub facts: BTreeSet<String>,
    pub screenings: Vec<DomainScreening>,
    pub concerns: Vec<Concern>,
    /// References to the SDOH Conditions and Observations per domain.
    pub reasons: Vec<(Domain, String)>,
    /// Active medications (display text).
    pub medications: Vec<String>,
}

/// Read what a referral for `patient_id` is built from, concurrently.
/// `payer_type_system` is the regime table's code system of payer types
/// (it tells Medicaid from the rest), `today` the date the age and the
/// coverage are taken on.
pub async fn read_context(
    client: &FhirClient,
    patient_id: &str,
    payer_type_system: &str,
    today: Date,
) -> Result<ReferContext, FhirError> {
    let subject = format!("Patient/{patient_id}");
    let cov_q = [("beneficiary", subject.clone()), ("_count", "50".into())];
    let med_q = [
        ("subject", subject.clone()),
        ("status", "active".to_string()),
        ("_count", "50".to_string()),
    ];
    let rules = Rules::shared();
    let (patient, evidence, coverages, meds) = tokio::join!(
        client.read::<Patient>("Patient", patient_id),
        sdoh::read(client, rules, patient_id),
        client.search("Coverage", &cov_q),
        client.search("MedicationRequest", &med_q),
    );
    let patient = views::patient(&patient?.resource);
    // Every evidence search must answer: the safety rule below never
    // decides on part of the record.
    let found = evidence?;
    let screenings = evidence::read(rules, &found);
    let mut concerns = found.concerns;
    // Health concerns are searched without _sort: ordered here.
    sort_concerns(&mut concerns);
    let reasons = reasons(&screenings, &concerns);
    let coverage_facts: Vec<_> = coverages?
        .resources::<Coverage>("Coverage")
        .items
        .iter()
        .map(|c| views::coverage(c, |_| None))
        .collect();
    let facts = chart_facts(
        &coverage_facts,
        payer_type_system,
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

/// The referral's reasons per domain: its current concerns (not refuted,
/// not resolved), else the record that shows the domain's positive result
/// (an Observation, a QuestionnaireResponse or a Condition, whoever wrote it).
pub fn reasons(screenings: &[DomainScreening], concerns: &[Concern]) -> Vec<(Domain, String)> {
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
    for s in screenings.iter().filter(|s| s.positive()) {
        if let Some(e) = &s.evidence
            && !reasons.iter().any(|(d, _)| *d == s.domain)
        {
            reasons.push((s.domain, e.clone()));
        }
    }
    reasons
}

/// Identifier system of referrals Passerelle makes.
pub const REFERRAL_ID_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/referral";
pub use super::service::HSDS_SERVICE_SYSTEM;

#[derive(serde::Deserialize)]
struct CodeTable {
    system: String,
    domains: std::collections::HashMap<String, DomainCodes>,
    general: CodeEntry,
    peer_support: CodeEntry,
}

#[derive(serde::Deserialize)]
struct DomainCodes {
    codes: Vec<CodeEntry>,
}

#[derive(serde::Deserialize)]
struct CodeEntry {
    code: String,
    display: String,
}

fn code_table() -> &'static CodeTable {
    static TABLE: std::sync::OnceLock<CodeTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("../../../profiles/referral-codes.json"))
            .expect("profiles/referral-codes.json is valid (tested)")
    })
}

/// A `ServiceRequest.code` coding: (system, code, display).
pub type Code = (&'static str, &'static str, &'static str);

fn coding(t: &'static CodeTable, e: &'static CodeEntry) -> Code {
    (t.system.as_str(), e.code.as_str(), e.display.as_str())
}

/// The default `ServiceRequest.code` of a domain's referrals. SDOHCC
/// ServiceRequest binds `code` (required) to US Core Procedure Codes, with
/// a per-category additional binding to the domain's Gravity value set: the
/// first code `profiles/referral-codes.json` lists from that value set, else
/// the table's general social-care referral procedure (SNOMED CT), so no
/// referral is sent with a text-only code.
pub fn default_code(domain: Domain) -> Code {
    let t = code_table();
    match t.domains.get(domain.code()).and_then(|d| d.codes.first()) {
        Some(first) => coding(t, first),
        None => coding(t, &t.general),
    }
}

/// The `ServiceRequest.code` of a referral to peer support or a patient
/// association (category social-connection): SNOMED CT "Referral to peer
/// support", as an SDOHCC ServiceRequest example of that category codes it.
pub fn peer_support_code() -> Code {
    let t = code_table();
    coding(t, &t.peer_support)
}

/// Must referrals avoid contacting the patient? Yes when the latest
/// intimate-partner-violence result is positive (preliminary included),
/// whoever recorded it and in whichever shape ([`crate::domain::evidence`]:
/// a HITS total of 11 or more, PRAPARE's partner question, an IPV concern
/// coded by category or by ICD-10-CM/SNOMED code), or when an IPV concern
/// is neither refuted nor entered in error (even resolved: Passerelle
/// errs on the side of not calling).
pub fn no_contact_required(screenings: &[DomainScreening], concerns: &[Concern]) -> bool {
    let screened_positive = screenings
        .iter()
        .any(|s| s.domain == Domain::IntimatePartnerViolence && s.positive());
    let concern = concerns.iter().any(|c| {
        c.domains.contains(&Domain::IntimatePartnerViolence) && !evidence::concern_void(c)
    });
    screened_positive || concern
}

/// The patient said yes to sharing, at the visit: what the Consent needs
/// besides the referral (SDOHCC Consent: `organization` 1..1, the
/// organization that holds the consent, US Core Organization).
#[derive(Debug, Clone, Copy)]
pub struct Consented<'a> {
    /// `Organization/…` of the practice.
    pub organization: &'a str,
}

/// Everything one referral records.
#[derive(Debug, Clone)]
pub struct ReferralRecord<'a> {
    /// Made by Passerelle when the referral is prepared: the idempotency key.
    pub id: &'a str,
    pub patient: &'a str,
    pub encounter: Option<&'a str>,
    /// `PractitionerRole/…` or `Organization/…`: SDOHCC Task For Referral
    /// Management `requester` 1..1, only SDOHCC PractitionerRole or US Core
    /// Organization (also the ServiceRequest's requester).
    pub requester: &'a str,
    pub domain: Domain,
    pub service: &'a Service,
    /// References to the Conditions or Observations the referral addresses.
    pub reasons: &'a [String],
    /// The patient's latest screenings and SDOH concerns: the builder decides
    /// from them whether the service may contact the patient.
    pub screenings: &'a [DomainScreening],
    pub concerns: &'a [Concern],
    /// FHIR dateTime.
    pub authored: &'a str,
    /// routine, urgent, asap or stat.
    pub priority: &'a str,
    /// `ServiceRequest.code` ([`default_code`], [`peer_support_code`]).
    pub code: Code,
    /// The patient agreed that their need and contact details go to the
    /// service: a Consent is recorded and cited in `supportingInfo`. `None`:
    /// no Consent, and nothing cites one.
    pub consent: Option<Consented<'a>>,
}

fn entry(id_value: &str, resource: Value) -> Value {
    super::bundle::conditional_create(REFERRAL_ID_SYSTEM, id_value, resource)
}

/// The transaction Bundle of one referral: the ServiceRequest, its Task,
/// the Consent if the patient gave it, and the directory service as
/// HealthcareService + Organization (+ Location) ([`super::service`]).
///
/// `ServiceRequest.performer` is the HealthcareService (SDOHCC
/// ServiceRequest allows HealthcareService among its performer targets);
/// `Task.owner` the Organization that provides it (SDOHCC Task For Referral
/// Management, `owner`: the organisation that claims and fulfils the Task),
/// so the organisation finds it with `Task?owner=Organization/<id>`.
pub fn transaction(r: &ReferralRecord) -> Value {
    let sr_id = format!("{}/service-request", r.id);
    let task_id = format!("{}/task", r.id);
    let place = super::service::materialise(r.service);
    let (system, code, display) = r.code;
    let mut sr = json!({
        "resourceType": "ServiceRequest",
        "meta": { "profile": [profiles::SDOHCC_SERVICE_REQUEST] },
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": sr_id }],
        "status": "active",
        "intent": "order",
        "category": [
            { "coding": [{ "system": "http://snomed.info/sct", "code": "410606002", "display": "Social service procedure" }] },
            { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": r.domain.code(), "display": r.domain.label() }] }
        ],
        "code": {
            "coding": [{ "system": system, "code": code, "display": display }],
            "text": format!("Referral to {}", r.service.name)
        },
        "priority": r.priority,
        "subject": { "reference": r.patient },
        "authoredOn": r.authored,
        "requester": { "reference": r.requester },
        "performer": [place.service],
    });
    if no_contact_required(r.screenings, r.concerns) {
        sr["orderDetail"] = json!([{ "coding": [{
            "system": SDOHCC_TEMPORARY_CODES, "code": "contacting-subject-prohibited", "display": "Contacting Subject Prohibited"
        }] }]);
    }
    if !r.reasons.is_empty() {
        sr["reasonReference"] = Value::Array(
            r.reasons
                .iter()
                .map(|x| json!({ "reference": x }))
                .collect(),
        );
    }
    if let Some(e) = r.encounter {
        sr["encounter"] = json!({ "reference": e });
    }
    let task = json!({
        "resourceType": "Task",
        "meta": { "profile": [profiles::SDOHCC_TASK_REFERRAL] },
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": task_id }],
        "status": "requested",
        "intent": "order",
        "priority": r.priority,
        "code": { "coding": [{ "system": TASK_CODE_SYSTEM, "code": "fulfill", "display": "Fulfill the focal request" }] },
        "description": format!("Referral to {}", r.service.name),
        "focus": { "reference": urn(&sr_id) },
        "for": { "reference": r.patient },
        "authoredOn": r.authored,
        "requester": { "reference": r.requester },
        "owner": place.organization,
    });
    let consent_entry = r.consent.map(|consented| {
        let consent_id = format!("{}/consent", r.id);
        sr["supportingInfo"] = json!([{ "reference": urn(&consent_id), "display": "Patient consent to share with the service" }]);
        entry(&consent_id, consent(r, consented, &place.organization))
    });
    let mut entries = vec![entry(&sr_id, sr), entry(&task_id, task)];
    entries.extend(consent_entry);
    entries.extend(place.entries);
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

/// The patient's consent to disclose their need and contact details to the
/// service (SDOHCC Consent: scope patient-privacy, category IDSCL
/// "information disclosure", `organization` the practice, `source[x]` 1..:
/// here an Attachment saying how and when it was given; a permit provision
/// naming the recipient Organization).
fn consent(r: &ReferralRecord, consented: Consented, recipient: &Value) -> Value {
    use base64::Engine;
    let recipient_name = recipient["display"].as_str().unwrap_or_default();
    let statement = format!(
        "At the visit on {}, the patient agreed that their need and contact details go to {} ({}), for this referral. Recorded by {}.",
        r.authored.get(..10).unwrap_or(r.authored),
        r.service.name,
        recipient_name,
        r.requester,
    );
    json!({
        "resourceType": "Consent",
        "meta": { "profile": [profiles::SDOHCC_CONSENT] },
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": format!("{}/consent", r.id) }],
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy", "display": "Privacy Consent" }] },
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IDSCL", "display": "information disclosure" }] }],
        "patient": { "reference": r.patient },
        "performer": [{ "reference": r.patient }],
        "dateTime": r.authored,
        "organization": [{ "reference": consented.organization }],
        "sourceAttachment": {
            "contentType": "text/plain; charset=utf-8",
            "language": "en",
            "title": "Verbal consent recorded at the visit",
            "creation": r.authored,
            "data": base64::engine::general_purpose::STANDARD.encode(statement.as_bytes()),
        },
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN", "display": "opt-in" }] },
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient" }] },
                    "reference": recipient,
                },
                {
                    "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT", "display": "author (originator)" }] },
                    "reference": { "reference": r.requester },
                }
            ],
            "purpose": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT", "display": "treatment" }],
        },
    })
}

/// What a Task for the patient asks them to do (SDOHCC Task For Patient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientTaskKind {
    /// Contact a service themselves (`make-contact`; `description` required,
    /// the service in `input` typed `contact-entity`).
    MakeContact,
    /// Read material about the service (`review-material`).
    ReviewMaterial,
}

impl PatientTaskKind {
    pub fn code(self) -> &'static str {
        match self {
            PatientTaskKind::MakeContact => "make-contact",
            PatientTaskKind::ReviewMaterial => "review-material",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            PatientTaskKind::MakeContact => "Make Contact",
            PatientTaskKind::ReviewMaterial => "Review Material",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        [
            PatientTaskKind::MakeContact,
            PatientTaskKind::ReviewMaterial,
        ]
        .into_iter()
        .find(|k| k.code() == code)
    }
}

/// One Task for the patient.
#[derive(Debug, Clone)]
pub struct PatientTaskRecord<'a> {
    pub id: &'a str,
    pub patient: &'a str,
    /// `PractitionerRole/…` or `Organization/…` (SDOHCC Task For Patient,
    /// `requester` 1..1).
    pub requester: &'a str,
    pub kind: PatientTaskKind,
    pub service: &'a Service,
    /// In the patient's language.
    pub description: &'a str,
    /// BCP 47 code of the description's language.
    pub language: &'a str,
    pub authored: &'a str,
}

/// The transaction creating a Task for the patient (status `ready`, the
/// first status of SDOHCC Task For Patient's state machine
/// ([`crate::domain::patient_task`]); owner the patient), idempotent like
/// every write. The service to contact is a reference to its
/// HealthcareService (SDOHCC Task For Patient, `input[Contact].value[x]`:
/// SDOHCC HealthcareService among its targets), written in the same
/// transaction ([`super::service`]).
pub fn patient_task(r: &PatientTaskRecord) -> Value {
    let task_id = format!("{}/{}", r.id, r.kind.code());
    let place = super::service::materialise(r.service);
    let mut task = json!({
        "resourceType": "Task",
        "meta": { "profile": [profiles::SDOHCC_TASK_PATIENT] },
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": task_id }],
        "language": r.language,
        "status": crate::domain::patient_task::INITIAL.code(),
        "intent": "order",
        "priority": "routine",
        "code": { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": r.kind.code(), "display": r.kind.display() }] },
        "description": r.description,
        "for": { "reference": r.patient },
        "owner": { "reference": r.patient },
        "authoredOn": r.authored,
        "requester": { "reference": r.requester },
        "input": [{
            "type": { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": "contact-entity", "display": "Contact Entity" }] },
            "valueReference": place.service,
        }],
    });
    let mut entries = vec![];
    if r.kind == PatientTaskKind::ReviewMaterial {
        // The material to read: the service's own words from the directory,
        // as a DocumentReference the Task focuses on (as in the SDOHCC
        // review-material example). It claims no profile: it is a handout,
        // not a clinical note (US Core DocumentReference's category codes
        // are clinical notes), and SDOHCC's example
        // (SDOHCC-TaskPatientReviewInformationCompletedExample) is a base
        // DocumentReference too.
        let doc_id = format!("{}/material", r.id);
        let s = r.service;
        let text = [
            Some(r.description.to_string()),
            Some(String::new()),
            Some(s.name.clone()),
            Some(s.organization.clone()).filter(|o| !o.is_empty()),
            Some(s.description.clone()).filter(|d| !d.is_empty()),
            s.phone.clone(),
            Some(s.eligibility.clone()).filter(|e| !e.is_empty()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n");
        use base64::Engine;
        let doc = json!({
            "resourceType": "DocumentReference",
            "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": doc_id }],
            "status": "current",
            "type": { "text": "Information about a community service" },
            "subject": { "reference": r.patient },
            "date": r.authored,
            "description": s.name,
            "content": [{ "attachment": {
                "contentType": "text/plain; charset=utf-8",
                "language": r.language,
                "title": s.name,
                "data": base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            } }],
        });
        task["focus"] = json!({ "reference": urn(&doc_id) });
        entries.push(entry(&doc_id, doc));
    }
    entries.insert(0, entry(&task_id, task));
    entries.extend(place.entries);
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::directory::{Directory, Query};
    use crate::domain::visit::Finding;
    use time::macros::date;

    fn record<'a>(
        service: &'a Service,
        screenings: &'a [DomainScreening],
        reasons: &'a [String],
    ) -> ReferralRecord<'a> {
        ReferralRecord {
            id: "ref-1",
            patient: "Patient/pas-p01",
            encounter: Some("Encounter/pas-enc-01"),
            requester: "PractitionerRole/pas-role-moreau",
            domain: Domain::FoodInsecurity,
            service,
            reasons,
            screenings,
            concerns: &[],
            authored: "2026-11-22T10:00:00-05:00",
            priority: "routine",
            code: default_code(Domain::FoodInsecurity),
            consent: Some(Consented {
                organization: "Organization/pas-org-practice",
            }),
        }
    }

    fn pantry(d: &Directory) -> Service {
        d.search(&Query {
            domain: Some(Domain::FoodInsecurity),
            ..Default::default()
        })[0]
            .service
            .clone()
    }

    #[test]
    fn a_referral_is_a_service_request_and_its_task_tracking_it() {
        let d = Directory::shipped();
        let service = pantry(&d);
        let reasons = vec!["Condition/pas-cond-01".to_string()];
        let b = transaction(&record(&service, &[], &reasons));
        let sr = &b["entry"][0]["resource"];
        let task = &b["entry"][1]["resource"];
        assert_eq!(sr["category"][1]["coding"][0]["code"], "food-insecurity");
        assert_eq!(
            sr["reasonReference"][0]["reference"],
            "Condition/pas-cond-01"
        );
        assert!(sr.get("orderDetail").is_none());
        assert_eq!(task["status"], "requested");
        assert_eq!(task["code"]["coding"][0]["code"], "fulfill");
        assert_eq!(task["focus"]["reference"], b["entry"][0]["fullUrl"]);
        // Routed: the performer is the service's HealthcareService, the
        // owner its Organization, both written in the same transaction.
        let by_url = |u: &Value| {
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["fullUrl"] == *u)
                .map(|e| e["resource"].clone())
                .unwrap()
        };
        let hcs = by_url(&sr["performer"][0]["reference"]);
        assert_eq!(hcs["resourceType"], "HealthcareService");
        assert_eq!(hcs["identifier"][0]["value"], service.id);
        let org = by_url(&task["owner"]["reference"]);
        assert_eq!(org["resourceType"], "Organization");
        assert_eq!(hcs["providedBy"]["reference"], task["owner"]["reference"]);
        assert_eq!(
            task["requester"]["reference"],
            "PractitionerRole/pas-role-moreau"
        );
        assert_eq!(
            sr["requester"]["reference"],
            "PractitionerRole/pas-role-moreau"
        );
        assert_eq!(
            b["entry"][1]["request"]["ifNoneExist"],
            format!("identifier={REFERRAL_ID_SYSTEM}|ref-1/task")
        );
        assert_eq!(
            transaction(&record(&service, &[], &reasons)),
            b,
            "the same referral, the same bundle"
        );
        // The patient agreed to share: a Consent naming the service, cited
        // by the ServiceRequest.
        let consent = &b["entry"][2]["resource"];
        assert_eq!(consent["resourceType"], "Consent");
        assert_eq!(
            consent["provision"]["actor"][0]["reference"]["reference"],
            task["owner"]["reference"]
        );
        assert_eq!(
            consent["organization"][0]["reference"],
            "Organization/pas-org-practice"
        );
        assert_eq!(
            consent["sourceAttachment"]["contentType"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            sr["supportingInfo"][0]["reference"],
            b["entry"][2]["fullUrl"]
        );
        assert_eq!(sr["code"]["coding"][0]["code"], "467771000124109");
        let mut no_consent = record(&service, &[], &reasons);
        no_consent.consent = None;
        let b = transaction(&no_consent);
        let types: Vec<&str> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "ServiceRequest",
                "Task",
                "HealthcareService",
                "Organization",
                "Location"
            ],
            "no Consent"
        );
        assert!(b["entry"][0]["resource"].get("supportingInfo").is_none());
    }

    #[test]
    fn after_a_positive_safety_screen_the_referral_says_do_not_contact_the_patient() {
        let d = Directory::shipped();
        let service = pantry(&d);
        let screen = |domain, positive| DomainScreening {
            domain,
            date: Some(date!(2026 - 11 - 01)),
            finding: if positive {
                Finding::Positive
            } else {
                Finding::Negative
            },
            preliminary: false,
            source: None,
            evidence: None,
        };
        let unsafe_at_home = [screen(Domain::IntimatePartnerViolence, true)];
        let b = transaction(&record(&service, &unsafe_at_home, &[]));
        assert_eq!(
            b["entry"][0]["resource"]["orderDetail"][0]["coding"][0]["code"],
            "contacting-subject-prohibited"
        );
        assert!(no_contact_required(
            &[screen(Domain::IntimatePartnerViolence, true)],
            &[]
        ));
        assert!(!no_contact_required(
            &[
                screen(Domain::IntimatePartnerViolence, false),
                screen(Domain::FoodInsecurity, true)
            ],
            &[]
        ));
        let concern = |verification: &str| Concern {
            id: "c".into(),
            version: None,
            domains: vec![Domain::IntimatePartnerViolence],
            text: "Intimate partner violence risk".into(),
            verification: Some(verification.into()),
            clinical_status: Some("active".into()),
            recorded: None,
            onset: None,
            source: None,
        };
        assert!(no_contact_required(&[], &[concern("unconfirmed")]));
        assert!(!no_contact_required(&[], &[concern("refuted")]));
    }

    /// The safety rule from records other systems wrote, as plain JSON in
    /// their shapes: whatever the shape, an IPV positive makes the next
    /// referral say `contacting-subject-prohibited`.
    #[test]
    fn an_ipv_positive_recorded_elsewhere_in_any_shape_prohibits_contact() {
        use crate::client::SearchPage;
        use serde_json::json;
        let page = |r: Vec<Value>| SearchPage {
            entries: r.into_iter().map(|r| (None, r)).collect(),
            ..Default::default()
        };
        let loinc = |c: &str| json!({ "coding": [{ "system": "http://loinc.org", "code": c }] });
        let prohibited = |obs: Vec<Value>, qrs: Vec<Value>, conds: Vec<Value>| {
            let found = sdoh::evidence(&page(obs), &page(vec![]), &page(qrs), &page(conds));
            let screenings = evidence::read(Rules::shared(), &found);
            let d = Directory::shipped();
            let service = pantry(&d);
            let mut r = record(&service, &screenings, &[]);
            r.concerns = &found.concerns;
            let b = transaction(&r);
            b["entry"][0]["resource"]["orderDetail"][0]["coding"][0]["code"]
                == "contacting-subject-prohibited"
        };
        // A HITS total of 12 from a CBO platform (US Core shape:
        // valueQuantity, categories survey and sdoh, no interpretation).
        let hits = |status: &str| {
            json!({
                "resourceType": "Observation", "id": "hits-total", "status": status,
                "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey" }] }],
                "code": loinc("95614-4"),
                "effectiveDateTime": "2026-10-01",
                "performer": [{ "display": "Safe Harbor CBO" }],
                "valueQuantity": { "value": 12 }
            })
        };
        assert!(prohibited(vec![hits("final")], vec![], vec![]));
        assert!(prohibited(vec![hits("preliminary")], vec![], vec![]));
        assert!(
            !prohibited(vec![hits("entered-in-error")], vec![], vec![]),
            "an entered-in-error positive is no result"
        );
        // The HITS items in a portal's QuestionnaireResponse, no total
        // (5 + 3 + 2 + 1 = 11).
        let item = |q: &str, a: &str| json!({ "linkId": format!("/95614-4/{q}"), "answer": [{ "valueCoding": { "system": "http://loinc.org", "code": a } }] });
        let qr = json!({
            "resourceType": "QuestionnaireResponse", "id": "portal", "status": "completed",
            "authored": "2026-10-02",
            "item": [{ "linkId": "/95614-4", "item": [
                item("95618-5", "LA6482-9"), item("95617-7", "LA10082-8"),
                item("95616-9", "LA10066-1"), item("95615-1", "LA6270-8")
            ] }]
        });
        assert!(prohibited(vec![], vec![qr], vec![]));
        // A bare ICD-10-CM Condition: adult physical abuse, confirmed.
        let cond = |code: &str, verification: &str| {
            json!({
                "resourceType": "Condition", "id": "c1",
                "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification }] },
                "category": [{ "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "code": "sdoh" }] }],
                "code": { "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code }] },
                "recordedDate": "2026-09-01"
            })
        };
        assert!(prohibited(
            vec![],
            vec![],
            vec![cond("T74.11XA", "confirmed")]
        ));
        assert!(prohibited(
            vec![],
            vec![],
            vec![cond("Z91.410", "unconfirmed")]
        ));
        assert!(!prohibited(
            vec![],
            vec![],
            vec![cond("T74.11XA", "entered-in-error")]
        ));
        assert!(!prohibited(
            vec![],
            vec![],
            vec![cond("T74.11XA", "refuted")]
        ));
        assert!(!prohibited(
            vec![],
            vec![],
            vec![cond("Z59.41", "confirmed")]
        ));
        // A declined safety item is no positive (and no negative).
        let declined = json!({
            "resourceType": "Observation", "id": "d", "status": "final",
            "code": loinc("76501-6"), "effectiveDateTime": "2026-10-01",
            "dataAbsentReason": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "asked-declined" }] }
        });
        assert!(!prohibited(vec![declined], vec![], vec![]));
    }

    #[test]
    fn every_domain_and_peer_support_get_a_snomed_procedure_code() {
        assert_eq!(default_code(Domain::FoodInsecurity).1, "467771000124109");
        assert_eq!(
            default_code(Domain::TransportationInsecurity).1,
            "410365006"
        );
        for d in Domain::ALL {
            let (system, code, display) = default_code(d);
            assert_eq!(system, "http://snomed.info/sct", "{d:?}");
            assert!(
                code.chars().all(|c| c.is_ascii_digit()) && !display.is_empty(),
                "{d:?}"
            );
        }
        assert_eq!(default_code(Domain::SocialConnection).1, "464161000124109");
        assert_eq!(peer_support_code().1, "461481000124109");
    }

    #[test]
    fn a_task_for_the_patient_is_theirs_in_their_language() {
        let d = Directory::shipped();
        let service = pantry(&d);
        let b = patient_task(&PatientTaskRecord {
            id: "ref-2",
            patient: "Patient/pas-p06",
            requester: "PractitionerRole/pas-role-moreau",
            kind: PatientTaskKind::MakeContact,
            service: &service,
            description: "Appelez la banque alimentaire",
            language: "fr",
            authored: "2026-11-22T10:00:00Z",
        });
        let t = &b["entry"][0]["resource"];
        assert_eq!(t["code"]["coding"][0]["code"], "make-contact");
        assert_eq!(t["owner"]["reference"], "Patient/pas-p06");
        assert_eq!(t["language"], "fr");
        assert_eq!(t["input"][0]["type"]["coding"][0]["code"], "contact-entity");
        assert_eq!(t["status"], "ready");
        assert_eq!(
            t["input"][0]["valueReference"]["reference"], b["entry"][1]["fullUrl"],
            "the service to contact is its HealthcareService"
        );
        assert_eq!(
            b["entry"][1]["resource"]["resourceType"],
            "HealthcareService"
        );
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        v.validate_bundle(&b).unwrap();
        let b = patient_task(&PatientTaskRecord {
            id: "ref-3",
            patient: "Patient/pas-p06",
            requester: "Organization/pas-org-practice",
            kind: PatientTaskKind::ReviewMaterial,
            service: &service,
            description: "Lisez les informations sur ce service",
            language: "fr",
            authored: "2026-11-22T10:00:00Z",
        });
        let t = &b["entry"][0]["resource"];
        assert_eq!(t["code"]["coding"][0]["code"], "review-material");
        assert_eq!(t["focus"]["reference"], b["entry"][1]["fullUrl"]);
        assert_eq!(
            b["entry"][1]["resource"]["resourceType"],
            "DocumentReference"
        );
        v.validate_bundle(&b).unwrap();
    }

    #[test]
    fn the_referral_conforms_to_the_r4_schema() {
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        let d = Directory::shipped();
        let service = pantry(&d);
        let positive = [DomainScreening {
            domain: Domain::IntimatePartnerViolence,
            date: Some(date!(2026 - 11 - 01)),
            finding: Finding::Positive,
            preliminary: false,
            source: None,
            evidence: None,
        }];
        v.validate_bundle(&transaction(&record(
            &service,
            &positive,
            &["Condition/pas-cond-01".to_string()],
        )))
        .unwrap();
    }
}
