//! A screening as one FHIR transaction, the way the Gravity SDOH Clinical
//! Care IG STU 2.3.0 records it:
//!
//! * the QuestionnaireResponse;
//! * one Observation per item (SDOHCC Observation Screening Response:
//!   categories `social-history`, `survey`, `sdoh` and the domain; the
//!   question's LOINC code; `derivedFrom` the QuestionnaireResponse;
//!   `interpretation` POS on positive answers only, never NEG;
//!   `dataAbsentReason` for items not answered), and one per computed total;
//! * one Condition per positive domain (categories `health-concern`, `sdoh`
//!   and the domain; `verificationStatus` unconfirmed until a clinician
//!   confirms it; `evidence` pointing at the positive Observations).
//!
//! Every resource carries an identifier derived from the screening's id and
//! is created with `ifNoneExist`, so sending the same transaction again
//! (after a timeout, or from the outbox after a restart) creates nothing
//! twice. When intimate-partner violence is positive, every resource is
//! labelled restricted (`meta.security` R), so that nothing reaches a portal
//! without review.
//!
//! Also the reads a screening needs: the patient's screening history (what
//! was screened lately is not asked again), and a health concern as it is
//! now, for the clinician's verdict on it.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{Value, json};

use super::bundle::urn;
use super::client::FhirClient;
use super::error::FhirError;
use super::profiles;

use crate::domain::screening::Rules;
use crate::domain::screening::{Absent, Answer, ItemResponse, Scored};
use crate::domain::sdoh::{Domain, SDOHCC_TEMPORARY_CODES, US_CORE_CATEGORY};
use crate::domain::visit::DomainScreening;

/// Identifier system of everything a screening records.
pub const SCREENING_ID_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/screening";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const CONDITION_CATEGORY: &str = "http://hl7.org/fhir/us/core/CodeSystem/condition-category";
const DATA_ABSENT: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
const LOINC: &str = "http://loinc.org";

/// The Condition codes per domain (`profiles/sdoh-conditions.json`).
pub const SHIPPED_CONDITIONS: &str = include_str!("../../../profiles/sdoh-conditions.json");

#[derive(Debug, Clone, Deserialize)]
struct ConditionEntry {
    text: String,
    #[serde(default)]
    icd10cm: Option<(String, String)>,
    #[serde(default)]
    snomed: Option<(String, String)>,
}

/// Condition codes by domain.
#[derive(Debug, Clone, Deserialize)]
pub struct ConditionTable {
    icd10cm_system: String,
    snomed_system: String,
    domains: HashMap<String, ConditionEntry>,
}

impl ConditionTable {
    pub fn parse(json: &str) -> Result<Self, String> {
        let t: ConditionTable = serde_json::from_str(json).map_err(|e| e.to_string())?;
        for d in Domain::ALL {
            if !t.domains.contains_key(d.code()) {
                return Err(format!("no entry for domain {}", d.code()));
            }
        }
        Ok(t)
    }

    pub fn shipped() -> Self {
        Self::parse(SHIPPED_CONDITIONS).expect("the shipped condition table is valid (tested)")
    }

    fn code(&self, domain: Domain) -> Value {
        let e = &self.domains[domain.code()];
        let mut coding = Vec::new();
        if let Some((code, display)) = &e.snomed {
            coding.push(json!({ "system": self.snomed_system, "code": code, "display": display }));
        }
        if let Some((code, display)) = &e.icd10cm {
            coding.push(json!({ "system": self.icd10cm_system, "code": code, "display": display }));
        }
        let mut cc = json!({ "text": e.text });
        if !coding.is_empty() {
            cc["coding"] = Value::Array(coding);
        }
        cc
    }
}

/// A coding as recorded (question or answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: String,
}

/// One answered (or not) item, with what the form showed.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedItem {
    pub link_id: String,
    pub text: String,
    pub question: Coding,
    /// Coded answers with their display, or plain values.
    pub answers: Vec<(Answer, Option<Coding>)>,
    pub absent: Option<Absent>,
    /// The groups the item sits in on its Questionnaire, outermost first
    /// (linkId and text): the QuestionnaireResponse repeats that hierarchy.
    pub groups: Vec<(String, String)>,
}

