//! Generated synthetic patients for benchmarks and scale tests: each with an
//! encounter, a coverage (cycling through the regimes), a referral
//! (ServiceRequest + Task, cycling through the Task statuses) and, for every
//! third patient, a denial and its appeal Task. Deterministic: patient `i` is
//! always the same, so expected counts are known from `n` alone.

use serde_json::{Value, json};

use crate::domain::visit::APPEAL_TASK_SYSTEM;

const GIVEN: [&str; 12] = [
    "Alex", "Sam", "Noor", "Inès", "Mateo", "Grace", "Kenji", "Amara", "Luca", "Zoé", "Diego",
    "Hana",
];
const FAMILY: [&str; 10] = [
    "Rivera", "Bernard", "Okoye", "Kowalski", "Haddad", "Silva", "Nakamura", "Dubois", "Moreno",
    "Schmidt",
];
const LANGS: [(&str, &str); 3] = [("en", "English"), ("fr", "French"), ("es", "Spanish")];
/// (payer, PHDSC payer type) cycling through the regimes.
const PAYERS: [(&str, &str); 5] = [
    ("pas-org-sunrise", "211"),
    ("pas-org-medicare", "121"),
    ("pas-org-harbor-ma", "111"),
    ("pas-org-cascade", "512"),
    ("pas-org-northwind", "522"),
];
/// Referral Task statuses cycled through, open ones first.
pub const TASK_STATUSES: [&str; 7] = [
    "requested",
    "accepted",
    "in-progress",
    "on-hold",
    "completed",
    "cancelled",
    "rejected",
];
/// (domain, performer, service text)
const REFERRALS: [(&str, &str, &str); 4] = [
    (
        "food-insecurity",
        "pas-org-pantry",
        "Referral to food pantry program",
    ),
    (
        "housing-instability",
        "pas-org-housing",
        "Referral to housing support program",
    ),
    (
        "transportation-insecurity",
        "pas-org-ride",
        "Referral to transportation support program",
    ),
    (
        "utility-insecurity",
        "pas-org-energy",
        "Referral to utility assistance program",
    ),
];

/// How many of the `n` generated patients have an appeal (every third).
pub fn appeal_count(n: usize) -> usize {
    n.div_ceil(3)
}

/// How many referral Tasks of the `n` generated patients are in `status`.
pub fn referral_count(n: usize, status: &str) -> usize {
    (0..n)
        .filter(|i| TASK_STATUSES[i % TASK_STATUSES.len()] == status)
        .count()
}

/// The `n` generated patients, `per_bundle` to a transaction Bundle.
pub fn bundles(n: usize, per_bundle: usize) -> Vec<Value> {
    let per_bundle = per_bundle.max(1);
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per_bundle)
        .map(|chunk| {
            let entries: Vec<Value> = chunk
                .iter()
                .flat_map(|&i| patient_resources(i))
                .map(|r| json!({ "resource": r }))
                .collect();
            json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
        })
        .collect()
}

fn day(offset: i64) -> String {
    (crate::seed::ANCHOR + time::Duration::days(offset)).to_string()
}

