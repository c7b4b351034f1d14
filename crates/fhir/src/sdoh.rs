//! SDOH evidence as any system records it, read from FHIR JSON into the
//! plain inputs of [`crate::domain::evidence`]: the one reader behind the
//! visit page, the re-screening interval, the referral's safety rule and
//! the patterns.
//!
//! Shapes understood (the README lists them with their sources):
//!
//! * Observations in US Core Observation Screening Assessment or SDOHCC
//!   Observation Screening Response shape, or neither: found by the
//!   screening table's LOINC question codes whatever their category, and by
//!   the `sdoh` category; a panel's `hasMember` Observations are its
//!   members; `valueCodeableConcept`, `valueInteger`, `valueQuantity`,
//!   `valueBoolean`, `valueString`; `dataAbsentReason`; `interpretation`
//!   POS; the SDOHCC domain categories.
//! * QuestionnaireResponses from any Questionnaire: items matched by a
//!   linkId in the LOINC styles (`71802-3`, `/71802-3`,
//!   `/93042-0/71802-3`) or a `definition` ending in the code; nested
//!   items and items under answers.
//! * Conditions of category `sdoh` or `health-concern`: domains from their
//!   SDOHCC category, else their ICD-10-CM or SNOMED CT code
//!   (`profiles/sdoh-condition-codes.json`).
//!
//! Nothing here logs a value: a resource that cannot be read is skipped.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::client::{FhirClient, SearchPage};
use super::error::FhirError;
use super::views::json_date;
use crate::domain::evidence::{ConditionCodes, Evidence, Screen, Standing};
use crate::domain::screening::{Absent, Answer, Rules};
use crate::domain::sdoh::{Domain, SDOHCC_TEMPORARY_CODES, US_CORE_CATEGORY};
use crate::domain::visit::{Concern, PASSERELLE_CANONICAL};

const DATA_ABSENT: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";

/// Panels whose members the table scores: found too, so that members take
/// their date and source. LOINC 96777-8 AHC HRSN core, 97023-6 AHC HRSN
/// supplemental, 88121-9 Hunger Vital Sign, 93025-5 PRAPARE.
const PANELS: [&str; 4] = ["96777-8", "97023-6", "88121-9", "93025-5"];

/// How many records of each kind are read (the first page).
const PAGE: &str = "200";

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn codings(concept: &Value) -> impl Iterator<Item = &Value> {
    array(concept, "coding")
}

/// SDOHCC domain categories among `categories`.
fn category_domains(v: &Value) -> Vec<Domain> {
    let mut out: Vec<Domain> = array(v, "category")
        .flat_map(codings)
        .filter(|c| str_of(c, "system") == Some(SDOHCC_TEMPORARY_CODES))
        .filter_map(|c| str_of(c, "code").and_then(Domain::from_code))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Was this written by Passerelle (an identifier in its own namespace)?
fn written_by_passerelle(v: &Value) -> bool {
    let ids: Vec<&Value> = match v.get("identifier") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => vec![],
    };
    ids.iter()
        .filter_map(|i| str_of(i, "system"))
        .any(|s| s.starts_with(PASSERELLE_CANONICAL))
}

/// Who recorded it, in words: Passerelle; else the first of `who` with a
/// display (a reference to the patient reads "the patient", never their
/// name); else `meta.source`.
fn source(v: &Value, who: &[&str]) -> Option<String> {
    if written_by_passerelle(v) {
        return Some("Passerelle".into());
    }
    let refs = who.iter().flat_map(|k| match v.get(*k) {
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => vec![],
    });
    for r in refs {
        if str_of(r, "reference").is_some_and(|x| x.starts_with("Patient/")) {
            return Some("the patient".into());
        }
        if let Some(d) = str_of(r, "display") {
            return Some(d.to_string());
        }
    }
    v.get("meta")
        .and_then(|m| str_of(m, "source"))
        .map(str::to_string)
}

