//! A generated population for the patterns view and its benchmark: per
//! patient, a visit, a screening (most visits; in three systems' shapes),
//! three referrals in various states, a denial, and an appeal of it or a
//! task for the patient: four Tasks a patient, so 5,000 patients give
//! 20,000 Tasks and 5,000 denials. One denial in eight was entered by hand in the appeal form (no
//! ClaimResponse: the appeal Task records it), the others are
//! ClaimResponses with their Claims.
//!
//! Everything derives from [`facts`] of the patient's number, so what the
//! measures must find is known from the generator alone. Ids start with
//! `pas-pop-`; dates are written for the fixtures' anchor day and shifted
//! by `seed` like them.

use serde_json::{Value, json};

use crate::domain::sdoh::SDOHCC_TEMPORARY_CODES;
use crate::domain::visit::{APPEAL_TASK_SYSTEM, TASK_CODE_SYSTEM};

/// ZIP codes cycled through: three postal areas (627, 606, 618), and
/// [`RARE_ZIP`].
pub const ZIPS: [&str; 5] = ["62701", "62702", "60601", "60602", "61801"];
pub const LANGS: [&str; 4] = ["en", "es", "fr", "pt"];
/// A language one patient in a thousand speaks: a small cell at 5,000.
pub const RARE_LANG: &str = "vi";
/// A ZIP code one patient in 500 lives in, in a 3-digit area that HIPAA's
/// Safe Harbor restricts (shown as 000): a small cell at 5,000.
pub const RARE_ZIP: &str = "03601";
/// (payer id, payer name, PHDSC payer type, plan type label)
pub const PAYERS: [(&str, &str, &str, &str); 5] = [
    (
        "pas-org-sunrise",
        "Sunrise Health Plan (Medicaid managed care)",
        "211",
        "Medicaid HMO",
    ),
    (
        "pas-org-medicare",
        "Medicare (CMS), Parts A and B",
        "121",
        "Medicare FFS",
    ),
    (
        "pas-org-harbor-ma",
        "Harbor Medicare Advantage",
        "111",
        "Medicare HMO",
    ),
    (
        "pas-org-cascade",
        "Cascade Marketplace Health",
        "512",
        "Commercial Managed Care - PPO",
    ),
    (
        "pas-org-northwind",
        "Northwind Employer Health Plan",
        "522",
        "Self-insured (ERISA) Administrative Services Only (ASO) plan",
    ),
];
pub const DOMAINS: [&str; 4] = [
    "food-insecurity",
    "housing-instability",
    "transportation-insecurity",
    "utility-insecurity",
];
/// (system, code, display) of what is denied.
pub const ITEMS: [(&str, &str, &str); 4] = [
    (
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "1364445",
        "apixaban 5 MG Oral Tablet",
    ),
    (
        "http://www.nlm.nih.gov/research/umls/rxnorm",
        "1606149",
        "adalimumab 40 MG/0.4ML Prefilled Syringe",
    ),
    (
        "http://www.ama-assn.org/go/cpt",
        "72148",
        "MRI lumbar spine without contrast",
    ),
    (
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "E0601",
        "Continuous positive airway pressure (CPAP) device",
    ),
];
pub const REASONS: [&str; 3] = ["204", "197", "50"];
pub const REFERRAL_STATUSES: [&str; 6] = [
    "requested",
    "accepted",
    "in-progress",
    "completed",
    "rejected",
    "cancelled",
];

/// One referral of a generated patient.
#[derive(Debug, Clone)]
pub struct ReferralFacts {
    pub domain: &'static str,
    pub status: &'static str,
    /// Days after the anchor (negative: before).
    pub authored: i64,
    pub accepted: Option<i64>,
    pub closed: Option<i64>,
}

/// An appeal of the patient's denial.
#[derive(Debug, Clone)]
pub struct AppealFacts {
    pub expedited: bool,
    /// Hours from filing to decision, when decided.
    pub decided_after_hours: Option<i64>,
    pub outcome: Option<&'static str>,
}

