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
use super::sdoh;
use super::views;

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
/// Identifier system of HSDS services (a logical reference to the directory).
pub const HSDS_SERVICE_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/hsds-service";

#[derive(serde::Deserialize)]
struct CodeTable {
    system: String,
    domains: std::collections::HashMap<String, DomainCodes>,
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

/// The default `ServiceRequest.code` of a domain's referrals: the first
/// code `profiles/referral-codes.json` lists from the domain's SDOHCC
/// ServiceRequests value set (system, code, display). `None` for the domains
/// whose codes could not be verified: the request then carries text only.
pub fn default_code(domain: Domain) -> Option<(&'static str, &'static str, &'static str)> {
    let t = code_table();
    let first = t.domains.get(domain.code())?.codes.first()?;
    Some((
        t.system.as_str(),
        first.code.as_str(),
        first.display.as_str(),
    ))
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

/// Everything one referral records.
#[derive(Debug, Clone)]
pub struct ReferralRecord<'a> {
    /// Made by Passerelle when the referral is prepared: the idempotency key.
    pub id: &'a str,
    pub patient: &'a str,
    pub encounter: Option<&'a str>,
    pub requester: Option<&'a str>,
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
    /// `ServiceRequest.code` from the domain's value set (system, code,
    /// display), when the practice's table has one.
    pub code: Option<(&'a str, &'a str, &'a str)>,
    /// The patient agreed that their need and contact details go to the
    /// service: a Consent is recorded and cited in `supportingInfo`.
    pub consent: bool,
    /// `Organization/…` of the practice, the Consent's custodian, if known.
    pub practice: Option<&'a str>,
}

fn entry(id_value: &str, resource: Value) -> Value {
    super::bundle::conditional_create(REFERRAL_ID_SYSTEM, id_value, resource)
}

/// The transaction Bundle of one referral.
pub fn transaction(r: &ReferralRecord) -> Value {
    let sr_id = format!("{}/service-request", r.id);
    let task_id = format!("{}/task", r.id);
    let performer = json!({
        "identifier": { "system": HSDS_SERVICE_SYSTEM, "value": r.service.id },
        "display": r.service.name,
    });
    let mut sr = json!({
        "resourceType": "ServiceRequest",
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": sr_id }],
        "status": "active",
        "intent": "order",
        "category": [
            { "coding": [{ "system": "http://snomed.info/sct", "code": "410606002", "display": "Social service procedure" }] },
            { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": r.domain.code(), "display": r.domain.label() }] }
        ],
        "code": match r.code {
            Some((system, code, display)) => json!({
                "coding": [{ "system": system, "code": code, "display": display }],
                "text": format!("Referral to {}", r.service.name)
            }),
            None => json!({ "text": format!("Referral to {}", r.service.name) }),
        },
        "priority": r.priority,
        "subject": { "reference": r.patient },
        "authoredOn": r.authored,
        "performer": [performer],
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
    if let Some(q) = r.requester {
        sr["requester"] = json!({ "reference": q });
    }
    let mut task = json!({
        "resourceType": "Task",
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": task_id }],
        "status": "requested",
        "intent": "order",
        "priority": r.priority,
        "code": { "coding": [{ "system": TASK_CODE_SYSTEM, "code": "fulfill", "display": "Fulfill the focal request" }] },
        "description": format!("Referral to {}", r.service.name),
        "focus": { "reference": urn(&sr_id) },
        "for": { "reference": r.patient },
        "authoredOn": r.authored,
        "owner": performer,
    });
    if let Some(q) = r.requester {
        task["requester"] = json!({ "reference": q });
    }
    let mut entries = Vec::new();
    if r.consent {
        let consent_id = format!("{}/consent", r.id);
        sr["supportingInfo"] = json!([{ "reference": urn(&consent_id), "display": "Patient consent to share with the service" }]);
        entries.push(entry(&consent_id, consent(r, &performer)));
    }
    entries.insert(0, entry(&task_id, task));
    entries.insert(0, entry(&sr_id, sr));
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

/// The patient's consent to disclose their need and contact details to the
/// service (SDOHCC Consent: scope patient-privacy, category IDSCL
/// "information disclosure", a permit provision naming the recipient).
fn consent(r: &ReferralRecord, recipient: &Value) -> Value {
    let mut c = json!({
        "resourceType": "Consent",
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": format!("{}/consent", r.id) }],
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy", "display": "Privacy Consent" }] },
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IDSCL", "display": "information disclosure" }] }],
        "patient": { "reference": r.patient },
        "performer": [{ "reference": r.patient }],
        "dateTime": r.authored,
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN", "display": "opt-in" }] },
        "provision": {
            "type": "permit",
            "actor": [{
                "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient" }] },
                "reference": recipient,
            }],
            "purpose": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT", "display": "treatment" }],
        },
    });
    if let Some(p) = r.practice {
        c["organization"] = json!([{ "reference": p }]);
    }
    if let Some(q) = r.requester {
        c["provision"]["actor"].as_array_mut().expect("array").push(json!({
            "role": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "AUT", "display": "author (originator)" }] },
            "reference": { "reference": q },
        }));
    }
    c
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
    pub requester: Option<&'a str>,
    pub kind: PatientTaskKind,
    pub service: &'a Service,
    /// In the patient's language.
    pub description: &'a str,
    /// BCP 47 code of the description's language.
    pub language: &'a str,
    pub authored: &'a str,
}