/// A FHIR `valueQuantity` as a whole number, when it is one.
fn quantity(q: &Value) -> Option<Answer> {
    let n = q.get("value")?.as_f64()?;
    Some(if n.fract() == 0.0 && n.abs() < 1e15 {
        Answer::Integer(n as i64)
    } else {
        Answer::Decimal(n)
    })
}

/// The answers of a `value[x]` (an Observation's, or a QuestionnaireResponse
/// answer's), by the prefix `value`.
fn values(v: &Value) -> Vec<Answer> {
    let mut out = Vec::new();
    if let Some(cc) = v.get("valueCodeableConcept") {
        out.extend(
            codings(cc)
                .filter_map(|c| str_of(c, "code"))
                .map(|c| Answer::Code(c.into())),
        );
    }
    if let Some(c) = v.get("valueCoding").and_then(|c| str_of(c, "code")) {
        out.push(Answer::Code(c.into()));
    }
    if let Some(n) = v.get("valueInteger").and_then(Value::as_i64) {
        out.push(Answer::Integer(n));
    }
    if let Some(q) = v.get("valueQuantity").and_then(quantity) {
        out.push(q);
    }
    if let Some(n) = v.get("valueDecimal").and_then(Value::as_f64) {
        out.push(Answer::Decimal(n));
    }
    if let Some(b) = v.get("valueBoolean").and_then(Value::as_bool) {
        out.push(Answer::Boolean(b));
    }
    if let Some(s) = str_of(v, "valueString") {
        out.push(Answer::Text(s.into()));
    }
    out
}

/// `dataAbsentReason` (data-absent-reason): asked-declined is declined,
/// asked-unknown and unknown are "don't know", anything else not asked.
fn absent(v: &Value) -> Option<Absent> {
    let dar = v.get("dataAbsentReason")?;
    let code = codings(dar)
        .find(|c| str_of(c, "system").is_none_or(|s| s == DATA_ABSENT))
        .and_then(|c| str_of(c, "code"));
    Some(match code {
        Some("asked-declined") => Absent::Declined,
        Some("asked-unknown" | "unknown") => Absent::DontKnow,
        _ => Absent::Skipped,
    })
}

fn observation_date(o: &Value) -> Option<time::Date> {
    o.get("effectiveDateTime")
        .or_else(|| o.get("effectivePeriod").and_then(|p| p.get("start")))
        .or_else(|| o.get("effectiveInstant"))
        .or_else(|| o.get("issued"))
        .and_then(json_date)
}

/// `Observation/abc` from a reference in any of its forms (relative,
/// absolute, with `_history`).
fn observation_key(reference: &str) -> Option<String> {
    let parts: Vec<&str> = reference.split('/').collect();
    let i = parts.iter().rposition(|p| *p == "Observation")?;
    Some(format!("Observation/{}", parts.get(i + 1)?))
}