impl RecordedItem {
    /// What the scorer reads of this item: its question code and answers,
    /// without the texts the form showed.
    pub fn response(&self) -> ItemResponse {
        ItemResponse {
            link_id: self.link_id.clone(),
            question: self.question.code.clone(),
            answers: self.answers.iter().map(|(a, _)| a.clone()).collect(),
            absent: self.absent,
        }
    }
}

/// Everything one screening records.
#[derive(Debug, Clone)]
pub struct ScreeningRecord<'a> {
    /// Made by Passerelle when the form is shown: the idempotency key.
    pub id: &'a str,
    pub patient: &'a str,
    pub encounter: Option<&'a str>,
    pub author: Option<&'a str>,
    /// `url|version` of the Questionnaire.
    pub questionnaire: &'a str,
    pub language: &'a str,
    /// FHIR dateTime.
    pub authored: &'a str,
    pub items: &'a [RecordedItem],
    pub scored: &'a Scored,
}

fn coding(c: &Coding) -> Value {
    json!({ "system": c.system, "code": c.code, "display": c.display })
}

fn domain_category(d: Domain) -> Value {
    json!({ "coding": [{ "system": SDOHCC_TEMPORARY_CODES, "code": d.code(), "display": category_display(d) }] })
}

/// The display of a domain's code as the SDOHCC temporary code system
/// spells it (SDOHCC STU 2.3.0 `SDOHCCValueSetSDOHCategory`).
pub fn category_display(d: Domain) -> &'static str {
    match d {
        Domain::FoodInsecurity => "Food Insecurity",
        Domain::HousingInstability => "Housing Instability",
        Domain::Homelessness => "Homelessness",
        Domain::InadequateHousing => "Inadequate Housing",
        Domain::TransportationInsecurity => "Transportation Insecurity",
        Domain::UtilityInsecurity => "Utility Insecurity",
        Domain::IntimatePartnerViolence => "Intimate Partner Violence",
        Domain::FinancialInsecurity => "Financial Insecurity",
        Domain::MedicalCostBurden => "Medical Cost Burden",
        Domain::LanguageAccess => "Language Access",
        Domain::PersonalHealthLiteracy => "Personal Health Literacy",
        Domain::SocialConnection => "Social Connection",
    }
}

/// The categories of every screening Observation: SDOHCC Observation
/// Screening Response `category` 2..*, with `survey` (US Core screening
/// assessment `category:survey`) and `sdoh` (SDOH-Obs-4), and the domains.
fn observation_categories(domains: Vec<Domain>) -> Vec<Value> {
    let mut categories = vec![
        json!({ "coding": [{ "system": OBSERVATION_CATEGORY, "code": "social-history", "display": "Social History" }] }),
        json!({ "coding": [{ "system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey" }] }),
        json!({ "coding": [{ "system": US_CORE_CATEGORY, "code": "sdoh", "display": "SDOH" }] }),
    ];
    categories.extend(domains.into_iter().map(domain_category));
    categories
}

/// The device that proposes an unconfirmed concern from the answers: the
/// SDOHCC Condition asserter of a machine-generated condition is the
/// `SDOHCC-ExtensionConditionAsserter` extension, a Device (SDOHCC STU 2.3.0
/// `SDOHCCCondition.fsh`, `extension[asserterDevice]`; SDOH-Con-1: at most
/// one asserter), not the clinician, who has not yet confirmed it.
const ASSERTER_DEVICE: &str = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ExtensionConditionAsserter";

/// A QuestionnaireResponse's items in its Questionnaire's hierarchy: each
/// answered item inside the groups it sits in, in the form's order (SDC
/// QuestionnaireResponse: `item` mirrors `Questionnaire.item`).
fn nest(items: Vec<(&[(String, String)], Value)>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for (groups, item) in items {
        let mut level = &mut out;
        for (link_id, text) in groups {
            let at = match level.iter().position(|g| g["linkId"] == *link_id) {
                Some(i) => i,
                None => {
                    let mut g = json!({ "linkId": link_id, "item": [] });
                    if !text.is_empty() {
                        g["text"] = json!(text);
                    }
                    level.push(g);
                    level.len() - 1
                }
            };
            level = level[at]["item"].as_array_mut().expect("a group has items");
        }
        level.push(item);
    }
    out
}