/// Everything about generated patient `i`.
#[derive(Debug, Clone)]
pub struct Facts {
    pub id: String,
    pub sex: &'static str,
    pub lang: &'static str,
    pub zip: &'static str,
    pub age: i64,
    pub payer: usize,
    pub visit: i64,
    /// (domain, positive) screened at the visit, if screened.
    pub screen: Option<(&'static str, bool)>,
    pub referrals: [ReferralFacts; 3],
    pub item: usize,
    pub reason: usize,
    pub denial: i64,
    /// The denial was entered by hand from the payer's notice: no
    /// ClaimResponse, and always appealed (the appeal form records it).
    pub hand_entered: bool,
    /// The denial is appealed, else the patient gets a task to call.
    pub appeal: Option<AppealFacts>,
    /// The coverage ended (a lapse) this many days after the anchor.
    pub coverage_end: Option<i64>,
}

/// The facts of patient `i`.
pub fn facts(i: usize) -> Facts {
    // Two days back at least, so that every referral (up to two days after
    // the visit) is in the past.
    let visit = -(3 + (i % 300) as i64);
    let referral = |k: usize| {
        let status = REFERRAL_STATUSES[(i + k) % REFERRAL_STATUSES.len()];
        let authored = visit + k as i64;
        let accepted = matches!(status, "accepted" | "in-progress" | "completed")
            .then_some(authored + (i % 10) as i64);
        let closed = (status == "completed").then_some(authored + 20 + (i % 50) as i64);
        ReferralFacts {
            domain: DOMAINS[(i + k) % DOMAINS.len()],
            status,
            authored,
            accepted,
            closed: closed.map(|c| c.min(-1)),
        }
    };
    Facts {
        id: format!("pas-pop-{i:06}"),
        sex: if i.is_multiple_of(2) {
            "female"
        } else {
            "male"
        },
        lang: if i % 1000 == 7 {
            RARE_LANG
        } else {
            LANGS[i % LANGS.len()]
        },
        zip: if i % 500 == 3 {
            RARE_ZIP
        } else {
            ZIPS[i % ZIPS.len()]
        },
        age: 5 + (i % 85) as i64,
        payer: i % PAYERS.len(),
        visit,
        screen: (i % 5 != 4).then_some((DOMAINS[i % DOMAINS.len()], i % 3 != 2)),
        referrals: [referral(0), referral(1), referral(2)],
        item: i % ITEMS.len(),
        reason: i % REASONS.len(),
        denial: visit,
        hand_entered: i % 8 == 1,
        appeal: (i % 4 != 3).then(|| {
            let expedited = i.is_multiple_of(5);
            let decided = i.is_multiple_of(2);
            AppealFacts {
                expedited,
                decided_after_hours: decided.then(|| {
                    if expedited {
                        48 + (i % 3) as i64 * 24
                    } else {
                        24 * (1 + (i % 10) as i64)
                    }
                }),
                outcome: decided.then(|| {
                    if i.is_multiple_of(4) {
                        "overturned"
                    } else {
                        "upheld"
                    }
                }),
            }
        }),
        coverage_end: i
            .is_multiple_of(10)
            .then_some(visit + 30)
            .filter(|d| *d < 0),
    }
}

fn day(offset: i64) -> String {
    (crate::seed::ANCHOR + time::Duration::days(offset)).to_string()
}

fn instant(offset_days: i64, hours: i64) -> String {
    let t = crate::seed::ANCHOR.midnight().assume_utc()
        + time::Duration::days(offset_days)
        + time::Duration::hours(9 + hours);
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("a valid instant")
}

/// The AHC HRSN item that screens each of [`DOMAINS`]: (LOINC question,
/// a positive answer, a negative answer), per `profiles/screening-rules.json`.
fn item_of(domain: &str) -> (&'static str, &'static str, &'static str) {
    match domain {
        "food-insecurity" => ("88122-7", "LA28397-0", "LA28398-8"),
        "housing-instability" => ("71802-3", "LA31994-9", "LA31993-1"),
        "transportation-insecurity" => ("93030-5", "LA33-6", "LA32-8"),
        _ => ("96779-4", "LA33-6", "LA32-8"),
    }
}

/// Patient `i`'s screening, in one of three shapes, as different systems
/// record it (the patterns view must count each the same): Passerelle's
/// own (SDOHCC domain category and `interpretation` POS); a US Core
/// screening panel (96777-8) with its item as a `hasMember` Observation and
/// no interpretation; or another system's QuestionnaireResponse with
/// path-style LOINC linkIds and no Observation at all.
fn screening(i: usize, pid: &str, domain: &str, positive: bool, date: &str) -> Vec<Value> {
    let subject = json!({ "reference": format!("Patient/{pid}") });
    let (question, yes, no) = item_of(domain);
    let answer = json!({ "coding": [{ "system": "http://loinc.org", "code": if positive { yes } else { no } }] });
    let loinc = |code: &str| json!({ "coding": [{ "system": "http://loinc.org", "code": code }] });
    let categories = json!([
        { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey" }] },
        { "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "code": "sdoh" }] }
    ]);
    match (i / 5) % 3 {
        0 => {
            let mut obs = json!({
                "resourceType": "Observation", "id": format!("{pid}-scr"), "status": "final",
                "category": categories, "code": loinc(question),
                "subject": subject, "effectiveDateTime": date, "valueCodeableConcept": answer
            });
            obs["category"]
                .as_array_mut()
                .expect("categories")
                .push(json!({ "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": domain }] }));
            if positive {
                obs["interpretation"] = json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "POS" }] }]);
            }
            vec![obs]
        }
        1 => vec![
            json!({
                "resourceType": "Observation", "id": format!("{pid}-scr"), "status": "final",
                "category": categories, "code": loinc("96777-8"),
                "subject": subject, "effectiveDateTime": date,
                "hasMember": [{ "reference": format!("Observation/{pid}-scr-1") }]
            }),
            json!({
                "resourceType": "Observation", "id": format!("{pid}-scr-1"), "status": "final",
                "category": categories, "code": loinc(question),
                "subject": subject, "effectiveDateTime": date, "valueCodeableConcept": answer
            }),
        ],
        _ => vec![json!({
            "resourceType": "QuestionnaireResponse", "id": format!("{pid}-scr"), "status": "completed",
            "subject": subject, "authored": date,
            "item": [{ "linkId": "/96777-8", "item": [{
                "linkId": format!("/96777-8/{question}"),
                "answer": [{ "valueCoding": answer["coding"][0] }]
            }] }]
        })],
    }
}