/// The resources of generated patient `i`.
pub fn patient_resources(i: usize) -> Vec<Value> {
    let pid = format!("pas-gen-{i:06}");
    let subject = json!({ "reference": format!("Patient/{pid}") });
    let (lang, lang_name) = LANGS[i % LANGS.len()];
    let (payer, sopt) = PAYERS[i % PAYERS.len()];
    let (domain, performer, text) = REFERRALS[i % REFERRALS.len()];
    let status = TASK_STATUSES[i % TASK_STATUSES.len()];
    let authored = -((i % 120) as i64) - 1;
    let mut out = vec![
        json!({
            "resourceType": "Patient", "id": pid,
            "identifier": [{ "system": "http://passerelle.example.org/fhir/sid/mrn", "value": format!("GEN-{i:06}") }],
            "name": [{ "use": "official", "family": FAMILY[i % FAMILY.len()], "given": [GIVEN[(i / FAMILY.len()) % GIVEN.len()]] }],
            "gender": if i.is_multiple_of(2) { "female" } else { "male" },
            "birthDate": day(-(365 * (20 + (i % 70) as i64))),
            "address": [{ "postalCode": format!("627{:02}", i % 20), "country": "US" }],
            "communication": [{ "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": lang, "display": lang_name }] }, "preferred": true }]
        }),
        json!({
            "resourceType": "Encounter", "id": format!("pas-gen-enc-{i:06}"), "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
            "subject": subject, "period": { "start": day(authored), "end": day(authored) }
        }),
        json!({
            "resourceType": "Coverage", "id": format!("pas-gen-cov-{i:06}"), "status": "active",
            "type": { "coding": [{ "system": "urn:oid:2.16.840.1.113883.3.221.5", "code": sopt }] },
            "subscriberId": format!("GEN-M-{i:06}"), "beneficiary": subject,
            "period": { "start": day(-700) }, "payor": [{ "reference": format!("Organization/{payer}") }]
        }),
        json!({
            "resourceType": "ServiceRequest", "id": format!("pas-gen-sr-{i:06}"), "status": if matches!(status, "completed" | "cancelled" | "rejected") { "completed" } else { "active" },
            "intent": "order",
            "category": [{ "coding": [{ "system": crate::domain::sdoh::SDOHCC_TEMPORARY_CODES, "code": domain }] }],
            "code": { "text": text }, "subject": subject, "authoredOn": day(authored),
            "performer": [{ "reference": format!("Organization/{performer}") }]
        }),
        json!({
            "resourceType": "Task", "id": format!("pas-gen-task-{i:06}"), "status": status, "intent": "order",
            "priority": if i.is_multiple_of(10) { "urgent" } else { "routine" },
            "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] },
            "description": text, "focus": { "reference": format!("ServiceRequest/pas-gen-sr-{i:06}") },
            "for": subject, "authoredOn": day(authored),
            "owner": { "reference": format!("Organization/{performer}") },
            "restriction": { "period": { "end": day(authored + 30) } }
        }),
    ];
    if i.is_multiple_of(3) {
        out.push(json!({
            "resourceType": "ClaimResponse", "id": format!("pas-gen-cr-{i:06}"), "status": "active",
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "pharmacy" }] },
            "use": "claim", "patient": subject, "created": day(authored), "insurer": { "reference": format!("Organization/{payer}") },
            "outcome": "complete", "disposition": "Drug not on formulary.",
            "item": [{ "itemSequence": 1, "adjudication": [{
                "category": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted" }] },
                "reason": { "coding": [{ "system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": "204" }] }
            }] }]
        }));
        out.push(json!({
            "resourceType": "Task", "id": format!("pas-gen-appeal-{i:06}"), "status": "in-progress", "intent": "order",
            "code": { "coding": [{ "system": APPEAL_TASK_SYSTEM, "code": "formulary-exception" }] },
            "description": "Formulary exception request",
            "focus": { "reference": format!("ClaimResponse/pas-gen-cr-{i:06}") }, "for": subject,
            "insurance": [{ "reference": format!("Coverage/pas-gen-cov-{i:06}") }],
            "authoredOn": day(authored), "owner": { "reference": "Organization/pas-org-practice" },
            "restriction": { "period": { "end": day(authored + 65) } }
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_counts_are_known() {
        assert_eq!(bundles(7, 3), bundles(7, 3));
        assert_eq!(bundles(7, 3).len(), 3);
        let resources: usize = bundles(30, 25)
            .iter()
            .map(|b| b["entry"].as_array().unwrap().len())
            .sum();
        assert_eq!(resources, 30 * 5 + appeal_count(30) * 2);
        assert_eq!(appeal_count(30), 10);
        assert_eq!(
            (0..7)
                .map(|s| referral_count(14, TASK_STATUSES[s]))
                .sum::<usize>(),
            14
        );
    }
}
