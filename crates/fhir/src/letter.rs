//! Letters from the chart: the facts a letter of medical necessity or an
//! appeal letter is drafted from (read concurrently: the patient, their
//! coverage, active diagnoses, medication history and the appeal Task), and
//! the DocumentReference that stores the signed-off letter as PDF and text.
//!
//! Nothing is invented here: a fact the chart does not have stays `None`
//! (or an empty list) and [`crate::domain::letter`] lists it as missing.
//!
//! Also the reads around a stored letter: the letters of a Task, and a
//! letter's PDF to print.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use time::Date;

use super::appeal::inputs;
use super::client::FhirClient;
use super::error::{FhirError, ReadError};
use super::views;
use crate::domain::letter::{DenialFacts, Diagnosis, LetterFacts, LetterKind, Treatment};

/// Identifier system of letters Passerelle stores.
pub const LETTER_ID_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/letter";
/// Code system of the letter types (no LOINC document code names these two
/// letters exactly; `DocumentReference.type.text` carries the words).
pub const LETTER_TYPE_SYSTEM: &str = "http://passerelle.example.org/fhir/CodeSystem/letter-type";
const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";

/// The chart as read for a letter, before it becomes [`LetterFacts`].
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub patient: Value,
    pub conditions: Vec<Value>,
    pub medications: Vec<Value>,
    pub coverage: Option<Value>,
    /// Organization id → name, from the coverage's `_include`.
    pub organizations: HashMap<String, String>,
    /// The appeal Task the letter supports, if any.
    pub task: Option<Value>,
    /// The ClaimResponse the Task's focus names, if any.
    pub claim_response: Option<Value>,
}

/// Read what a letter needs for `patient_id`, concurrently. `task` is the
/// appeal Task, already read; its coverage and denial are followed.
pub async fn read_chart(
    client: &FhirClient,
    patient_id: &str,
    task: Option<Value>,
) -> Result<Chart, FhirError> {
    let subject = format!("Patient/{patient_id}");
    let coverage_id = task
        .as_ref()
        .and_then(|t| t["insurance"][0]["reference"].as_str())
        .and_then(|r| r.strip_prefix("Coverage/"))
        .map(String::from);
    let focus = task
        .as_ref()
        .and_then(|t| t["focus"]["reference"].as_str())
        .and_then(|r| r.strip_prefix("ClaimResponse/"))
        .map(String::from);
    let coverage_q: Vec<(&str, String)> = match &coverage_id {
        Some(id) => vec![("_id", id.clone()), ("_include", "Coverage:payor".into())],
        None => vec![
            ("beneficiary", subject.clone()),
            ("status", "active".into()),
            ("_include", "Coverage:payor".into()),
        ],
    };
    let conditions_q = [
        ("subject", subject.clone()),
        ("clinical-status", "active".to_string()),
        ("_count", "100".to_string()),
    ];
    let meds_q = [
        ("subject", subject.clone()),
        ("_sort", "authoredon".to_string()),
        ("_count", "100".to_string()),
    ];
    let claim_response = async {
        match &focus {
            Some(id) => client
                .read_json("ClaimResponse", id)
                .await
                .map(|v| Some(v.resource)),
            None => Ok(None),
        }
    };
    let (patient, conditions, meds, coverages, claim_response) = tokio::join!(
        client.read_json("Patient", patient_id),
        client.search("Condition", &conditions_q),
        client.search("MedicationRequest", &meds_q),
        client.search("Coverage", &coverage_q),
        claim_response,
    );
    let coverages = coverages?;
    let organizations = coverages
        .raw("Organization")
        .filter_map(|o| {
            Some((
                o["id"].as_str()?.to_string(),
                o["name"].as_str()?.to_string(),
            ))
        })
        .collect();
    Ok(Chart {
        patient: patient?.resource,
        conditions: conditions?.raw("Condition").cloned().collect(),
        medications: meds?.raw("MedicationRequest").cloned().collect(),
        // Only this patient's coverage and denial, whatever the server sent
        // (a Task's references are not trusted to stay within the patient).
        coverage: coverages
            .raw("Coverage")
            .find(|c| c["beneficiary"]["reference"] == subject.as_str())
            .cloned(),
        organizations,
        task,
        // A denial that cannot be read still leaves the Task's own copy of
        // its words, so the letter is drafted without it.
        claim_response: claim_response
            .ok()
            .flatten()
            .filter(|c| c["patient"]["reference"] == subject.as_str()),
    })
}

