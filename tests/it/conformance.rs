//! What Passerelle writes conforms to the profiles it claims, as a real
//! profile validator judges it: hfs with write-path validation enforcing
//! (`common::hfs_options`), holding the published US Core definitions and
//! the StructureDefinitions generated from `profiles/conformance.json`.
//! Every other test that writes goes through the same validation; these
//! prove the validator is really on, that each profile is loaded and
//! enforced, and that a broken resource is refused with its element named.

use crate::common;

use passerelle::fhir::profiles;
use passerelle_dev::conformance::Table;
use serde_json::{Value, json};
use url::Url;

async fn post(base: &Url, resource: &Value) -> (u16, Value) {
    let t = resource["resourceType"].as_str().unwrap();
    let r = reqwest::Client::new()
        .post(base.join(t).unwrap())
        .header("content-type", "application/fhir+json")
        .json(resource)
        .send()
        .await
        .expect("hfs answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The OperationOutcome's issues as text (diagnostics, details, expression).
fn issues(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{} {} {}",
                i["diagnostics"].as_str().unwrap_or(""),
                i["details"]["text"].as_str().unwrap_or(""),
                i["expression"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A resource of `t` claiming `profile`, about the fixture patient pas-p01,
/// with nothing else: the smallest thing each profile must refuse.
fn bare(t: &str, profile: &str) -> Value {
    let mut r = json!({ "resourceType": t, "meta": { "profile": [profile] } });
    match t {
        "Observation" => {
            r["status"] = json!("final");
            r["code"] = json!({ "text": "a question" });
        }
        "Condition" => r["subject"] = json!({ "reference": "Patient/pas-p01" }),
        "QuestionnaireResponse" => r["status"] = json!("completed"),
        "DocumentReference" => {
            r["status"] = json!("current");
            r["content"] = json!([{ "attachment": { "title": "empty" } }]);
        }
        "ServiceRequest" => {
            r["status"] = json!("active");
            r["intent"] = json!("order");
            r["subject"] = json!({ "reference": "Patient/pas-p01" });
        }
        "Task" => {
            r["status"] = json!("requested");
            r["intent"] = json!("plan");
        }
        "Consent" => {
            r["status"] = json!("active");
            r["scope"] = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] });
            r["category"] = json!([{ "text": "sharing" }]);
        }
        "Questionnaire" => {
            r["status"] = json!("active");
            r["version"] = json!("1.0.0");
        }
        _ => {}
    }
    r
}

/// Every profile of the table is loaded and enforced: a bare resource
/// claiming it is refused with 422, and the OperationOutcome names an
/// element or an invariant of that profile.
#[tokio::test]
async fn each_profile_of_the_table_refuses_what_breaks_its_rules() {
    let hfs = common::seeded_hfs().await;
    let table = Table::shipped();
    let mut refused = 0;
    for p in &table.profiles {
        let resource = bare(&p.resource_type, &p.url);
        let (status, outcome) = post(hfs.base(), &resource).await;
        let text = issues(&outcome);
        assert_eq!(status, 422, "{}: {text}", p.url);
        // The profile's own rules and those of the table profiles it derives
        // from (hfs validates the whole base chain).
        let chain = std::iter::successors(Some(p), |q| table.profile(&q.base));
        let named: Vec<String> = chain
            .flat_map(|q| q.rules.iter().enumerate().map(move |(n, r)| (q, n, r)))
            .flat_map(|(p, n, r)| {
                let mut names = Vec::new();
                if let Some(path) = &r.path {
                    names.push(path.trim_end_matches("[x]").to_string());
                }
                if let Some(i) = p.invariant(n, r) {
                    names.push(i.key);
                }
                names
            })
            .collect();
        assert!(
            named.iter().any(|n| text.contains(n.as_str())),
            "{}: the outcome names none of {named:?}:\n{text}",
            p.url
        );
        refused += 1;
    }
    eprintln!(
        "{refused} table profiles ({} rules) each refused a bare resource",
        table.rule_count()
    );
}

/// A claim of a profile the server does not hold is refused too, so no
/// claim goes unchecked; and a core FHIR invariant is enforced without any
/// claim (obs-6: dataAbsentReason only when there is no value).
#[tokio::test]
async fn an_unknown_profile_and_a_core_invariant_are_refused() {
    let hfs = common::seeded_hfs().await;
    let unknown = bare(
        "Observation",
        "http://example.org/fhir/StructureDefinition/nobody-publishes-this",
    );
    let (status, outcome) = post(hfs.base(), &unknown).await;
    assert_eq!(status, 422, "{}", issues(&outcome));
    assert!(
        issues(&outcome).contains("nobody-publishes-this"),
        "{}",
        issues(&outcome)
    );

    let both = json!({
        "resourceType": "Observation", "status": "final", "code": { "text": "q" },
        "subject": { "reference": "Patient/pas-p01" },
        "valueString": "yes",
        "dataAbsentReason": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "asked-declined" }] }
    });
    let (status, outcome) = post(hfs.base(), &both).await;
    assert_eq!(status, 422, "{}", issues(&outcome));
    assert!(issues(&outcome).contains("obs-6"), "{}", issues(&outcome));

    let bad_status =
        json!({ "resourceType": "Observation", "status": "done", "code": { "text": "q" } });
    let (status, outcome) = post(hfs.base(), &bad_status).await;
    assert_eq!(status, 422, "a required core binding: {}", issues(&outcome));
    assert!(issues(&outcome).contains("status"), "{}", issues(&outcome));
}