/// The resources of patient `i`.
pub fn resources(i: usize) -> Vec<Value> {
    let f = facts(i);
    let pid = f.id.clone();
    let subject = json!({ "reference": format!("Patient/{pid}") });
    let (payer, _, payer_type, plan) = PAYERS[f.payer];
    let coverage_id = format!("{pid}-cov");
    let mut coverage = json!({
        "resourceType": "Coverage", "id": coverage_id, "status": "active",
        "type": { "coding": [{ "system": "urn:oid:2.16.840.1.113883.3.221.5", "code": payer_type, "display": plan }], "text": plan },
        "subscriberId": format!("POP-{i:06}"), "beneficiary": subject,
        "period": { "start": day(-700) }, "payor": [{ "reference": format!("Organization/{payer}") }]
    });
    if let Some(end) = f.coverage_end {
        coverage["period"]["end"] = json!(day(end));
    }
    let mut out = vec![
        json!({
            "resourceType": "Patient", "id": pid,
            "name": [{ "family": "Population", "given": [format!("P{i}")] }],
            "gender": f.sex,
            "birthDate": day(-(365 * f.age + 30)),
            "address": [{ "postalCode": f.zip, "country": "US" }],
            "communication": [{ "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": f.lang }] }, "preferred": true }]
        }),
        json!({
            "resourceType": "Encounter", "id": format!("{pid}-enc"), "status": "finished",
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
            "subject": subject, "period": { "start": day(f.visit), "end": day(f.visit) }
        }),
        coverage,
    ];
    if let Some((domain, positive)) = f.screen {
        out.extend(screening(i, &pid, domain, positive, &day(f.visit)));
    }
    for (k, r) in f.referrals.iter().enumerate() {
        let sr_id = format!("{pid}-sr{k}");
        out.push(json!({
            "resourceType": "ServiceRequest", "id": sr_id,
            "status": if r.status == "completed" { "completed" } else if matches!(r.status, "rejected" | "cancelled") { "revoked" } else { "active" },
            "intent": "order",
            "category": [{ "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": r.domain }] }],
            "code": { "text": format!("Referral for {}", r.domain) }, "subject": subject, "authoredOn": day(r.authored),
            "performer": [{ "display": format!("{} service", r.domain) }]
        }));
        let mut task = json!({
            "resourceType": "Task", "id": format!("{pid}-ref{k}"), "status": r.status, "intent": "order",
            "code": { "coding": [{ "system": TASK_CODE_SYSTEM, "code": "fulfill" }] },
            "focus": { "reference": format!("ServiceRequest/{sr_id}") }, "for": subject,
            "authoredOn": day(r.authored)
        });
        if let Some(a) = r.accepted {
            task["executionPeriod"] = json!({ "start": day(a) });
        }
        if let Some(c) = r.closed {
            task["executionPeriod"]["end"] = json!(day(c));
        }
        if matches!(r.status, "rejected" | "cancelled") {
            task["statusReason"] = json!({ "text": "No capacity" });
        }
        out.push(task);
    }
    let (system, code, display) = ITEMS[f.item];
    let cr_id = format!("{pid}-cr");
    let claim_id = format!("{pid}-claim");
    if let (true, Some(a)) = (f.hand_entered, &f.appeal) {
        out.push(hand_entered_appeal(&f, a, &coverage_id));
        return out;
    }
    out.push(json!({
        "resourceType": "Claim", "id": claim_id, "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "pharmacy" }] },
        "use": "preauthorization", "patient": subject, "created": day(f.denial - 3),
        "provider": { "reference": "Organization/pas-org-practice" },
        "priority": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal" }] },
        "insurance": [{ "sequence": 1, "focal": true, "coverage": { "reference": format!("Coverage/{coverage_id}") } }],
        "item": [{ "sequence": 1, "productOrService": { "coding": [{ "system": system, "code": code, "display": display }], "text": display } }]
    }));
    out.push(json!({
        "resourceType": "ClaimResponse", "id": cr_id, "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "pharmacy" }] },
        "use": "preauthorization", "patient": subject, "created": day(f.denial),
        "insurer": { "reference": format!("Organization/{payer}") },
        "request": { "reference": format!("Claim/{claim_id}") },
        "outcome": "complete", "disposition": "Denied.",
        "item": [{ "itemSequence": 1, "adjudication": [{
            "category": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "submitted" }] },
            "reason": { "coding": [{ "system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": REASONS[f.reason] }] }
        }] }]
    }));
    match &f.appeal {
        Some(a) => {
            let filed = instant(f.denial + 1, 0);
            let mut task = json!({
                "resourceType": "Task", "id": format!("{pid}-appeal"),
                "status": if a.outcome.is_some() { "completed" } else { "in-progress" }, "intent": "order",
                "priority": if a.expedited { "stat" } else { "routine" },
                "code": { "coding": [{ "system": APPEAL_TASK_SYSTEM, "code": if a.expedited { "expedited-appeal" } else { "internal-appeal" } }] },
                "focus": { "reference": format!("ClaimResponse/{cr_id}") }, "for": subject,
                "insurance": [{ "reference": format!("Coverage/{coverage_id}") }],
                "authoredOn": filed
            });
            if let (Some(h), Some(outcome)) = (a.decided_after_hours, a.outcome) {
                task["executionPeriod"] = json!({ "start": filed, "end": instant(f.denial + 1, h) });
                task["output"] = json!([{
                    "type": { "coding": [{ "system": crate::fhir::appeal::APPEAL_INPUT_SYSTEM, "code": "appeal-outcome" }] },
                    "valueCodeableConcept": { "coding": [{ "system": crate::fhir::appeal::APPEAL_INPUT_SYSTEM, "code": outcome }] }
                }]);
            }
            out.push(task);
        }
        None => out.push(json!({
            "resourceType": "Task", "id": format!("{pid}-call"), "status": "requested", "intent": "order",
            "code": { "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": "make-contact" }] },
            "description": "Call the plan about the denial", "for": subject, "owner": subject,
            "authoredOn": day(f.denial + 1)
        })),
    }
    out
}