fn is_sdoh(c: &Value) -> bool {
    c["category"].as_array().into_iter().flatten().any(|cat| {
        cat["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["code"] == "sdoh" || k["code"] == "health-concern")
    })
}

/// The facts of a letter, from the chart alone.
pub fn facts(
    chart: &Chart,
    lang: &str,
    today: Date,
    clinician: Option<String>,
    practice: Option<String>,
) -> LetterFacts {
    let p = &chart.patient;
    let patient_name = views::json_human_name(p).unwrap_or_default();
    let diagnoses = chart
        .conditions
        .iter()
        .filter(|c| !is_sdoh(c))
        .flat_map(|c| {
            c["code"]["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|k| k["system"] == ICD10CM)
                .filter_map(|k| {
                    Some(Diagnosis {
                        system: "ICD-10-CM".into(),
                        code: k["code"].as_str()?.to_string(),
                        display: k["display"]
                            .as_str()
                            .or(c["code"]["text"].as_str())
                            .unwrap_or_default()
                            .to_string(),
                    })
                })
        })
        .collect();
    let treatments = chart
        .medications
        .iter()
        .filter_map(|m| {
            let medication = m["medicationCodeableConcept"]["text"]
                .as_str()
                .or(m["medicationCodeableConcept"]["coding"][0]["display"].as_str())?
                .to_string();
            Some(Treatment {
                medication,
                status: m["status"].as_str().unwrap_or("unknown").to_string(),
                started: views::json_date(&m["authoredOn"]),
                reason_stopped: m["statusReason"]["text"].as_str().map(String::from),
            })
        })
        .collect();
    let (member_id, payer, plan, group) = match &chart.coverage {
        Some(c) => {
            let class = |kind: &str| {
                c["class"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|k| k["type"]["coding"][0]["code"] == kind)
            };
            let payer = c["payor"][0]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Organization/"))
                .and_then(|id| chart.organizations.get(id).cloned())
                .or_else(|| c["payor"][0]["display"].as_str().map(String::from));
            (
                c["subscriberId"]
                    .as_str()
                    .map(String::from)
                    .or_else(|| c["identifier"][0]["value"].as_str().map(String::from)),
                payer,
                class("plan")
                    .and_then(|k| k["name"].as_str().or(k["value"].as_str()))
                    .map(String::from),
                class("group")
                    .and_then(|k| k["value"].as_str())
                    .map(String::from),
            )
        }
        None => (None, None, None, None),
    };
    let task = chart.task.as_ref();
    let denial = task.map(|t| {
        let cr = chart.claim_response.as_ref();
        DenialFacts {
            reference: cr.and_then(|c| {
                c["preAuthRef"]
                    .as_str()
                    .or(c["identifier"][0]["value"].as_str())
                    .map(String::from)
            }),
            notice_date: inputs(t, "notice-date").find_map(|i| views::json_date(&i["valueDate"])),
            reasons: inputs(t, "denial-reason")
                .filter_map(|i| {
                    let k = &i["valueCodeableConcept"]["coding"][0];
                    Some((
                        k["code"].as_str()?.to_string(),
                        k["display"].as_str().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
            text: inputs(t, "denial-text")
                .find_map(|i| i["valueString"].as_str().map(String::from))
                .or_else(|| cr.and_then(|c| c["disposition"].as_str().map(String::from))),
        }
    });
    let requested = task.and_then(|t| {
        inputs(t, "denied-item")
            .find_map(|i| i["valueCodeableConcept"]["text"].as_str().map(String::from))
    });
    let requested = requested.or_else(|| {
        chart
            .medications
            .iter()
            .rev()
            .filter(|m| m["status"] == "active")
            .find_map(|m| {
                m["medicationCodeableConcept"]["text"]
                    .as_str()
                    .map(String::from)
            })
    });
    LetterFacts {
        lang: lang.to_string(),
        today,
        patient_name,
        birth_date: views::json_date(&p["birthDate"]),
        member_id,
        payer: payer.or_else(|| {
            task.and_then(|t| {
                inputs(t, "payer").find_map(|i| i["valueString"].as_str().map(String::from))
            })
        }),
        plan,
        group,
        diagnoses,
        treatments,
        requested,
        denial,
        appeal_kind: task.and_then(|t| t["code"]["coding"][0]["code"].as_str().map(String::from)),
        expedited: task.is_some_and(|t| t["priority"] == "stat"),
        deadline: task.and_then(|t| views::json_date(&t["restriction"]["period"]["end"])),
        clinician,
        practice,
    }
}

/// Everything one stored letter records.
#[derive(Debug, Clone)]
pub struct LetterRecord<'a> {
    /// Made when the letter page is shown: the idempotency key.
    pub id: &'a str,
    pub patient: &'a str,
    pub encounter: Option<&'a str>,
    pub author: Option<&'a str>,
    /// `Task/…` the letter supports, if any.
    pub task: Option<&'a str>,
    pub kind: LetterKind,
    pub lang: &'a str,
    pub title: &'a str,
    pub text: &'a str,
    pub pdf: &'a [u8],
    /// FHIR instant.
    pub date: &'a str,
}

/// The transaction storing a letter: a DocumentReference with the PDF and
/// the text as two attachments, related to its Task.
pub fn transaction(r: &LetterRecord) -> Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (code, words) = match r.kind {
        LetterKind::MedicalNecessity => {
            ("letter-of-medical-necessity", "Letter of medical necessity")
        }
        LetterKind::Appeal => ("appeal-letter", "Appeal letter"),
    };
    let mut doc = json!({
        "resourceType": "DocumentReference",
        "meta": { "profile": [super::profiles::US_CORE_DOCUMENT_REFERENCE] },
        "identifier": [{ "system": LETTER_ID_SYSTEM, "value": r.id }],
        "status": "current",
        "docStatus": "final",
        // US Core DocumentReference.type is bound (required) to LOINC
        // document codes or v3 NullFlavor UNK: no LOINC code names these
        // letters, so UNK stands beside Passerelle's own code.
        "type": { "coding": [
            { "system": LETTER_TYPE_SYSTEM, "code": code, "display": words },
            { "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown" }
        ], "text": words },
        // US Core DocumentReference.category:uscore (1..*, required binding).
        "category": [{ "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category", "code": "clinical-note", "display": "Clinical Note" }] }],
        "subject": { "reference": r.patient },
        "date": r.date,
        "description": r.title,
        "content": [
            { "attachment": { "contentType": "application/pdf", "language": r.lang, "data": b64(r.pdf), "title": format!("{}.pdf", r.title), "creation": r.date } },
            { "attachment": { "contentType": "text/plain; charset=utf-8", "language": r.lang, "data": b64(r.text.as_bytes()), "title": r.title, "creation": r.date } }
        ],
    });
    if let Some(a) = r.author {
        doc["author"] = json!([{ "reference": a }]);
    }
    let mut context = serde_json::Map::new();
    if let Some(e) = r.encounter {
        context.insert("encounter".into(), json!([{ "reference": e }]));
    }
    if let Some(t) = r.task {
        context.insert("related".into(), json!([{ "reference": t }]));
    }
    if !context.is_empty() {
        doc["context"] = Value::Object(context);
    }
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [super::bundle::conditional_create(LETTER_ID_SYSTEM, r.id, doc)],
    })
}