fn observation(o: &Value, by_key: &HashMap<String, &Value>, depth: usize) -> Screen {
    let members = if depth < 4 {
        array(o, "hasMember")
            .filter_map(|m| str_of(m, "reference").and_then(observation_key))
            .filter_map(|k| by_key.get(&k))
            .map(|m| observation(m, by_key, depth + 1))
            .collect()
    } else {
        vec![]
    };
    Screen {
        reference: str_of(o, "id").map(|id| format!("Observation/{id}")),
        standing: Standing::of_observation(str_of(o, "status").unwrap_or("")),
        date: observation_date(o),
        source: source(o, &["performer"]),
        questions: o
            .get("code")
            .map(|c| {
                codings(c)
                    .filter_map(|c| str_of(c, "code"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        answers: values(o),
        absent: absent(o),
        domains: category_domains(o),
        flagged_positive: array(o, "interpretation")
            .flat_map(codings)
            .any(|c| str_of(c, "code") == Some("POS")),
        members,
    }
}

/// Observations as screening records: a panel with its members, and every
/// Observation no panel of the set lists as a member.
pub fn observations<'a>(list: impl IntoIterator<Item = &'a Value>) -> Vec<Screen> {
    let mut by_key: HashMap<String, &Value> = HashMap::new();
    for o in list {
        if let Some(id) = str_of(o, "id") {
            by_key.entry(format!("Observation/{id}")).or_insert(o);
        }
    }
    let members: BTreeSet<String> = by_key
        .values()
        .flat_map(|o| array(o, "hasMember"))
        .filter_map(|m| str_of(m, "reference").and_then(observation_key))
        .collect();
    let mut keys: Vec<&String> = by_key.keys().filter(|k| !members.contains(*k)).collect();
    keys.sort();
    keys.into_iter()
        .map(|k| observation(by_key[k], &by_key, 0))
        .collect()
}

/// The question codes an item may carry: its linkId, the last segment of a
/// path-style linkId, and the end of its `definition`.
fn item_questions(item: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(link) = str_of(item, "linkId") {
        let last = link.rsplit('/').next().unwrap_or(link);
        out.push(last.to_string());
        if last != link {
            out.push(link.to_string());
        }
    }
    if let Some(def) = str_of(item, "definition") {
        let tail = def.rsplit(['#', '/']).next().unwrap_or(def);
        out.push(tail.to_string());
    }
    out
}

fn response_item(item: &Value, depth: usize) -> Screen {
    let answers: Vec<&Value> = array(item, "answer").collect();
    let mut members: Vec<Screen> = Vec::new();
    if depth < 8 {
        members.extend(array(item, "item").map(|i| response_item(i, depth + 1)));
        members.extend(
            answers
                .iter()
                .flat_map(|a| array(a, "item"))
                .map(|i| response_item(i, depth + 1)),
        );
    }
    Screen {
        questions: item_questions(item),
        answers: answers.iter().flat_map(|a| values(a)).collect(),
        members,
        ..Screen::default()
    }
}

/// A QuestionnaireResponse as one screening record, its items as members.
pub fn questionnaire_response(qr: &Value) -> Screen {
    Screen {
        reference: str_of(qr, "id").map(|id| format!("QuestionnaireResponse/{id}")),
        standing: Standing::of_questionnaire_response(str_of(qr, "status").unwrap_or("")),
        date: qr.get("authored").and_then(json_date),
        source: source(qr, &["author", "source"]),
        members: array(qr, "item").map(|i| response_item(i, 0)).collect(),
        ..Screen::default()
    }
}

/// An SDOH health concern: its domains from its SDOHCC categories, else
/// from its code through the table. `None` when it is not about SDOH (no
/// domain and no `sdoh` category) or was entered in error.
pub fn concern(c: &Value, codes: &ConditionCodes) -> Option<Concern> {
    let status = |key: &str| {
        c.get(key)
            .and_then(|s| codings(s).find_map(|cd| str_of(cd, "code")))
            .map(str::to_string)
    };
    let verification = status("verificationStatus");
    if verification.as_deref() == Some("entered-in-error") {
        return None;
    }
    let mut domains = category_domains(c);
    let code = c.get("code");
    if domains.is_empty() {
        domains = code
            .into_iter()
            .flat_map(codings)
            .filter_map(|cd| codes.domain(str_of(cd, "system")?, str_of(cd, "code")?))
            .collect();
        domains.sort();
        domains.dedup();
    }
    let sdoh = array(c, "category").flat_map(codings).any(|cd| {
        str_of(cd, "code") == Some("sdoh")
            && str_of(cd, "system").is_none_or(|s| s == US_CORE_CATEGORY)
    });
    if domains.is_empty() && !sdoh {
        return None;
    }
    let text = code.and_then(|cc| {
        str_of(cc, "text").map(str::to_string).or_else(|| {
            codings(cc).find_map(|cd| {
                str_of(cd, "display")
                    .or_else(|| str_of(cd, "code"))
                    .map(str::to_string)
            })
        })
    });
    Some(Concern {
        id: str_of(c, "id").unwrap_or_default().to_string(),
        version: c
            .get("meta")
            .and_then(|m| str_of(m, "versionId"))
            .map(str::to_string),
        domains,
        text: text.unwrap_or_else(|| "(no description)".into()),
        verification,
        clinical_status: status("clinicalStatus"),
        recorded: c.get("recordedDate").and_then(json_date),
        onset: c
            .get("onsetDateTime")
            .or_else(|| c.get("onsetPeriod").and_then(|p| p.get("start")))
            .and_then(json_date),
        source: source(c, &["recorder", "asserter"]),
    })
}

/// The searches that find a patient's evidence: Observations by category
/// `sdoh` and by the table's codes (any category), QuestionnaireResponses,
/// Conditions of category `sdoh` or `health-concern`.
pub fn searches(rules: &Rules, subject: &str) -> [(&'static str, Vec<(&'static str, String)>); 4] {
    evidence_searches(
        rules,
        vec![("subject", subject.to_string()), ("_count", PAGE.into())],
        true,
    )
}

/// The same searches for many patients at once (`patient=` with their
/// ids, comma-separated), unsorted and without a page size: the patterns
/// view pages through them itself and counts every result, in any order.
pub fn population_searches(
    rules: &Rules,
    ids: &str,
) -> [(&'static str, Vec<(&'static str, String)>); 4] {
    evidence_searches(rules, vec![("patient", ids.to_string())], false)
}

fn evidence_searches(
    rules: &Rules,
    who: Vec<(&'static str, String)>,
    sorted: bool,
) -> [(&'static str, Vec<(&'static str, String)>); 4] {
    let mut codes = rules.question_codes();
    codes.extend(PANELS.iter().map(|p| p.to_string()));
    let with = |extra: Vec<(&'static str, String)>, sort: bool| {
        let mut p = who.clone();
        p.extend(extra);
        if sort && sorted {
            p.push(("_sort", "-date".into()));
        }
        p
    };
    [
        ("Observation", with(vec![("category", "sdoh".into())], true)),
        ("Observation", with(vec![("code", codes.join(","))], true)),
        ("QuestionnaireResponse", with(vec![], false)),
        (
            "Condition",
            with(vec![("category", "sdoh,health-concern".into())], false),
        ),
    ]
}

/// What [`population_searches`] would find (less the `patient=`
/// restriction), as a test of one resource: what a Bulk Data export, which
/// holds every record, is filtered by so that both read paths count the
/// same records. A token search without a system matches the code in any
/// system (FHIR R4 search.html#token).
pub struct PopulationFilter {
    codes: std::collections::HashSet<String>,
}

impl PopulationFilter {
    pub fn new(rules: &Rules) -> Self {
        let mut codes: std::collections::HashSet<String> =
            rules.question_codes().into_iter().collect();
        codes.extend(PANELS.iter().map(|p| p.to_string()));
        PopulationFilter { codes }
    }

    pub fn matches(&self, resource: &Value) -> bool {
        fn codes(concepts: &Value) -> impl Iterator<Item = &str> {
            let list: Vec<&Value> = match concepts.as_array() {
                Some(list) => list.iter().collect(),
                None => vec![concepts],
            };
            list.into_iter()
                .flat_map(|c| c["coding"].as_array().into_iter().flatten())
                .filter_map(|k| k["code"].as_str())
        }
        match resource["resourceType"].as_str() {
            Some("Observation") => {
                codes(&resource["category"]).any(|c| c == "sdoh")
                    || codes(&resource["code"]).any(|c| self.codes.contains(c))
            }
            Some("QuestionnaireResponse") => true,
            Some("Condition") => {
                codes(&resource["category"]).any(|c| c == "sdoh" || c == "health-concern")
            }
            _ => false,
        }
    }
}

/// The patient a record is about (`subject` `Patient/<id>`).
fn patient_of(v: &Value) -> Option<&str> {
    v.get("subject")
        .and_then(|s| str_of(s, "reference"))
        .and_then(|r| r.strip_prefix("Patient/"))
}

/// The evidence of many patients, from the records of
/// [`population_searches`] (Observations of both searches together, a
/// record seen twice read once), by patient id.
pub fn evidence_by_patient(
    observations_found: &[Value],
    responses: &[Value],
    conditions: &[Value],
) -> HashMap<String, Evidence> {
    let mut obs: HashMap<&str, Vec<&Value>> = HashMap::new();
    for o in observations_found {
        if let Some(p) = patient_of(o) {
            obs.entry(p).or_default().push(o);
        }
    }
    let mut out: HashMap<String, Evidence> = HashMap::new();
    for (p, list) in obs {
        out.entry(p.to_string()).or_default().screens = observations(list);
    }
    for qr in responses {
        if let Some(p) = patient_of(qr) {
            let e = out.entry(p.to_string()).or_default();
            e.screens.push(questionnaire_response(qr));
        }
    }
    let codes = ConditionCodes::shipped();
    for c in conditions {
        if let (Some(p), Some(concern)) = (patient_of(c), concern(c, codes)) {
            out.entry(p.to_string()).or_default().concerns.push(concern);
        }
    }
    out
}

/// The evidence in the pages of [`searches`] (in that order).
pub fn evidence(
    observations_by_category: &SearchPage,
    observations_by_code: &SearchPage,
    responses: &SearchPage,
    conditions: &SearchPage,
) -> Evidence {
    let obs = observations_by_category
        .raw("Observation")
        .chain(observations_by_code.raw("Observation"));
    let mut screens = observations(obs);
    screens.extend(
        responses
            .raw("QuestionnaireResponse")
            .map(questionnaire_response),
    );
    let codes = ConditionCodes::shipped();
    Evidence {
        screens,
        concerns: conditions
            .raw("Condition")
            .filter_map(|c| concern(c, codes))
            .collect(),
    }
}

/// Read a patient's SDOH evidence: the four searches, at once. Any failure
/// fails the whole: a safety rule never decides on part of the record.
pub async fn read(
    client: &FhirClient,
    rules: &Rules,
    patient_id: &str,
) -> Result<Evidence, FhirError> {
    let subject = format!("Patient/{patient_id}");
    let [a, b, c, d] = searches(rules, &subject);
    let (a, b, c, d) = tokio::join!(
        client.search(a.0, &a.1),
        client.search(b.0, &b.1),
        client.search(c.0, &c.1),
        client.search(d.0, &d.1),
    );
    Ok(evidence(&a?, &b?, &c?, &d?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::evidence::read as read_evidence;
    use crate::domain::visit::{DomainScreening, Finding};
    use serde_json::json;
    use time::macros::date;

    fn page(resources: Vec<Value>) -> SearchPage {
        SearchPage {
            entries: resources.into_iter().map(|r| (None, r)).collect(),
            ..Default::default()
        }
    }

    fn read_all(obs: Vec<Value>, qrs: Vec<Value>, conds: Vec<Value>) -> Vec<DomainScreening> {
        let e = evidence(&page(obs), &page(vec![]), &page(qrs), &page(conds));
        read_evidence(&Rules::shipped(), &e)
    }

    fn of(list: &[DomainScreening], d: Domain) -> Option<&DomainScreening> {
        list.iter().find(|s| s.domain == d)
    }

    fn loinc(code: &str) -> Value {
        json!({ "coding": [{ "system": "http://loinc.org", "code": code }] })
    }

    /// A US Core Observation Screening Assessment item, as in the US Core
    /// examples Observation-AHC-HRSN-item-example-*: categories survey and
    /// sdoh, no interpretation, performer the patient.
    fn us_core_item(id: &str, question: &str, value: Value) -> Value {
        let mut o = json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "category": [
                { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey" }] },
                { "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "code": "sdoh" }] }
            ],
            "code": loinc(question),
            "subject": { "reference": "Patient/example" },
            "effectiveDateTime": "2026-03-29",
            "performer": [{ "reference": "Patient/example" }]
        });
        for (k, v) in value.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    }

    /// The US Core AHC HRSN panel (Observation-AHC-HRSN-panel-example-96777-8):
    /// hasMember items, no interpretation anywhere.
    fn us_core_panel(members: &[&str]) -> Value {
        json!({
            "resourceType": "Observation", "id": "AHC-HRSN-panel", "status": "final",
            "meta": { "source": "https://portal.example.org" },
            "category": [{ "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "code": "sdoh" }] }],
            "code": loinc("96777-8"),
            "effectiveDateTime": "2026-03-29",
            "hasMember": members.iter().map(|m| json!({ "reference": format!("Observation/{m}") })).collect::<Vec<_>>(),
            "subject": { "reference": "Patient/example" }
        })
    }

    fn coded(code: &str) -> Value {
        json!({ "valueCodeableConcept": loinc(code) })
    }

    #[test]
    fn every_evidence_search_is_declared_for_check() {
        let rules = Rules::shipped();
        let declared = |t: &str, params: Vec<&str>| {
            crate::searches::ALL.iter().any(|s| {
                s.resource_type == t
                    && params.iter().all(|p| s.params.contains(p))
                    && s.params.len() == params.len()
            })
        };
        let all = searches(&rules, "Patient/p")
            .into_iter()
            .chain(population_searches(&rules, "a,b"));
        for (t, params) in all {
            let names: Vec<&str> = params
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| !matches!(*k, "_count" | "_sort"))
                .collect();
            assert!(
                declared(t, names.clone()),
                "{t} {names:?} is not in searches::ALL"
            );
        }
    }

    #[test]
    fn a_population_s_evidence_is_grouped_by_patient_and_read_once() {
        let item = |id: &str, patient: &str| {
            json!({
                "resourceType": "Observation", "id": id, "status": "final",
                "code": loinc("88122-7"),
                "subject": { "reference": format!("Patient/{patient}") },
                "effectiveDateTime": "2026-03-29",
                "valueCodeableConcept": loinc("LA28397-0")
            })
        };
        // The same Observation found by both searches is one record.
        let found = vec![item("a1", "a"), item("a1", "a"), item("b1", "b")];
        let z59 = json!({
            "resourceType": "Condition", "id": "c1",
            "category": [{ "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "code": "health-concern" }] }],
            "code": { "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.41" }] },
            "subject": { "reference": "Patient/b" }
        });
        let by = evidence_by_patient(&found, &[], &[z59]);
        assert_eq!(by.len(), 2);
        assert_eq!(by["a"].screens.len(), 1);
        assert_eq!(by["b"].screens.len(), 1);
        assert_eq!(by["b"].concerns.len(), 1, "a bare Z59.41 concern");
        let results = crate::domain::evidence::results(&Rules::shipped(), &by["a"]);
        assert_eq!(results.len(), 1);
        assert!(results[0].positive());
        assert_eq!(results[0].domain, Domain::FoodInsecurity);
    }

    #[test]
    fn a_us_core_panel_with_members_and_no_interpretation() {
        let list = read_all(
            vec![
                us_core_panel(&["i1", "i2", "i3"]),
                us_core_item("i1", "71802-3", coded("LA31994-9")),
                us_core_item("i2", "88122-7", coded("LA28398-8")),
                us_core_item("i3", "88123-5", coded("LA28398-8")),
            ],
            vec![],
            vec![],
        );
        let housing = of(&list, Domain::HousingInstability).unwrap();
        assert!(housing.positive());
        assert_eq!(housing.date, Some(date!(2026 - 03 - 29)));
        assert_eq!(housing.source.as_deref(), Some("the patient"));
        assert_eq!(housing.evidence.as_deref(), Some("Observation/i1"));
        assert_eq!(
            of(&list, Domain::FoodInsecurity).unwrap().finding,
            Finding::Negative,
            "never true to both Hunger Vital Sign items"
        );
    }

    #[test]
    fn an_external_hits_total_of_12_as_quantity_or_integer_is_positive() {
        // US Core Observation-AHC-HRSN-item-example-95614-4 records the
        // total as valueQuantity.
        for value in [
            json!({ "valueQuantity": { "value": 12 } }),
            json!({ "valueInteger": 12 }),
        ] {
            let mut total = us_core_item("hits", "95614-4", value);
            total["performer"] = json!([{ "display": "Safe Harbor CBO" }]);
            let list = read_all(vec![total], vec![], vec![]);
            let ipv = of(&list, Domain::IntimatePartnerViolence).unwrap();
            assert!(ipv.positive());
            assert_eq!(ipv.source.as_deref(), Some("Safe Harbor CBO"));
            assert_eq!(ipv.evidence.as_deref(), Some("Observation/hits"));
        }
    }

    /// The SDOHCC example SDOHCC-QuestionnaireResponseHungerVitalSignExample
    /// (LHC-Forms, `/`-prefixed linkIds), and a PRAPARE one with nested
    /// groups (SDOHCC-QuestionnaireResponsePRAPAREExample).
    fn sdohcc_hvs_response(answer: &str) -> Value {
        json!({
            "resourceType": "QuestionnaireResponse", "id": "hvs",
            "questionnaire": "http://hl7.org/fhir/us/sdoh-clinicalcare/Questionnaire/SDOHCC-QuestionnaireHungerVitalSign",
            "status": "completed",
            "subject": { "reference": "Patient/pat-53234" },
            "authored": "2026-02-10T21:56:54.671Z",
            "author": { "display": "Community Health Plan portal" },
            "item": [
                { "linkId": "/88122-7", "answer": [{ "valueCoding": { "system": "http://loinc.org", "code": answer } }] },
                { "linkId": "/88123-5", "answer": [{ "valueCoding": { "system": "http://loinc.org", "code": "LA28398-8" } }] }
            ]
        })
    }

    #[test]
    fn an_sdohcc_questionnaire_response_with_slash_link_ids() {
        let list = read_all(vec![], vec![sdohcc_hvs_response("LA28397-0")], vec![]);
        let food = of(&list, Domain::FoodInsecurity).unwrap();
        assert!(food.positive());
        assert_eq!(food.date, Some(date!(2026 - 02 - 10)));
        assert_eq!(food.source.as_deref(), Some("Community Health Plan portal"));
        assert_eq!(food.evidence.as_deref(), Some("QuestionnaireResponse/hvs"));
        let prapare = json!({
            "resourceType": "QuestionnaireResponse", "id": "prapare", "status": "completed",
            "authored": "2026-02-11",
            "item": [{ "linkId": "/93025-5", "item": [
                { "linkId": "/93042-0", "item": [
                    { "linkId": "/93042-0/71802-3", "answer": [{ "valueCoding": { "code": "LA30190-5" } }] }
                ] },
                { "linkId": "/93039-6", "item": [
                    { "linkId": "/93039-6/76501-6", "answer": [{ "valueCoding": { "code": "LA33-6" } }] }
                ] }
            ] }]
        });
        let list = read_all(vec![], vec![prapare], vec![]);
        assert!(of(&list, Domain::Homelessness).unwrap().positive());
        assert!(
            of(&list, Domain::IntimatePartnerViolence)
                .unwrap()
                .positive()
        );
        let mut wrong = sdohcc_hvs_response("LA28397-0");
        wrong["status"] = json!("entered-in-error");
        assert!(read_all(vec![], vec![wrong], vec![]).is_empty());
        let mut partial = sdohcc_hvs_response("LA28397-0");
        partial["status"] = json!("in-progress");
        assert!(
            of(
                &read_all(vec![], vec![partial], vec![]),
                Domain::FoodInsecurity
            )
            .unwrap()
            .preliminary
        );
    }

    #[test]
    fn hits_items_in_a_questionnaire_response_are_summed() {
        let item =
            |q: &str, a: &str| json!({ "linkId": q, "answer": [{ "valueCoding": { "code": a } }] });
        let qr = json!({
            "resourceType": "QuestionnaireResponse", "id": "hits", "status": "completed",
            "authored": "2026-02-11",
            "item": [
                item("95618-5", "LA16644-9"), item("95617-7", "LA10082-8"),
                item("95616-9", "LA10066-1"), item("95615-1", "LA10066-1")
            ]
        });
        let list = read_all(vec![], vec![qr], vec![]);
        assert!(
            of(&list, Domain::IntimatePartnerViolence)
                .unwrap()
                .positive(),
            "4+3+2+2"
        );
    }

    fn bare_condition(code: &str, system: &str, category: &str) -> Value {
        json!({
            "resourceType": "Condition", "id": "z",
            "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active" }] },
            "category": [{ "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category", "code": category }] }],
            "code": { "coding": [{ "system": system, "code": code }] },
            "subject": { "reference": "Patient/example" },
            "recordedDate": "2026-01-15T09:00:00-05:00",
            "recorder": { "display": "Dr. Lee (Epic)" }
        })
    }

    #[test]
    fn a_bare_z59_41_condition_is_food_insecurity() {
        let icd = "http://hl7.org/fhir/sid/icd-10-cm";
        let list = read_all(
            vec![],
            vec![],
            vec![bare_condition("Z59.41", icd, "health-concern")],
        );
        let food = of(&list, Domain::FoodInsecurity).unwrap();
        assert!(food.positive());
        assert_eq!(food.date, Some(date!(2026 - 01 - 15)));
        assert_eq!(food.source.as_deref(), Some("Dr. Lee (Epic)"));
        assert_eq!(food.evidence.as_deref(), Some("Condition/z"));
        let c = concern(
            &bare_condition("Z59.41", icd, "health-concern"),
            ConditionCodes::shipped(),
        )
        .unwrap();
        assert_eq!(c.domains, vec![Domain::FoodInsecurity]);
        // A health concern that is not SDOH is not read.
        assert!(
            concern(
                &bare_condition("E11.9", icd, "health-concern"),
                ConditionCodes::shipped()
            )
            .is_none()
        );
        let mut wrong = bare_condition("Z59.41", icd, "health-concern");
        wrong["verificationStatus"] = json!({ "coding": [{ "code": "entered-in-error" }] });
        assert!(read_all(vec![], vec![], vec![wrong]).is_empty());
    }

    #[test]
    fn declined_and_entered_in_error_observations_are_no_result() {
        let mut declined = us_core_item("d", "93030-5", json!({}));
        declined["dataAbsentReason"] =
            json!({ "coding": [{ "system": DATA_ABSENT, "code": "asked-declined" }] });
        let mut wrong = us_core_item("w", "95614-4", json!({ "valueInteger": 14 }));
        wrong["status"] = json!("entered-in-error");
        let list = read_all(vec![declined, wrong], vec![], vec![]);
        assert_eq!(
            of(&list, Domain::TransportationInsecurity).unwrap().finding,
            Finding::Declined
        );
        assert!(of(&list, Domain::IntimatePartnerViolence).is_none());
    }

    #[test]
    fn every_code_passerelle_writes_maps_back_to_its_domain() {
        let table: Value = serde_json::from_str(crate::screening::SHIPPED_CONDITIONS).unwrap();
        let codes = ConditionCodes::shipped();
        for (domain, entry) in table["domains"].as_object().unwrap() {
            for (key, system) in [
                ("icd10cm", "http://hl7.org/fhir/sid/icd-10-cm"),
                ("snomed", "http://snomed.info/sct"),
            ] {
                if let Some(code) = entry[key][0].as_str() {
                    let got = codes.domain(system, code).map(Domain::code);
                    // Z59.87 is material hardship: Passerelle's own Conditions
                    // carry their domain category, which wins.
                    if code != "Z59.87" {
                        assert_eq!(got, Some(domain.as_str()), "{code}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_code_search_lists_the_scored_questions_and_panels() {
        let [_, by_code, qr, cond] = searches(&Rules::shipped(), "Patient/p");
        let codes = &by_code.1.iter().find(|(k, _)| *k == "code").unwrap().1;
        for c in ["95614-4", "71802-3", "88122-7", "96777-8", "95618-5"] {
            assert!(codes.split(',').any(|x| x == c), "{c}");
        }
        assert_eq!(qr.0, "QuestionnaireResponse");
        assert!(
            cond.1
                .contains(&("category", "sdoh,health-concern".to_string()))
        );
    }
}