fn entry(id_value: &str, resource: Value) -> Value {
    super::bundle::conditional_create(SCREENING_ID_SYSTEM, id_value, resource)
}

fn identifier(value: &str) -> Value {
    json!([{ "system": SCREENING_ID_SYSTEM, "value": value }])
}

fn answer_value(answer: &Answer, display: Option<&Coding>) -> (String, Value) {
    match (answer, display) {
        (Answer::Code(_), Some(c)) => ("valueCoding".into(), coding(c)),
        (Answer::Code(code), None) => (
            "valueCoding".into(),
            json!({ "system": "http://loinc.org", "code": code }),
        ),
        (Answer::Integer(n), _) => ("valueInteger".into(), json!(n)),
        (Answer::Decimal(d), _) => ("valueDecimal".into(), json!(d)),
        (Answer::Boolean(b), _) => ("valueBoolean".into(), json!(b)),
        (Answer::Text(t), _) => ("valueString".into(), json!(t)),
    }
}

/// A clinician's decision on an SDOH health concern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Confirmed: `verificationStatus` confirmed, and the concern becomes a
    /// problem-list item (SDOHCC: a confirmed concern joins the problem list).
    Confirm,
    /// Refuted: `verificationStatus` refuted; it stays a health concern.
    Refute,
}

/// The Condition after the clinician's decision (to be sent with `If-Match`).
pub fn decide(mut condition: Value, verdict: Verdict) -> Value {
    let code = match verdict {
        Verdict::Confirm => "confirmed",
        Verdict::Refute => "refuted",
    };
    condition["verificationStatus"] = json!({ "coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": code
    }] });
    if verdict == Verdict::Confirm
        && let Some(categories) = condition.get_mut("category").and_then(Value::as_array_mut)
    {
        for c in categories.iter_mut() {
            let is_concern = c["coding"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|cd| cd["system"] == CONDITION_CATEGORY && cd["code"] == "health-concern");
            if is_concern {
                *c = json!({ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item", "display": "Problem List Item"
                }] });
            }
        }
    }
    condition
}

/// The Condition `id` as the server has it now, with the clinician's
/// `verdict` applied: what to send back, with `If-Match` on the version the
/// clinician saw.
pub async fn read_and_decide(
    client: &FhirClient,
    id: &str,
    verdict: Verdict,
) -> Result<Value, FhirError> {
    let current = client.read_json("Condition", id).await?;
    Ok(decide(current.resource, verdict))
}

/// The patient's screening history: every SDOH record the server holds,
/// in any standard shape, by whoever recorded it ([`super::sdoh::read`]),
/// read into each domain's state with the same rules as the form.
pub async fn history(
    client: &FhirClient,
    patient_id: &str,
) -> Result<Vec<DomainScreening>, FhirError> {
    let rules = Rules::shared();
    let found = super::sdoh::read(client, rules, patient_id).await?;
    Ok(crate::domain::evidence::read(rules, &found))
}