/// The PDF stored in a DocumentReference, if it has one.
pub fn pdf_of(doc: &Value) -> Option<Vec<u8>> {
    doc["content"]
        .as_array()?
        .iter()
        .find(|c| c["attachment"]["contentType"] == "application/pdf")
        .and_then(|c| c["attachment"]["data"].as_str())
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
}

/// A short view of a stored letter, for lists.
pub fn summary(doc: &Value) -> Option<(String, String, String)> {
    Some((
        doc["id"].as_str()?.to_string(),
        doc["description"]
            .as_str()
            .or(doc["type"]["text"].as_str())?
            .to_string(),
        doc["date"]
            .as_str()
            .map(|d| d.chars().take(10).collect())
            .unwrap_or_default(),
    ))
}

/// The letters related to the Task `task_id` (of `patient`, when the launch
/// has one), as [`summary`] gives them: for the task page's list.
pub async fn related(
    client: &FhirClient,
    task_id: &str,
    patient: Option<&str>,
) -> Result<Vec<(String, String, String)>, FhirError> {
    let mut letters_q = vec![
        ("related", format!("Task/{task_id}")),
        ("_count", "20".to_string()),
    ];
    if let Some(p) = patient {
        letters_q.push(("subject", p.to_string()));
    }
    let page = client.search("DocumentReference", &letters_q).await?;
    Ok(page.raw("DocumentReference").filter_map(summary).collect())
}

