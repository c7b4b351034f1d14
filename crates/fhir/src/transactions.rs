//! What Passerelle's transactions are like, measured on its own builders,
//! for `passerelle check`: the largest one it can send, and (in the tests)
//! that every entry of every builder's transaction can be sent again.
//!
//! A FHIR server may refuse a transaction for its size (many cap the
//! entries of a Bundle); `check` sends one of [`largest`]'s size. And a
//! server that does not apply a transaction as one unit (FHIR R4
//! http.html#transaction: "must fail or succeed as a single atomic unit")
//! may keep part of one that failed: the outbox then sends all of it again,
//! which adds nothing twice only because every POST entry is a conditional
//! create (`ifNoneExist`, http.html#cond-update) on Passerelle's identifier.

use std::collections::BTreeSet;

use crate::domain::screening::{Absent, ItemResponse, Rules, score};
use crate::questionnaire::{self, Kind};
use crate::screening::{ConditionTable, RecordedItem, ScreeningRecord, transaction};

/// The largest transaction Passerelle builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Largest {
    /// Bundle entries.
    pub entries: usize,
    /// What it records, in words.
    pub what: String,
}

/// The largest transaction Passerelle can build: a screening with the
/// shipped instrument that has the most questions, every question recorded
/// (an Observation each) and every domain it screens positive (a Condition
/// each), with its QuestionnaireResponse and its totals, built by
/// [`crate::screening::transaction`] itself. The other transactions (a
/// referral: ServiceRequest, Task and Consent; a patient's Task; an appeal;
/// a letter) have at most three entries.
pub fn largest() -> Largest {
    let forms = questionnaire::shipped().expect("the shipped Questionnaires parse (tested)");
    let rules = Rules::shared();
    let conditions = ConditionTable::shipped();
    forms
        .values()
        .map(|form| {
            let items = every_question(form);
            let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
            let mut scored = score(rules, &responses, &form.ordinals());
            let domains: BTreeSet<_> = scored
                .items
                .iter()
                .flat_map(|i| i.domains.iter().copied())
                .chain(scored.totals.iter().map(|t| t.domain))
                .collect();
            for item in &mut scored.items {
                item.positive = !item.domains.is_empty();
            }
            scored.positive = domains;
            let bundle = transaction(
                &ScreeningRecord {
                    id: "largest",
                    patient: "Patient/largest",
                    encounter: Some("Encounter/largest"),
                    author: Some("Practitioner/largest"),
                    questionnaire: &form.canonical(),
                    language: "en",
                    authored: "2026-01-01T00:00:00Z",
                    items: &items,
                    scored: &scored,
                },
                &conditions,
            );
            let entries = bundle["entry"].as_array().map_or(&[][..], Vec::as_slice);
            let of = |t: &str| {
                entries
                    .iter()
                    .filter(|e| e["resource"]["resourceType"] == t)
                    .count()
            };
            Largest {
                entries: entries.len(),
                what: format!(
                    "a screening with {}, every question answered and its {} domains positive: {} QuestionnaireResponse, {} Observations, {} Conditions and {} Questionnaire (the form, created once)",
                    form.title.en,
                    scored.positive.len(),
                    of("QuestionnaireResponse"),
                    of("Observation"),
                    of("Condition"),
                    of("Questionnaire")
                ),
            }
        })
        .max_by_key(|l| l.entries)
        .expect("at least one instrument is shipped")
}

/// Every question of `form` that is recorded as an Observation (a coded
/// item that is not a group, a display or read-only), whatever its
/// `enableWhen`: more than any one visit records, so a bound.
fn every_question(form: &questionnaire::Form) -> Vec<RecordedItem> {
    form.all_items()
        .into_iter()
        .filter(|i| !matches!(i.kind, Kind::Group | Kind::Display) && !i.read_only)
        .filter_map(|i| {
            Some(RecordedItem {
                link_id: i.link_id.clone(),
                text: i.text.en.clone(),
                question: i.code.clone()?,
                answers: vec![],
                absent: Some(Absent::Skipped),
                groups: Vec::new(),
            })
        })
        .collect()
}