/// The appeal of a denial entered by hand, made by the appeal form's own
/// Task builder: the denial is in its inputs (the payer as a person would
/// type it, shorter than the payer's name on file).
fn hand_entered_appeal(f: &Facts, a: &AppealFacts, coverage_id: &str) -> Value {
    use crate::domain::appeal::{AppealKind, ReasonSystem, plan};
    use crate::fhir::appeal::{AppealRecord, DenialInputs, task};
    let (_, payer, _, _) = PAYERS[f.payer];
    let (system, code, display) = ITEMS[f.item];
    let filed = instant(f.denial + 1, 0);
    let kind = if a.expedited {
        AppealKind::ExpeditedAppeal
    } else {
        AppealKind::InternalAppeal
    };
    let notice = crate::seed::ANCHOR + time::Duration::days(f.denial);
    let now = time::OffsetDateTime::parse(&filed, &time::format_description::well_known::Rfc3339)
        .expect("a valid instant");
    let plan = plan(kind, a.expedited, notice, None, None, now);
    let patient = format!("Patient/{}", f.id);
    let coverage = format!("Coverage/{coverage_id}");
    let mut t = task(&AppealRecord {
        id: &f.id,
        patient: &patient,
        encounter: None,
        requester: None,
        coverage: Some(&coverage),
        focus: None,
        plan: &plan,
        denial: DenialInputs {
            payer: payer.split(' ').next(),
            service: Some(display),
            service_code: Some((system, code)),
            reasons: vec![(ReasonSystem::Carc.uri(), REASONS[f.reason], None)],
            text: Some("Denied: not medically necessary."),
        },
        authored: &filed,
    });
    t["id"] = json!(format!("{}-appeal", f.id));
    if let (Some(h), Some(outcome)) = (a.decided_after_hours, a.outcome) {
        t["status"] = json!("completed");
        t["executionPeriod"] = json!({ "start": filed, "end": instant(f.denial + 1, h) });
        t["output"] = json!([{
            "type": { "coding": [{ "system": crate::fhir::appeal::APPEAL_INPUT_SYSTEM, "code": "appeal-outcome" }] },
            "valueCodeableConcept": { "coding": [{ "system": crate::fhir::appeal::APPEAL_INPUT_SYSTEM, "code": outcome }] }
        }]);
    } else {
        t["status"] = json!("in-progress");
    }
    t
}

