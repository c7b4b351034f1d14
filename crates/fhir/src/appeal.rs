//! An appeal as one FHIR transaction: the appeal Task documented in
//! `profiles/appeal-task.md`, created with `ifNoneExist` on an identifier
//! derived from the appeal's id, so sending again records nothing twice.
//!
//! The Task carries what a coordinator needs without opening the denial:
//! the reason codes, the payer's words verbatim, the notice date and the
//! basis of the deadline, as `Task.input` typed by
//! [`APPEAL_INPUT_SYSTEM`].
//!
//! What an appeal is built from is read here too: the denial appealed
//! ([`read_denial`], with its claim's coverage and item code) and the
//! patient's coverages to choose the appeal regime from
//! ([`patient_coverages`]).

use fhir_sdk::r4b::resources::{ClaimResponse, Coverage};
use serde_json::{Value, json};

use super::client::{FhirClient, is_valid_id};
use super::context::{lookup, organization_names};
use super::error::{FhirError, ReadError};
use super::views;
use crate::domain::appeal::AppealPlan;
use crate::domain::coverage::CoverageFacts;
use crate::domain::visit::{APPEAL_TASK_SYSTEM, Denial};

/// Identifier system of appeals Passerelle files.
pub const APPEAL_ID_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/appeal";
/// Code system of the appeal Task's inputs and outputs.
pub const APPEAL_INPUT_SYSTEM: &str = "http://passerelle.example.org/fhir/CodeSystem/appeal-input";

/// The denial an appeal answers, as recorded on the Task.
#[derive(Debug, Clone, Default)]
pub struct DenialInputs<'a> {
    pub payer: Option<&'a str>,
    /// What was denied, in words, and its code (`system`, `code`) if known.
    pub service: Option<&'a str>,
    pub service_code: Option<(&'a str, &'a str)>,
    /// (system, code, display)
    pub reasons: Vec<(&'a str, &'a str, Option<&'a str>)>,
    /// The payer's words, verbatim.
    pub text: Option<&'a str>,
}

/// Everything one appeal records.
#[derive(Debug, Clone)]
pub struct AppealRecord<'a> {
    /// Made when the appeal form is shown: the idempotency key.
    pub id: &'a str,
    pub patient: &'a str,
    pub encounter: Option<&'a str>,
    pub requester: Option<&'a str>,
    pub coverage: Option<&'a str>,
    /// The ClaimResponse of a denial read from the EHR; none for a denial
    /// entered by hand (its details are then in the Task's inputs).
    pub focus: Option<&'a str>,
    pub plan: &'a AppealPlan,
    pub denial: DenialInputs<'a>,
    /// FHIR dateTime.
    pub authored: &'a str,
}

/// The inputs of an appeal Task with type `code` (see [`task`]).
pub fn inputs<'a>(task: &'a Value, code: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    task["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |i| i["type"]["coding"][0]["code"] == code)
}

fn input(code: &str, value_key: &str, value: Value) -> Value {
    let mut i = json!({ "type": { "coding": [{ "system": APPEAL_INPUT_SYSTEM, "code": code }] } });
    i[value_key] = value;
    i
}

/// The appeal Task alone (status `requested`, intent `order`).
pub fn task(r: &AppealRecord) -> Value {
    let kind = r.plan.kind;
    let what = r.denial.service.unwrap_or("denied item");
    let description = match r.denial.payer {
        Some(p) => format!("{}: {what} ({p})", kind.label()),
        None => format!("{}: {what}", kind.label()),
    };
    let mut inputs = vec![input(
        "notice-date",
        "valueDate",
        json!(r.plan.notice.to_string()),
    )];
    if let Some(p) = r.denial.payer {
        inputs.push(input("payer", "valueString", json!(p)));
    }
    if let Some(s) = r.denial.service {
        let mut cc = json!({ "text": s });
        if let Some((system, code)) = r.denial.service_code {
            cc["coding"] = json!([{ "system": system, "code": code }]);
        }
        inputs.push(input("denied-item", "valueCodeableConcept", cc));
    }
    for (system, code, display) in &r.denial.reasons {
        let mut coding = json!({ "system": system, "code": code });
        if let Some(d) = display {
            coding["display"] = json!(d);
        }
        inputs.push(input(
            "denial-reason",
            "valueCodeableConcept",
            json!({ "coding": [coding] }),
        ));
    }
    if let Some(t) = r.denial.text {
        inputs.push(input("denial-text", "valueString", json!(t)));
    }
    inputs.push(input("deadline-basis", "valueString", json!(r.plan.basis)));
    if let Some(due) = r.plan.decision_due
        && let Ok(s) = due.format(&time::format_description::well_known::Rfc3339)
    {
        inputs.push(input("decision-due", "valueDateTime", json!(s)));
    }
    let mut task = json!({
        "resourceType": "Task",
        "meta": { "profile": [super::profiles::PASSERELLE_APPEAL_TASK] },
        "identifier": [{ "system": APPEAL_ID_SYSTEM, "value": format!("{}/task", r.id) }],
        "status": "requested",
        "intent": "order",
        "priority": r.plan.priority,
        "code": { "coding": [{ "system": APPEAL_TASK_SYSTEM, "code": kind.code(), "display": kind.label() }] },
        "description": description,
        "for": { "reference": r.patient },
        "authoredOn": r.authored,
        "lastModified": r.authored,
        "input": inputs,
    });
    if let Some(f) = r.focus {
        task["focus"] = json!({ "reference": f });
    }
    if let Some(c) = r.coverage {
        task["insurance"] = json!([{ "reference": c }]);
    }
    if let Some(d) = r.plan.deadline {
        task["restriction"] = json!({ "period": { "end": d.to_string() } });
    }
    if let Some(e) = r.encounter {
        task["encounter"] = json!({ "reference": e });
    }
    if let Some(q) = r.requester {
        task["requester"] = json!({ "reference": q });
    }
    task
}