/// The entries of a transaction that are not safe to send again: a POST
/// without `ifNoneExist`, a PUT without `ifMatch`, or any other method
/// (each named `Bundle.entry[i] (type): why`). Empty for every transaction
/// Passerelle builds (tested on each builder).
pub fn not_idempotent(bundle: &serde_json::Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, e)| {
            let request = &e["request"];
            let guarded = |field: &str| request[field].as_str().is_some_and(|s| !s.is_empty());
            let why = match request["method"].as_str() {
                Some("POST") if guarded("ifNoneExist") => return None,
                Some("PUT") if guarded("ifMatch") => return None,
                Some("POST") => "a POST without ifNoneExist".to_string(),
                Some("PUT") => "a PUT without ifMatch".to_string(),
                other => format!("method {}", other.unwrap_or("missing")),
            };
            let t = e["resource"]["resourceType"].as_str().unwrap_or("?");
            Some(format!("Bundle.entry[{i}] ({t}): {why}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::appeal::{AppealKind, plan};
    use crate::domain::directory::{Directory, Query};
    use crate::domain::letter::LetterKind;
    use crate::domain::sdoh::Domain;
    use crate::{appeal, letter, referral};
    use serde_json::json;
    use time::macros::{date, datetime};

    /// One transaction of every builder, its largest form where options
    /// add entries (a referral with consent, the patient Task of each kind,
    /// every shipped instrument's screening).
    fn every_builders_transactions() -> Vec<(String, serde_json::Value)> {
        let mut out = Vec::new();
        let rules = Rules::shared();
        for form in questionnaire::shipped().unwrap().values() {
            let items = every_question(form);
            let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
            let mut scored = score(rules, &responses, &form.ordinals());
            scored.positive = Domain::ALL.iter().copied().collect();
            let b = transaction(
                &ScreeningRecord {
                    id: "s",
                    patient: "Patient/p",
                    encounter: None,
                    author: None,
                    questionnaire: &form.canonical(),
                    language: "en",
                    authored: "2026-01-01T00:00:00Z",
                    items: &items,
                    scored: &scored,
                },
                &ConditionTable::shipped(),
            );
            out.push((format!("screening {}", form.id), b));
        }
        let directory = Directory::shipped();
        let service = directory.search(&Query {
            domain: Some(Domain::FoodInsecurity),
            ..Default::default()
        })[0]
            .service
            .clone();
        let reasons = vec!["Condition/c".to_string()];
        for consent in [true, false] {
            let b = referral::transaction(&referral::ReferralRecord {
                id: "r",
                patient: "Patient/p",
                encounter: Some("Encounter/e"),
                requester: "PractitionerRole/pr",
                domain: Domain::FoodInsecurity,
                service: &service,
                reasons: &reasons,
                screenings: &[],
                concerns: &[],
                authored: "2026-01-01T00:00:00Z",
                priority: "routine",
                code: referral::default_code(Domain::FoodInsecurity),
                consent: consent.then_some(referral::Consented {
                    organization: "Organization/o",
                }),
            });
            out.push((format!("referral (consent {consent})"), b));
        }
        for kind in [
            referral::PatientTaskKind::MakeContact,
            referral::PatientTaskKind::ReviewMaterial,
        ] {
            let b = referral::patient_task(&referral::PatientTaskRecord {
                id: "t",
                patient: "Patient/p",
                requester: "PractitionerRole/pr",
                kind,
                service: &service,
                description: "Call",
                language: "en",
                authored: "2026-01-01T00:00:00Z",
            });
            out.push((format!("patient task {}", kind.code()), b));
        }
        let p = plan(
            AppealKind::FormularyException,
            true,
            date!(2026 - 11 - 16),
            None,
            None,
            datetime!(2026-11-22 10:00 UTC),
        );
        let b = appeal::transaction(&appeal::AppealRecord {
            id: "a",
            patient: "Patient/p",
            encounter: None,
            requester: None,
            coverage: None,
            focus: None,
            plan: &p,
            denial: appeal::DenialInputs::default(),
            authored: "2026-01-01T00:00:00Z",
        });
        out.push(("appeal".into(), b));
        let b = letter::transaction(&letter::LetterRecord {
            id: "l",
            patient: "Patient/p",
            encounter: None,
            author: None,
            task: Some("Task/t"),
            kind: LetterKind::Appeal,
            lang: "en",
            title: "Letter",
            text: "Text",
            pdf: b"%PDF-1.7",
            date: "2026-01-01T00:00:00Z",
        });
        out.push(("letter".into(), b));
        out
    }

    #[test]
    fn every_entry_of_every_transaction_passerelle_builds_can_be_sent_again() {
        let all = every_builders_transactions();
        let mut entries = 0;
        for (what, bundle) in &all {
            assert_eq!(bundle["type"], "transaction", "{what}");
            assert_eq!(not_idempotent(bundle), Vec::<String>::new(), "{what}");
            for e in bundle["entry"].as_array().unwrap() {
                // The condition is on the identifier the resource carries,
                // so a second send finds the first one.
                let condition = e["request"]["ifNoneExist"].as_str().unwrap();
                let (system, value) = condition
                    .strip_prefix("identifier=")
                    .and_then(|s| s.split_once('|'))
                    .unwrap_or_else(|| panic!("{what}: {condition}"));
                let ids = &e["resource"]["identifier"];
                let carried =
                    |id: &serde_json::Value| id["system"] == system && id["value"] == value;
                assert!(
                    ids.as_array()
                        .map_or(carried(ids), |a| a.iter().any(carried)),
                    "{what}: {condition} not on {ids}"
                );
                entries += 1;
            }
        }
        assert!(entries > 40, "{entries} entries checked");
    }

    /// Every builder in the crate is among the ones tested above: a new
    /// `"type": "transaction"` outside the tests must be added there.
    #[test]
    fn the_builders_tested_are_all_the_builders() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut files = BTreeSet::new();
        // The crate's files, those of its module folders included.
        let mut paths: Vec<std::path::PathBuf> = Vec::new();
        let mut folders = vec![std::path::PathBuf::from(dir)];
        while let Some(folder) = folders.pop() {
            for f in std::fs::read_dir(folder).unwrap() {
                let path = f.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    paths.push(path);
                }
            }
        }
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            if code.contains("\"type\": \"transaction\"") {
                files.insert(path.file_stem().unwrap().to_string_lossy().to_string());
            }
        }
        // bundle.rs builds entries, not transactions.
        assert_eq!(
            files,
            ["appeal", "letter", "referral", "screening"]
                .map(String::from)
                .into(),
        );
        let built: BTreeSet<String> = every_builders_transactions()
            .into_iter()
            .map(|(what, _)| what.split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(
            built,
            ["appeal", "letter", "patient", "referral", "screening"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn the_largest_transaction_is_a_full_screening_and_bounds_every_builder() {
        let largest = largest();
        let most = every_builders_transactions()
            .iter()
            .map(|(_, b)| b["entry"].as_array().unwrap().len())
            .max()
            .unwrap();
        // Every domain positive at once (above) can only add Conditions the
        // instrument does not screen; `largest` counts the ones it does.
        assert!(largest.entries <= most, "{largest:?} vs {most}");
        assert!(largest.entries > 14, "{largest:?}");
        assert!(
            largest.what.contains("every question answered"),
            "{largest:?}"
        );
        println!(
            "the largest transaction: {} entries, {}",
            largest.entries, largest.what
        );
    }

    #[test]
    fn a_post_without_condition_and_a_bare_put_are_named() {
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Task"}, "request": {"method": "POST", "url": "Task"}},
            {"resource": {"resourceType": "Task"}, "request": {"method": "PUT", "url": "Task/1"}},
            {"resource": {"resourceType": "Task"}, "request": {"method": "PUT", "url": "Task/1", "ifMatch": "W/\"1\""}},
            {"request": {"method": "DELETE", "url": "Task/1"}}
        ]});
        assert_eq!(
            not_idempotent(&b),
            [
                "Bundle.entry[0] (Task): a POST without ifNoneExist",
                "Bundle.entry[1] (Task): a PUT without ifMatch",
                "Bundle.entry[3] (?): method DELETE",
            ]
        );
    }
}