/// The `n` patients, `per_bundle` to a transaction Bundle.
pub fn bundles(n: usize, per_bundle: usize) -> Vec<Value> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(per_bundle.max(1))
        .map(|chunk| {
            let entries: Vec<Value> = chunk
                .iter()
                .flat_map(|&i| resources(i))
                .map(|r| json!({ "resource": r }))
                .collect();
            json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_thousand_patients_give_twenty_thousand_tasks_and_five_thousand_denials_625_by_hand() {
        let count = |t: &str| {
            (0..5000)
                .flat_map(resources)
                .filter(|r| r["resourceType"] == t)
                .count()
        };
        assert_eq!(count("Task"), 20_000);
        // 625 denials entered by hand, recorded on their appeal Tasks.
        assert_eq!(count("ClaimResponse"), 4_375);
        let hand = (0..5000)
            .flat_map(resources)
            .filter(|r| {
                r["resourceType"] == "Task" && r["input"].is_array() && r["focus"].is_null()
            })
            .count();
        assert_eq!(hand, 625);
        assert_eq!(count("Patient"), 5_000);
        assert_eq!(resources(7), resources(7), "deterministic");
    }

    #[test]
    fn the_population_is_valid_r4() {
        let v = crate::fhir::SchemaValidator::load(&crate::config::cache_dir().join("definitions"))
            .expect("the FHIR schema is installed by ./scripts/test");
        for b in bundles(40, 40) {
            let b = crate::seed::prepare("population", b, 0).unwrap();
            v.validate_bundle(&b).unwrap();
        }
    }
}