/// The transaction Bundle of one appeal.
pub fn transaction(r: &AppealRecord) -> Value {
    let task_id = format!("{}/task", r.id);
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [super::bundle::conditional_create(APPEAL_ID_SYSTEM, &task_id, task(r))],
    })
}

/// A denial read from the EHR, with what the appeal needs of it.
#[derive(Debug, Clone)]
pub struct ReadDenial {
    pub denial: Denial,
    /// The Coverage the claim was made under, if the Claim says.
    pub coverage: Option<String>,
    /// The item's code (system, code).
    pub item_code: Option<(String, String)>,
}

/// The patient's denial `cr_id` (a ClaimResponse), with its claim and
/// insurer; `None` when `cr_id` is empty (a denial entered by hand).
pub async fn read_denial(
    client: &FhirClient,
    patient_id: &str,
    cr_id: &str,
) -> Result<Option<ReadDenial>, ReadError> {
    if cr_id.is_empty() {
        return Ok(None);
    }
    if !is_valid_id(cr_id) {
        return Err(ReadError::refused("The denial id is not a valid FHIR id."));
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
    let names = organization_names(&page, &mut |_, _| {});
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
        .ok_or_else(|| ReadError::refused("There is no such denial for this patient."))?;
    let denial = views::denial(&cr, |r| lookup(&names, r), service)
        .ok_or_else(|| ReadError::refused("This claim response denies nothing."))?;
    Ok(Some(ReadDenial {
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
    }))
}

/// The patient's coverages, with their payers' names (one search).
pub async fn patient_coverages(
    client: &FhirClient,
    patient_id: &str,
) -> Result<Vec<CoverageFacts>, FhirError> {
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
    let names = organization_names(&page, &mut |_, _| {});
    Ok(page
        .resources::<Coverage>("Coverage")
        .items
        .iter()
        .map(|c| views::coverage(c, |r| lookup(&names, r)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appeal::{AppealKind, CARC_SYSTEM, plan};
    use crate::domain::coverage::{Code, RegimeTable};
    use time::macros::{date, datetime};

    fn record(p: &AppealPlan) -> AppealRecord<'_> {
        AppealRecord {
            id: "app-1",
            patient: "Patient/pas-p02",
            encounter: None,
            requester: Some("Practitioner/pas-prac-moreau"),
            coverage: Some("Coverage/pas-cov-02b"),
            focus: Some("ClaimResponse/pas-cr-02"),
            plan: p,
            denial: DenialInputs {
                payer: Some("Keystone Rx"),
                service: Some("apixaban 5 MG Oral Tablet"),
                service_code: None,
                reasons: vec![(CARC_SYSTEM, "204", None)],
                text: Some("Drug not on formulary.  Formulary alternative: warfarin."),
            },
            authored: "2026-11-22T10:00:00Z",
        }
    }

    #[test]
    fn an_expedited_formulary_exception_is_stat_with_its_deadline() {
        let regimes = RegimeTable::shipped();
        let part_d = regimes
            .regime_for(&[Code {
                system: Some(regimes.payer_type_system.clone()),
                code: "122".into(),
                display: None,
            }])
            .unwrap();
        let p = plan(
            AppealKind::FormularyException,
            true,
            date!(2026 - 11 - 16),
            Some(part_d),
            None,
            datetime!(2026-11-22 10:00 UTC),
        );
        let b = transaction(&record(&p));
        let t = &b["entry"][0]["resource"];
        assert_eq!(t["code"]["coding"][0]["code"], "formulary-exception");
        assert_eq!(t["priority"], "stat");
        assert_eq!(t["restriction"]["period"]["end"], "2027-01-20");
        assert_eq!(t["focus"]["reference"], "ClaimResponse/pas-cr-02");
        assert_eq!(t["insurance"][0]["reference"], "Coverage/pas-cov-02b");
        let text = t["input"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"]["coding"][0]["code"] == "denial-text")
            .unwrap();
        assert_eq!(
            text["valueString"],
            "Drug not on formulary.  Formulary alternative: warfarin."
        );
        assert!(
            t["input"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["valueDateTime"] == "2026-11-25T10:00:00Z")
        );
        assert_eq!(
            b["entry"][0]["request"]["ifNoneExist"],
            format!("identifier={APPEAL_ID_SYSTEM}|app-1/task")
        );
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        v.validate_bundle(&b).unwrap();
    }
}