/// The transaction Bundle of one screening.
pub fn transaction(r: &ScreeningRecord, conditions: &ConditionTable) -> Value {
    let restricted = r.scored.positive.contains(&Domain::IntimatePartnerViolence);
    let meta = |profile: &str| {
        let mut m = json!({ "profile": [profile] });
        if restricted {
            m["security"] =
                json!([{ "system": CONFIDENTIALITY, "code": "R", "display": "restricted" }]);
        }
        m
    };
    let subject = json!({ "reference": r.patient });
    let encounter = r.encounter.map(|e| json!({ "reference": e }));
    let qr_id = r.id.to_string();
    let qr_url = urn(&qr_id);
    let mut entries = Vec::new();

    let qr_items: Vec<(&[(String, String)], Value)> = r
        .items
        .iter()
        .filter(|i| i.absent.is_none() && !i.answers.is_empty())
        .map(|i| {
            let answers: Vec<Value> = i
                .answers
                .iter()
                .map(|(a, c)| {
                    let (k, v) = answer_value(a, c.as_ref());
                    json!({ k: v })
                })
                .collect();
            (
                i.groups.as_slice(),
                json!({ "linkId": i.link_id, "text": i.text, "answer": answers }),
            )
        })
        .collect();
    let mut qr = json!({
        "resourceType": "QuestionnaireResponse",
        "identifier": { "system": SCREENING_ID_SYSTEM, "value": qr_id },
        "questionnaire": r.questionnaire,
        "status": "completed",
        "subject": subject,
        "authored": r.authored,
        "language": r.language,
        "item": nest(qr_items),
    });
    if let Some(e) = &encounter {
        qr["encounter"] = e.clone();
    }
    if let Some(a) = r.author {
        qr["author"] = json!({ "reference": a });
    }
    qr["meta"] = meta(profiles::US_CORE_QUESTIONNAIRE_RESPONSE);
    entries.push(entry(&qr_id, qr));

    // One Observation per item; remember the positive ones per domain.
    let mut evidence: BTreeMap<Domain, Vec<String>> = BTreeMap::new();
    let observation = |id_value: &str, domains: Vec<Domain>, code: Value| {
        let mut obs = json!({
            "resourceType": "Observation",
            "meta": meta(profiles::SDOHCC_OBSERVATION_SCREENING_RESPONSE),
            "identifier": identifier(id_value),
            "status": "final",
            "category": observation_categories(domains),
            "code": code,
            "subject": subject,
            "effectiveDateTime": r.authored,
            "derivedFrom": [{ "reference": qr_url }],
        });
        if let Some(e) = &encounter {
            obs["encounter"] = e.clone();
        }
        obs
    };
    let positive =
        json!([{ "coding": [{ "system": INTERPRETATION, "code": "POS", "display": "Positive" }] }]);
    for (item, result) in r.items.iter().zip(&r.scored.items) {
        // SDOHCC Observation Screening Response: `code` from LOINC only
        // (`code` ^requirements); an item with a local code stays in the
        // QuestionnaireResponse alone.
        if item.question.system != LOINC {
            continue;
        }
        let id_value = format!("{}/obs/{}", r.id, item.link_id);
        let code = json!({ "coding": [coding(&item.question)], "text": item.text });
        let mut obs = observation(
            &id_value,
            result.domains.iter().copied().collect(),
            code.clone(),
        );
        match (&item.absent, item.answers.as_slice()) {
            (None, [(answer, display)]) => {
                let (k, v) = answer_value(answer, display.as_ref());
                let (k, v) = match k.as_str() {
                    "valueCoding" => ("valueCodeableConcept".to_string(), json!({ "coding": [v] })),
                    _ => (k, v),
                };
                obs[k] = v;
            }
            (None, [_, _, ..]) => {
                // A multiple-choice item: one Observation per answer, grouped
                // under this one by `hasMember` (SDOHCC Observation Screening
                // Response `hasMember[SupportedHasMember]`; US Core screening
                // assessment: a multi-select answer is one Observation each).
                let mut members = Vec::new();
                for (n, (answer, display)) in item.answers.iter().enumerate() {
                    let member_id = format!("{id_value}/{n}");
                    let mut member = observation(
                        &member_id,
                        result.domains.iter().copied().collect(),
                        code.clone(),
                    );
                    let (k, v) = answer_value(answer, display.as_ref());
                    let (k, v) = match k.as_str() {
                        "valueCoding" => {
                            ("valueCodeableConcept".to_string(), json!({ "coding": [v] }))
                        }
                        _ => (k, v),
                    };
                    member[k] = v;
                    members.push(json!({ "reference": urn(&member_id) }));
                    entries.push(entry(&member_id, member));
                }
                obs["hasMember"] = Value::Array(members);
            }
            (absent, _) => {
                let reason = absent.unwrap_or(Absent::Skipped);
                obs["dataAbsentReason"] =
                    json!({ "coding": [{ "system": DATA_ABSENT, "code": reason.code() }] });
            }
        }
        if result.positive {
            obs["interpretation"] = positive.clone();
            for d in &result.domains {
                if r.scored.positive.contains(d) {
                    evidence.entry(*d).or_default().push(urn(&id_value));
                }
            }
        }
        entries.push(entry(&id_value, obs));
    }
    for total in &r.scored.totals {
        let id_value = format!("{}/total/{}", r.id, total.total);
        let mut obs = observation(
            &id_value,
            vec![total.domain],
            json!({ "coding": [{ "system": LOINC, "code": total.total }] }),
        );
        match total.value {
            // A score is a quantity with the UCUM unit {score} (US Core
            // screening assessment: `valueQuantity`, us-core-3 UCUM).
            Some(v) => {
                obs["valueQuantity"] = json!({ "value": v, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}" })
            }
            None => {
                obs["dataAbsentReason"] =
                    json!({ "coding": [{ "system": DATA_ABSENT, "code": "not-asked" }] })
            }
        }
        if total.positive {
            obs["interpretation"] = positive.clone();
            evidence
                .entry(total.domain)
                .or_default()
                .push(urn(&id_value));
        }
        entries.push(entry(&id_value, obs));
    }
    for domain in &r.scored.positive {
        let id_value = format!("{}/condition/{}", r.id, domain.code());
        let refs: Vec<Value> = evidence
            .get(domain)
            .into_iter()
            .flatten()
            .map(|u| json!({ "reference": u }))
            .collect();
        let mut condition = json!({
            "resourceType": "Condition",
            "meta": meta(profiles::SDOHCC_CONDITION),
            "identifier": identifier(&id_value),
            "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active" }] },
            "verificationStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "unconfirmed" }] },
            "category": [
                { "coding": [{ "system": CONDITION_CATEGORY, "code": "health-concern", "display": "Health Concern" }] },
                { "coding": [{ "system": US_CORE_CATEGORY, "code": "sdoh", "display": "SDOH" }] },
                domain_category(*domain),
            ],
            "code": conditions.code(*domain),
            "subject": subject,
            "recordedDate": r.authored,
            "evidence": [{ "detail": refs }],
        });
        if let Some(e) = &encounter {
            condition["encounter"] = e.clone();
        }
        // Proposed by Passerelle's screening rules: the asserter is the
        // software (a Device); the clinician who ran the screening recorded it.
        condition["extension"] = json!([{ "url": ASSERTER_DEVICE, "valueReference": {
            "type": "Device", "display": "Passerelle screening rules"
        } }]);
        if let Some(a) = r.author {
            condition["recorder"] = json!({ "reference": a });
        }
        entries.push(entry(&id_value, condition));
    }
    // The form answered, created on the server the first time one of its
    // responses is recorded, so that `questionnaire` resolves there (last:
    // it is no part of the patient's record).
    if let Some(q) = super::questionnaire::publication(r.questionnaire) {
        let key = q["identifier"][0]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        entries.push(super::bundle::conditional_create(
            super::questionnaire::QUESTIONNAIRE_ID_SYSTEM,
            &key,
            q,
        ));
    }
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::screening::{Rules, score};
    use std::collections::BTreeMap;

    const RULES: &str = r#"{"rules": [
        {"question": "88122-7", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign"},
        {"question": "88123-5", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign"},
        {"question": "93030-5", "positive_answers": ["LA33-6"], "domain": "transportation-insecurity", "source": "AHC HRSN"}
      ],
      "totals": [{"total": "95614-4", "of": ["95618-5", "95617-7", "95616-9", "95615-1"], "positive_above": 10, "domain": "intimate-partner-violence", "source": "AHC HRSN"}]}"#;

    fn item(link: &str, q: &str, a: Option<(&str, &str)>) -> RecordedItem {
        RecordedItem {
            link_id: link.into(),
            text: format!("Question {q}"),
            question: Coding {
                system: "http://loinc.org".into(),
                code: q.into(),
                display: format!("Q {q}"),
            },
            answers: a
                .map(|(code, display)| {
                    vec![(
                        Answer::Code(code.into()),
                        Some(Coding {
                            system: "http://loinc.org".into(),
                            code: code.into(),
                            display: display.into(),
                        }),
                    )]
                })
                .unwrap_or_default(),
            absent: if a.is_none() {
                Some(Absent::DontKnow)
            } else {
                None
            },
            groups: Vec::new(),
        }
    }

    fn build(items: &[RecordedItem], ordinals: &BTreeMap<String, i64>) -> Value {
        let rules = Rules::parse(RULES).unwrap();
        let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
        let scored = score(&rules, &responses, ordinals);
        let record = ScreeningRecord {
            id: "scr-1",
            patient: "Patient/pas-p01",
            encounter: Some("Encounter/pas-enc-01"),
            author: Some("Practitioner/pas-prac-moreau"),
            questionnaire: "http://passerelle.example.org/fhir/Questionnaire/hunger-vital-sign|1.0.0",
            language: "fr",
            authored: "2026-11-22T10:00:00-05:00",
            items,
            scored: &scored,
        };
        transaction(&record, &ConditionTable::shipped())
    }

    fn of_type<'a>(b: &'a Value, t: &str) -> Vec<&'a Value> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == t)
            .collect()
    }

    #[test]
    fn a_positive_screen_records_qr_observations_and_an_unconfirmed_condition() {
        let b = build(
            &[
                item("q1", "88122-7", Some(("LA6729-3", "Sometimes true"))),
                item("q2", "88123-5", Some(("LA28398-8", "Never true"))),
                item("q3", "93030-5", None),
            ],
            &BTreeMap::new(),
        );
        assert_eq!(of_type(&b, "QuestionnaireResponse").len(), 1);
        let obs = of_type(&b, "Observation");
        assert_eq!(obs.len(), 3);
        assert_eq!(obs[0]["interpretation"][0]["coding"][0]["code"], "POS");
        assert!(
            obs[1].get("interpretation").is_none(),
            "never NEG: a negative answer has no interpretation"
        );
        assert_eq!(
            obs[2]["dataAbsentReason"]["coding"][0]["code"],
            "asked-unknown"
        );
        assert!(
            obs.iter()
                .all(|o| o["derivedFrom"][0]["reference"] == b["entry"][0]["fullUrl"])
        );
        let cats: Vec<&str> = obs[0]["category"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            cats,
            ["social-history", "survey", "sdoh", "food-insecurity"]
        );
        let conditions = of_type(&b, "Condition");
        assert_eq!(conditions.len(), 1);
        let c = conditions[0];
        assert_eq!(c["verificationStatus"]["coding"][0]["code"], "unconfirmed");
        assert_eq!(c["code"]["coding"][1]["code"], "Z59.41");
        assert_eq!(
            c["evidence"][0]["detail"][0]["reference"],
            b["entry"][1]["fullUrl"]
        );
        // Every entry is a conditional create on its own identifier.
        for e in b["entry"].as_array().unwrap() {
            let value = e["resource"]["identifier"]
                .as_array()
                .map(|a| &a[0])
                .unwrap_or(&e["resource"]["identifier"]);
            assert_eq!(
                e["request"]["ifNoneExist"],
                format!(
                    "identifier={}|{}",
                    value["system"].as_str().unwrap(),
                    value["value"].as_str().unwrap()
                )
            );
        }
        assert!(
            !b.to_string().contains("\"security\""),
            "no restriction without IPV"
        );
    }

    #[test]
    fn the_form_answered_is_published_once_and_the_response_names_it() {
        let b = build(
            &[item("q1", "88122-7", Some(("LA6729-3", "Sometimes true")))],
            &BTreeMap::new(),
        );
        let forms = of_type(&b, "Questionnaire");
        assert_eq!(forms.len(), 1);
        let q = forms[0];
        let qr = of_type(&b, "QuestionnaireResponse")[0];
        assert_eq!(
            qr["questionnaire"],
            format!(
                "{}|{}",
                q["url"].as_str().unwrap(),
                q["version"].as_str().unwrap()
            )
        );
        assert_eq!(q["meta"]["profile"][0], profiles::SDC_QUESTIONNAIRE);
        assert!(q.get("id").is_none(), "created, never overwritten");
        let entry = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"]["resourceType"] == "Questionnaire")
            .unwrap();
        assert_eq!(entry["request"]["method"], "POST");
        assert_eq!(
            entry["request"]["ifNoneExist"],
            "identifier=http://passerelle.example.org/fhir/sid/questionnaire|hunger-vital-sign-1.0.0"
        );
        // SDC sdc-2: a version comes with its algorithm.
        assert!(
            q["extension"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["valueCoding"]["code"] == "semver")
        );
        // A form that is not one of Passerelle's is not published.
        assert!(
            crate::questionnaire::publication("http://example.org/Questionnaire/other|1").is_none()
        );
    }

    #[test]
    fn a_multi_select_answer_is_a_panel_of_one_observation_per_answer() {
        let mut multi = item("q9", "96778-6", Some(("LA31996-4", "Problems with pests")));
        multi.answers.push((
            Answer::Code("LA28580-1".into()),
            Some(Coding {
                system: "http://loinc.org".into(),
                code: "LA28580-1".into(),
                display: "Mold".into(),
            }),
        ));
        multi.groups = vec![("housing".into(), "Housing".into())];
        let mut local = item("q0", "safety-agreed", Some(("yes", "Yes")));
        local.question.system =
            "http://passerelle.example.org/fhir/CodeSystem/screening-question".into();
        let b = build(&[multi, local], &BTreeMap::new());
        let obs = of_type(&b, "Observation");
        assert_eq!(
            obs.len(),
            3,
            "two answers and their panel; no Observation for a local code"
        );
        let panel = obs.iter().find(|o| o["hasMember"].is_array()).unwrap();
        assert!(panel.get("valueCodeableConcept").is_none());
        let members: Vec<&Value> = obs
            .iter()
            .filter(|o| o["hasMember"].is_null())
            .copied()
            .collect();
        assert_eq!(members.len(), 2);
        for m in &members {
            assert_eq!(
                m["valueCodeableConcept"]["coding"]
                    .as_array()
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(m["code"]["coding"][0]["code"], "96778-6");
            let url = b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| &&e["resource"] == m)
                .unwrap()["fullUrl"]
                .clone();
            assert!(
                panel["hasMember"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["reference"] == url)
            );
            assert_eq!(
                m["meta"]["profile"][0],
                profiles::SDOHCC_OBSERVATION_SCREENING_RESPONSE
            );
        }
        let qr = of_type(&b, "QuestionnaireResponse")[0];
        assert_eq!(
            qr["meta"]["profile"][0],
            profiles::US_CORE_QUESTIONNAIRE_RESPONSE
        );
        assert_eq!(
            qr["item"][0]["linkId"], "housing",
            "items sit in their Questionnaire group"
        );
        assert_eq!(qr["item"][0]["item"][0]["linkId"], "q9");
        assert_eq!(
            qr["item"][1]["linkId"], "q0",
            "a local item is kept in the response"
        );
    }

    #[test]
    fn a_proposed_concern_is_asserted_by_the_software_and_recorded_by_the_clinician() {
        let b = build(
            &[item("q1", "88122-7", Some(("LA6729-3", "Sometimes true")))],
            &BTreeMap::new(),
        );
        let c = of_type(&b, "Condition")[0];
        assert_eq!(c["meta"]["profile"][0], profiles::SDOHCC_CONDITION);
        assert!(
            c.get("asserter").is_none(),
            "SDOH-Con-1: one asserter, the device"
        );
        assert_eq!(c["extension"][0]["url"], ASSERTER_DEVICE);
        assert_eq!(c["extension"][0]["valueReference"]["type"], "Device");
        assert_eq!(c["recorder"]["reference"], "Practitioner/pas-prac-moreau");
        assert_eq!(c["category"][2]["coding"][0]["display"], "Food Insecurity");
    }

    #[test]
    fn every_condition_code_written_is_read_back_as_its_domain() {
        let written = ConditionTable::shipped();
        let read = crate::domain::evidence::ConditionCodes::shipped();
        let mut coded = 0;
        for d in Domain::ALL {
            let code = written.code(d);
            for c in code["coding"].as_array().into_iter().flatten() {
                let (system, value) = (c["system"].as_str().unwrap(), c["code"].as_str().unwrap());
                let back = read.domain(system, value);
                // Z59.87 reads as financial insecurity (the reading table's
                // stated choice); a Condition Passerelle wrote also carries
                // its own domain category, which wins.
                if d == Domain::MedicalCostBurden {
                    assert_eq!(back, Some(Domain::FinancialInsecurity), "{value}");
                } else {
                    assert_eq!(back, Some(d), "{system}|{value}");
                }
                coded += 1;
            }
        }
        assert!(coded >= 13, "{coded} codings");
        assert_eq!(
            written.code(Domain::SocialConnection)["coding"][0]["code"],
            "422650009"
        );
    }

    #[test]
    fn the_same_screening_builds_the_same_bundle_so_resending_is_idempotent() {
        let items = [item("q1", "88122-7", Some(("LA28397-0", "Often true")))];
        assert_eq!(
            build(&items, &BTreeMap::new()),
            build(&items, &BTreeMap::new())
        );
    }

    #[test]
    fn a_positive_safety_total_restricts_every_resource() {
        let ordinals: BTreeMap<String, i64> = [("LA16644-9".to_string(), 4)].into_iter().collect();
        let items: Vec<RecordedItem> = ["95618-5", "95617-7", "95616-9", "95615-1"]
            .iter()
            .enumerate()
            .map(|(n, q)| item(&format!("s{n}"), q, Some(("LA16644-9", "Fairly often"))))
            .collect();
        let b = build(&items, &ordinals);
        let total = of_type(&b, "Observation")
            .into_iter()
            .find(|o| o["code"]["coding"][0]["code"] == "95614-4")
            .unwrap();
        assert_eq!(total["valueQuantity"]["value"], 16);
        assert_eq!(total["valueQuantity"]["code"], "{score}");
        assert_eq!(total["interpretation"][0]["coding"][0]["code"], "POS");
        let c = &of_type(&b, "Condition")[0];
        assert_eq!(
            c["category"][2]["coding"][0]["code"],
            "intimate-partner-violence"
        );
        assert!(
            c["code"].get("coding").is_none(),
            "no unconfirmed code is invented"
        );
        let records = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["resourceType"] != "Questionnaire");
        for e in records {
            assert_eq!(
                e["resource"]["meta"]["security"][0]["code"], "R",
                "{}",
                e["resource"]["resourceType"]
            );
        }
    }

    #[test]
    fn the_bundle_conforms_to_the_r4_schema() {
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        let b = build(
            &[
                item("q1", "88122-7", Some(("LA6729-3", "Sometimes true"))),
                item("q3", "93030-5", None),
            ],
            &BTreeMap::new(),
        );
        v.validate_bundle(&b).unwrap();
    }

    #[test]
    fn confirming_makes_a_problem_list_item_and_refuting_keeps_a_concern() {
        let b = build(
            &[item("q1", "88122-7", Some(("LA6729-3", "Sometimes true")))],
            &BTreeMap::new(),
        );
        let c = of_type(&b, "Condition")[0].clone();
        let confirmed = decide(c.clone(), Verdict::Confirm);
        assert_eq!(
            confirmed["verificationStatus"]["coding"][0]["code"],
            "confirmed"
        );
        let cats: Vec<&str> = confirmed["category"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(cats, ["problem-list-item", "sdoh", "food-insecurity"]);
        let refuted = decide(c, Verdict::Refute);
        assert_eq!(
            refuted["verificationStatus"]["coding"][0]["code"],
            "refuted"
        );
        assert_eq!(
            refuted["category"][0]["coding"][0]["code"],
            "health-concern"
        );
    }

    #[test]
    fn the_shipped_condition_table_covers_every_domain() {
        let t = ConditionTable::shipped();
        assert_eq!(t.code(Domain::Homelessness)["coding"][1]["code"], "Z59.00");
        assert!(
            ConditionTable::parse(r#"{"icd10cm_system":"a","snomed_system":"b","domains":{}}"#)
                .is_err()
        );
    }
}