/// The transaction creating a Task for the patient (status `requested`,
/// owner the patient), idempotent like every write.
pub fn patient_task(r: &PatientTaskRecord) -> Value {
    let task_id = format!("{}/{}", r.id, r.kind.code());
    let mut task = json!({
        "resourceType": "Task",
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": task_id }],
        "language": r.language,
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": r.kind.code(), "display": r.kind.display() }] },
        "description": r.description,
        "for": { "reference": r.patient },
        "owner": { "reference": r.patient },
        "authoredOn": r.authored,
        "input": [{
            "type": { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": "contact-entity", "display": "Contact Entity" }] },
            "valueReference": {
                "identifier": { "system": HSDS_SERVICE_SYSTEM, "value": r.service.id },
                "display": r.service.name,
            }
        }],
    });
    if let Some(q) = r.requester {
        task["requester"] = json!({ "reference": q });
    }
    let mut entries = vec![];
    if r.kind == PatientTaskKind::ReviewMaterial {
        // The material to read: the service's own words from the directory,
        // as a DocumentReference the Task focuses on (as in the SDOHCC
        // review-material example).
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
            requester: Some("Practitioner/pas-prac-moreau"),
            domain: Domain::FoodInsecurity,
            service,
            reasons,
            screenings,
            concerns: &[],
            authored: "2026-11-22T10:00:00-05:00",
            priority: "routine",
            code: Some((
                "http://snomed.info/sct",
                "467771000124109",
                "Assistance with application for food pantry program",
            )),
            consent: true,
            practice: Some("Organization/pas-org-practice"),
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
        assert_eq!(task["owner"]["identifier"]["value"], service.id);
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
            consent["provision"]["actor"][0]["reference"]["identifier"]["value"],
            service.id
        );
        assert_eq!(
            sr["supportingInfo"][0]["reference"],
            b["entry"][2]["fullUrl"]
        );
        assert_eq!(sr["code"]["coding"][0]["code"], "467771000124109");
        let mut no_consent = record(&service, &[], &reasons);
        no_consent.consent = false;
        let b = transaction(&no_consent);
        assert_eq!(b["entry"].as_array().unwrap().len(), 2);
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
    fn the_code_table_gives_verified_codes_or_none() {
        assert_eq!(
            default_code(Domain::FoodInsecurity).map(|c| c.1),
            Some("467771000124109")
        );
        assert!(default_code(Domain::TransportationInsecurity).is_some());
        assert_eq!(default_code(Domain::SocialConnection), None);
    }

    #[test]
    fn a_task_for_the_patient_is_theirs_in_their_language() {
        let d = Directory::shipped();
        let service = pantry(&d);
        let b = patient_task(&PatientTaskRecord {
            id: "ref-2",
            patient: "Patient/pas-p06",
            requester: Some("Practitioner/pas-prac-moreau"),
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
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        v.validate_bundle(&b).unwrap();
        let b = patient_task(&PatientTaskRecord {
            id: "ref-3",
            patient: "Patient/pas-p06",
            requester: None,
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