/// The PDF of the stored letter `id`. With `patient` (a chart's launch),
/// only that patient's letters are given; without (a coordinator's launch,
/// user-level access), any patient's.
pub async fn read_pdf(
    client: &FhirClient,
    id: &str,
    patient: Option<&str>,
) -> Result<Vec<u8>, ReadError> {
    let read = client.read_json("DocumentReference", id).await?;
    if patient.is_some() && patient != read.resource["subject"]["reference"].as_str() {
        return Err(ReadError::refused(
            "This letter is not about this launch's patient.",
        ));
    }
    pdf_of(&read.resource)
        .filter(|b| b.starts_with(b"%PDF-"))
        .ok_or_else(|| ReadError::refused("This document has no PDF."))
}

/// Patient display name from the typed view (used by pages that already
/// decoded the patient).
pub fn patient_name(p: &fhir_sdk::r4b::resources::Patient) -> String {
    views::patient(p).name
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn fixture(name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(format!(
            "{}/../../fixtures/visits/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let b: Value = serde_json::from_str(&text).unwrap();
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect()
    }

    #[test]
    fn facts_come_from_the_chart_and_the_appeal_task_only() {
        let rs = fixture("05-david-nguyen.json");
        let of = |t: &str| {
            rs.iter()
                .filter(|r| r["resourceType"] == t)
                .cloned()
                .collect::<Vec<_>>()
        };
        let chart = Chart {
            patient: of("Patient")[0].clone(),
            conditions: of("Condition"),
            medications: of("MedicationRequest"),
            coverage: of("Coverage").first().cloned(),
            organizations: [(
                "pas-org-northwind".to_string(),
                "Northwind Employer Health Plan".to_string(),
            )]
            .into(),
            task: Some(json!({
                "resourceType": "Task", "priority": "stat",
                "code": { "coding": [{ "code": "step-therapy-exception" }] },
                "restriction": { "period": { "end": "2027-05-06" } },
                "input": [
                    { "type": { "coding": [{ "code": "notice-date" }] }, "valueDate": "2026-11-07" },
                    { "type": { "coding": [{ "code": "denial-text" }] }, "valueString": "Step therapy required: verbatim." },
                    { "type": { "coding": [{ "code": "denial-reason" }] }, "valueCodeableConcept": { "coding": [{ "code": "197", "display": "Precertification absent" }] } },
                    { "type": { "coding": [{ "code": "denied-item" }] }, "valueCodeableConcept": { "text": "adalimumab 40 MG/0.4ML Prefilled Syringe" } }
                ]
            })),
            claim_response: of("ClaimResponse").first().cloned(),
        };
        let f = facts(
            &chart,
            "en",
            date!(2026 - 11 - 22),
            Some("Dr. Claire Moreau".into()),
            None,
        );
        assert_eq!(f.member_id.as_deref(), Some("NW-300-88412"));
        assert_eq!(f.payer.as_deref(), Some("Northwind Employer Health Plan"));
        assert_eq!(f.group.as_deref(), Some("NW-4410"));
        assert_eq!(
            f.diagnoses.len(),
            1,
            "SDOH concerns are not diagnoses for a payer"
        );
        assert_eq!(f.diagnoses[0].code, "M06.9");
        assert_eq!(f.treatments.len(), 2);
        assert!(
            f.treatments
                .iter()
                .any(|t| t.status == "stopped" && t.reason_stopped.is_some())
        );
        let d = f.denial.unwrap();
        assert_eq!(d.text.as_deref(), Some("Step therapy required: verbatim."));
        assert_eq!(d.reference.as_deref(), Some("PA-05"));
        assert_eq!(d.notice_date, Some(date!(2026 - 11 - 07)));
        assert!(f.expedited);
        assert_eq!(f.deadline, Some(date!(2027 - 05 - 06)));
        assert_eq!(
            f.requested.as_deref(),
            Some("adalimumab 40 MG/0.4ML Prefilled Syringe")
        );
    }

    #[test]
    fn a_letter_is_a_document_reference_with_pdf_and_text() {
        let b = transaction(&LetterRecord {
            id: "let-1",
            patient: "Patient/pas-p05",
            encounter: None,
            author: Some("Practitioner/pas-prac-moreau"),
            task: Some("Task/t1"),
            kind: LetterKind::Appeal,
            lang: "en",
            title: "Appeal letter",
            text: "Dear reviewer",
            pdf: b"%PDF-1.7 test",
            date: "2026-11-22T10:00:00Z",
        });
        let d = &b["entry"][0]["resource"];
        assert_eq!(d["context"]["related"][0]["reference"], "Task/t1");
        assert_eq!(pdf_of(d).unwrap(), b"%PDF-1.7 test");
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        v.validate_bundle(&b).unwrap();
    }
}