/// The published US Core Patient is enforced as published: a Patient
/// claiming it without identifier, name and gender is refused.
#[tokio::test]
async fn the_published_us_core_patient_is_enforced() {
    let hfs = common::seeded_hfs().await;
    let (status, outcome) = post(hfs.base(), &bare("Patient", profiles::US_CORE_PATIENT)).await;
    assert_eq!(status, 422, "{}", issues(&outcome));
    let text = issues(&outcome);
    assert!(
        text.contains("identifier") || text.contains("gender"),
        "{text}"
    );
    let good = json!({
        "resourceType": "Patient", "meta": { "profile": [profiles::US_CORE_PATIENT] },
        "identifier": [{ "system": "http://passerelle.example.org/fhir/sid/mrn", "value": "MRN-CONF" }],
        "name": [{ "family": "Conforme", "given": ["Anne"] }],
        "gender": "female"
    });
    let (status, outcome) = post(hfs.base(), &good).await;
    assert_eq!(status, 201, "{}", issues(&outcome));
}

/// Passerelle's own screening and letter builders write resources that
/// pass every claimed profile (the referral, appeal and task flows are
/// written through the same server by the `act` tests), and each one
/// breaks when one table rule is broken.
#[tokio::test]
async fn what_passerelle_builds_passes_and_a_broken_copy_is_refused_by_name() {
    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let bundle = crate::screening::bundle("conformance-1");
    let types: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    for t in ["QuestionnaireResponse", "Observation", "Condition"] {
        assert!(types.contains(&t), "{types:?}");
    }
    client
        .transaction(&bundle)
        .await
        .expect("the screening conforms");

    // The same Condition, without its sdoh category (SDOH-Con-3): refused.
    let condition = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "Condition")
        .unwrap();
    let mut broken = condition.clone();
    broken["category"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["coding"][0]["code"] != "sdoh");
    broken["identifier"][0]["value"] = json!("conformance-broken");
    broken.as_object_mut().unwrap().remove("evidence");
    let (status, outcome) = post(hfs.base(), &broken).await;
    assert_eq!(status, 422, "{}", issues(&outcome));
    assert!(
        issues(&outcome).contains("SDOH-Con-3"),
        "{}",
        issues(&outcome)
    );

    // An Observation coded locally: refused by the LOINC rule.
    let mut local = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "Observation" && r["valueCodeableConcept"].is_object())
        .unwrap();
    local["code"] =
        json!({ "coding": [{ "system": "http://passerelle.example.org/q", "code": "x" }] });
    local.as_object_mut().unwrap().remove("derivedFrom");
    let (status, outcome) = post(hfs.base(), &local).await;
    assert_eq!(status, 422, "{}", issues(&outcome));
    assert!(
        issues(&outcome).contains("Observation.code"),
        "{}",
        issues(&outcome)
    );
}
