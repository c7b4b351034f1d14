//! The screening instruments as forms: FHIR R4 Questionnaires shipped in
//! `profiles/questionnaires/` (data, not code), read into a small model the
//! pages render in the patient's language.
//!
//! Languages use the FHIR translation extension on `_text`, `_title` and
//! answer `_display`; a text without a translation shows in English.
//! `enableWhen` is evaluated on the server too, so an answer to an item that
//! is not enabled is never recorded.

use std::collections::{BTreeMap, HashMap, HashSet};

use include_dir::{Dir, include_dir};
use serde_json::Value;

use super::screening::{Coding, RecordedItem};
use crate::domain::screening::{Absent, Answer};

static SHIPPED: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../profiles/questionnaires");

const TRANSLATION: &str = "http://hl7.org/fhir/StructureDefinition/translation";
const ORDINAL: &str = "http://hl7.org/fhir/StructureDefinition/ordinalValue";

/// Languages the forms are written in.
pub const LANGUAGES: [(&str, &str); 3] = [("en", "English"), ("fr", "Français"), ("es", "Español")];

/// A text and its translations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Localized {
    pub en: String,
    pub other: HashMap<String, String>,
}

impl Localized {
    fn read(node: &Value, field: &str) -> Localized {
        let en = node
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let other = node
            .get(format!("_{field}"))
            .and_then(|e| e.get("extension"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e["url"] == TRANSLATION)
            .filter_map(|e| {
                let parts = e["extension"].as_array()?;
                let lang = parts.iter().find(|p| p["url"] == "lang")?["valueCode"].as_str()?;
                let content =
                    parts.iter().find(|p| p["url"] == "content")?["valueString"].as_str()?;
                Some((lang.to_string(), content.to_string()))
            })
            .collect();
        Localized { en, other }
    }

    /// The text in `lang` (its primary subtag), else English.
    pub fn get(&self, lang: &str) -> &str {
        let primary = lang.split(['-', '_']).next().unwrap_or("en");
        self.other
            .get(primary)
            .map(String::as_str)
            .unwrap_or(&self.en)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Group,
    Display,
    Choice,
    OpenChoice,
    Boolean,
    Integer,
    Decimal,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnswerChoice {
    pub coding: Coding,
    pub display: Localized,
    pub ordinal: Option<i64>,
}

/// `enableWhen` conditions this model supports (`=`, `!=` and `exists`).
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String, bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub link_id: String,
    pub code: Option<Coding>,
    pub text: Localized,
    pub kind: Kind,
    pub required: bool,
    pub repeats: bool,
    pub read_only: bool,
    pub choices: Vec<AnswerChoice>,
    pub enable_when: Vec<Condition>,
    /// `all` (default) or `any`.
    pub enable_any: bool,
    pub items: Vec<Item>,
}

/// A screening instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct Form {
    pub id: String,
    pub url: String,
    pub version: String,
    pub title: Localized,
    pub items: Vec<Item>,
}

impl Form {
    /// `url|version`, as QuestionnaireResponse.questionnaire.
    pub fn canonical(&self) -> String {
        format!("{}|{}", self.url, self.version)
    }

    /// Every item, depth first.
    pub fn all_items(&self) -> Vec<&Item> {
        fn walk<'a>(items: &'a [Item], out: &mut Vec<&'a Item>) {
            for i in items {
                out.push(i);
                walk(&i.items, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.items, &mut out);
        out
    }

    /// Answer ordinals (for totals), by answer code.
    pub fn ordinals(&self) -> BTreeMap<String, i64> {
        self.all_items()
            .iter()
            .flat_map(|i| i.choices.iter())
            .filter_map(|c| c.ordinal.map(|o| (c.coding.code.clone(), o)))
            .collect()
    }
}

fn coding(v: &Value) -> Option<Coding> {
    Some(Coding {
        system: v.get("system")?.as_str()?.to_string(),
        code: v.get("code")?.as_str()?.to_string(),
        display: v
            .get("display")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

fn item(v: &Value) -> Result<Item, String> {
    let link_id = v["linkId"]
        .as_str()
        .ok_or("an item has no linkId")?
        .to_string();
    let kind = match v["type"].as_str().unwrap_or_default() {
        "group" => Kind::Group,
        "display" => Kind::Display,
        "choice" => Kind::Choice,
        "open-choice" => Kind::OpenChoice,
        "boolean" => Kind::Boolean,
        "integer" => Kind::Integer,
        "decimal" => Kind::Decimal,
        "string" | "text" => Kind::Text,
        other => return Err(format!("item {link_id}: type {other:?} is not supported")),
    };
    let choices = v["answerOption"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| {
            let vc = o.get("valueCoding")?;
            Some(AnswerChoice {
                coding: coding(vc)?,
                display: Localized::read(vc, "display"),
                ordinal: o["extension"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["url"] == ORDINAL)
                    .and_then(|e| {
                        e["valueDecimal"]
                            .as_f64()
                            .or_else(|| e["valueInteger"].as_f64())
                    })
                    .map(|f| f as i64),
            })
        })
        .collect();
    let enable_when = v["enableWhen"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let q = c["question"].as_str().unwrap_or_default().to_string();
            let answer = c
                .get("answerCoding")
                .and_then(|a| a["code"].as_str().map(String::from))
                .or_else(|| {
                    c.get("answerBoolean")
                        .and_then(Value::as_bool)
                        .map(|b| b.to_string())
                })
                .or_else(|| {
                    c.get("answerInteger")
                        .and_then(Value::as_i64)
                        .map(|n| n.to_string())
                });
            match (c["operator"].as_str(), answer) {
                // R4 Questionnaire invariant que-7: `exists` is answered
                // with a boolean (`answerBoolean`), nothing else.
                (Some("exists"), _) => match c["answerBoolean"].as_bool() {
                    Some(b) => Ok(Condition::Exists(q, b)),
                    None => Err(format!(
                        "item {link_id}: enableWhen `exists` needs answerBoolean (R4 que-7)"
                    )),
                },
                (Some("="), Some(a)) => Ok(Condition::Equals(q, a)),
                (Some("!="), Some(a)) => Ok(Condition::NotEquals(q, a)),
                (op, _) => Err(format!(
                    "item {link_id}: enableWhen operator {op:?} is not supported"
                )),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Item {
        code: v["code"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(coding),
        text: Localized::read(v, "text"),
        kind,
        required: v["required"].as_bool().unwrap_or(false),
        repeats: v["repeats"].as_bool().unwrap_or(false),
        read_only: v["readOnly"].as_bool().unwrap_or(false),
        choices,
        enable_when,
        enable_any: v["enableBehavior"] == "any",
        items: v["item"]
            .as_array()
            .into_iter()
            .flatten()
            .map(item)
            .collect::<Result<_, _>>()?,
        link_id,
    })
}

/// Read one Questionnaire.
pub fn parse(v: &Value) -> Result<Form, String> {
    if v["resourceType"] != "Questionnaire" {
        return Err("not a Questionnaire".into());
    }
    Ok(Form {
        id: v["id"].as_str().ok_or("no id")?.to_string(),
        url: v["url"].as_str().ok_or("no url")?.to_string(),
        version: v["version"].as_str().unwrap_or("1").to_string(),
        title: Localized::read(v, "title"),
        items: v["item"]
            .as_array()
            .into_iter()
            .flatten()
            .map(item)
            .collect::<Result<_, _>>()?,
    })
}

/// The shipped instruments, by id.
pub fn shipped() -> Result<BTreeMap<String, Form>, String> {
    SHIPPED
        .files()
        .filter(|f| f.path().extension().and_then(|e| e.to_str()) == Some("json"))
        .map(|f| {
            let v: Value = serde_json::from_slice(f.contents())
                .map_err(|e| format!("{}: {e}", f.path().display()))?;
            let form = parse(&v).map_err(|e| format!("{}: {e}", f.path().display()))?;
            Ok((form.id.clone(), form))
        })
        .collect()
}

/// Identifiers of the Questionnaires Passerelle publishes: `<id>-<version>`,
/// the key of their conditional create.
pub const QUESTIONNAIRE_ID_SYSTEM: &str = "http://passerelle.example.org/fhir/sid/questionnaire";

/// The shipped Questionnaire whose canonical (`url|version`) is `canonical`,
/// as Passerelle publishes it on the EHR's server, so that a
/// QuestionnaireResponse's `questionnaire` resolves there (R4
/// QuestionnaireResponse.questionnaire is a canonical to the form answered;
/// US Core QuestionnaireResponse takes it from SDC, which expects it to
/// resolve). It claims SDC Questionnaire, carries the `versionAlgorithm`
/// extension SDC's invariant sdc-2 asks for beside a `version` (semver,
/// <http://hl7.org/fhir/version-algorithm>), and an identifier to be
/// created once (`None`: not one of Passerelle's forms).
pub fn publication(canonical: &str) -> Option<Value> {
    // Built once: every screening's transaction carries one.
    static PUBLISHED: std::sync::OnceLock<BTreeMap<String, Value>> = std::sync::OnceLock::new();
    PUBLISHED
        .get_or_init(|| {
            SHIPPED
                .files()
                .filter(|f| f.path().extension().and_then(|e| e.to_str()) == Some("json"))
                .filter_map(|f| serde_json::from_slice::<Value>(f.contents()).ok())
                .filter_map(|q| {
                    let key = format!("{}|{}", q["url"].as_str()?, q["version"].as_str()?);
                    Some((key, published(q)))
                })
                .collect()
        })
        .get(canonical)
        .cloned()
}

/// A shipped Questionnaire as Passerelle publishes it (see [`publication`]).
fn published(mut q: Value) -> Value {
    let version = q["version"].as_str().unwrap_or_default().to_string();
    let id = q["id"].as_str().unwrap_or_default().to_string();
    if let Some(o) = q.as_object_mut() {
        o.remove("id");
    }
    q["meta"] = serde_json::json!({ "profile": [super::profiles::SDC_QUESTIONNAIRE] });
    q["identifier"] = serde_json::json!([{
        "system": QUESTIONNAIRE_ID_SYSTEM,
        "value": format!("{id}-{version}")
    }]);
    let algorithm = serde_json::json!({
        "url": VERSION_ALGORITHM,
        "valueCoding": { "system": "http://hl7.org/fhir/version-algorithm", "code": "semver" }
    });
    match q["extension"].as_array_mut() {
        Some(list) if !list.iter().any(|e| e["url"] == VERSION_ALGORITHM) => list.push(algorithm),
        Some(_) => {}
        None => q["extension"] = serde_json::json!([algorithm]),
    }
    q
}

/// The R5 `versionAlgorithm` element as an R4 extension.
const VERSION_ALGORITHM: &str = "http://hl7.org/fhir/StructureDefinition/artifact-versionAlgorithm";

/// Answers as a form posted them: linkId → raw values (`code` of a choice,
/// `true`/`false`, a number or text).
pub type Posted = HashMap<String, Vec<String>>;

/// Is `item` enabled, given the answers posted so far?
pub fn enabled(item: &Item, posted: &Posted) -> bool {
    if item.enable_when.is_empty() {
        return true;
    }
    let check = |c: &Condition| match c {
        Condition::Equals(q, a) => posted.get(q).is_some_and(|v| v.iter().any(|x| x == a)),
        Condition::NotEquals(q, a) => posted
            .get(q)
            .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x != a)),
        Condition::Exists(q, want) => posted.get(q).is_some_and(|v| !v.is_empty()) == *want,
    };
    if item.enable_any {
        item.enable_when.iter().any(check)
    } else {
        item.enable_when.iter().all(check)
    }
}

/// The recorded items of a posted form: enabled, answerable items only
/// (groups and displays are structure; read-only items are computed), less
/// the items `not_asked` (their domain was screened recently).
pub fn recorded(
    form: &Form,
    posted: &Posted,
    not_asked: &HashSet<String>,
) -> Result<Vec<RecordedItem>, String> {
    fn walk(
        items: &[Item],
        posted: &Posted,
        not_asked: &HashSet<String>,
        parent_enabled: bool,
        groups: &[(String, String)],
        out: &mut Vec<Result<RecordedItem, String>>,
    ) {
        for item in items {
            let on = parent_enabled && enabled(item, posted) && !not_asked.contains(&item.link_id);
            if matches!(item.kind, Kind::Group | Kind::Display) || item.read_only {
                let mut inner = groups.to_vec();
                if item.kind == Kind::Group {
                    inner.push((item.link_id.clone(), item.text.en.clone()));
                }
                walk(&item.items, posted, not_asked, on, &inner, out);
                continue;
            }
            if !on {
                continue;
            }
            let Some(question) = item.code.clone() else {
                continue;
            };
            let values: Vec<&String> = posted
                .get(&item.link_id)
                .into_iter()
                .flatten()
                .filter(|v| !v.is_empty())
                .collect();
            let answers: Result<Vec<(Answer, Option<Coding>)>, String> = values
                .iter()
                .map(|v| match item.kind {
                    Kind::Choice | Kind::OpenChoice => {
                        match item.choices.iter().find(|c| &&c.coding.code == v) {
                            Some(c) => {
                                Ok((Answer::Code(c.coding.code.clone()), Some(c.coding.clone())))
                            }
                            None if item.kind == Kind::OpenChoice => {
                                Ok((Answer::Text(v.to_string()), None))
                            }
                            None => Err(format!("{} is not an answer of item {}", v, item.link_id)),
                        }
                    }
                    Kind::Boolean => match v.as_str() {
                        "true" => Ok((Answer::Boolean(true), None)),
                        "false" => Ok((Answer::Boolean(false), None)),
                        _ => Err(format!("item {} takes yes or no", item.link_id)),
                    },
                    Kind::Integer => v
                        .parse()
                        .map(|n| (Answer::Integer(n), None))
                        .map_err(|_| format!("item {} takes a whole number", item.link_id)),
                    Kind::Decimal => v
                        .parse()
                        .map(|n| (Answer::Decimal(n), None))
                        .map_err(|_| format!("item {} takes a number", item.link_id)),
                    _ => Ok((Answer::Text(v.to_string()), None)),
                })
                .collect();
            let answers = match answers {
                Ok(a) if !item.repeats && a.len() > 1 => {
                    Err(format!("item {} takes one answer", item.link_id))
                }
                other => other,
            };
            out.push(answers.map(|answers| RecordedItem {
                link_id: item.link_id.clone(),
                text: item.text.en.clone(),
                question,
                absent: answers.is_empty().then_some(Absent::Skipped),
                answers,
                groups: groups.to_vec(),
            }));
        }
    }
    let mut out = Vec::new();
    walk(&form.items, posted, not_asked, true, &[], &mut out);
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(pairs: &[(&str, &str)]) -> Posted {
        let mut p = Posted::new();
        for (k, v) in pairs {
            p.entry(k.to_string()).or_default().push(v.to_string());
        }
        p
    }

    #[test]
    fn every_shipped_instrument_reads_in_three_languages() {
        let forms = shipped().unwrap();
        for id in [
            "ahc-hrsn-core",
            "hunger-vital-sign",
            "prapare",
            "medication-cost",
            "language-access",
            "health-literacy",
        ] {
            let f = forms.get(id).unwrap_or_else(|| panic!("{id} shipped"));
            for item in f
                .all_items()
                .iter()
                .filter(|i| i.kind != Kind::Group || !i.text.en.is_empty())
            {
                assert!(
                    !item.text.get("fr").is_empty() && !item.text.get("es").is_empty(),
                    "{id}/{}",
                    item.link_id
                );
            }
        }
        let hvs = &forms["hunger-vital-sign"];
        let q = hvs
            .all_items()
            .into_iter()
            .find(|i| i.link_id == "88122-7")
            .unwrap();
        assert_ne!(q.text.get("fr"), q.text.get("en"));
        assert_eq!(
            q.text.get("fr-CA"),
            q.text.get("fr"),
            "a regional tag falls back to its language"
        );
        assert_eq!(
            q.text.get("de"),
            q.text.en,
            "an unknown language shows English"
        );
    }

    #[test]
    fn an_open_choice_item_takes_a_listed_answer_or_free_text() {
        let form = &shipped().unwrap()["language-access"];
        let listed = recorded(form, &posted(&[("54899-0", "fr")]), &Default::default()).unwrap();
        let item = listed.iter().find(|i| i.link_id == "54899-0").unwrap();
        assert_eq!(item.answers[0].0, Answer::Code("fr".into()));
        let other = recorded(
            form,
            &posted(&[("54899-0", ""), ("54899-0", "Tiếng Việt")]),
            &Default::default(),
        )
        .unwrap();
        let item = other.iter().find(|i| i.link_id == "54899-0").unwrap();
        assert_eq!(
            item.answers,
            vec![(Answer::Text("Tiếng Việt".into()), None)]
        );
    }

    #[test]
    fn exists_needs_a_boolean_answer() {
        let form = |when: serde_json::Value| {
            serde_json::json!({
                "resourceType": "Questionnaire", "id": "q", "url": "http://example.org/q",
                "version": "1", "status": "active",
                "item": [
                    { "linkId": "a", "type": "boolean", "text": "A" },
                    { "linkId": "b", "type": "boolean", "text": "B", "enableWhen": [when] }
                ]
            })
        };
        let ok = form(
            serde_json::json!({ "question": "a", "operator": "exists", "answerBoolean": false }),
        );
        assert!(parse(&ok).is_ok());
        let coded = form(serde_json::json!({
            "question": "a", "operator": "exists",
            "answerCoding": { "system": "http://example.org", "code": "x" }
        }));
        let err = parse(&coded).unwrap_err();
        assert!(err.contains("que-7"), "{err}");
        let bare = form(serde_json::json!({ "question": "a", "operator": "exists" }));
        assert!(parse(&bare).unwrap_err().contains("answerBoolean"));
    }

    #[test]
    fn safety_ordinals_come_from_the_questionnaire() {
        let ahc = &shipped().unwrap()["ahc-hrsn-core"];
        let o = ahc.ordinals();
        assert_eq!(o.get("LA6270-8"), Some(&1));
        assert_eq!(o.get("LA6482-9"), Some(&5));
    }

    #[test]
    fn answers_to_disabled_items_are_not_recorded_and_bad_answers_are_refused() {
        let ahc = &shipped().unwrap()["ahc-hrsn-core"];
        // Safety questions declined: their answers, if posted anyway, are ignored.
        let p = posted(&[
            ("88122-7", "LA6729-3"),
            ("safety-questions-agreed", "false"),
            ("95618-5", "LA6482-9"),
        ]);
        let items = recorded(ahc, &p, &Default::default()).unwrap();
        assert!(
            items
                .iter()
                .any(|i| i.link_id == "88122-7" && i.absent.is_none())
        );
        assert!(items.iter().all(|i| i.link_id != "95618-5"));
        let p = posted(&[("safety-questions-agreed", "true"), ("95618-5", "LA6482-9")]);
        assert!(
            recorded(ahc, &p, &Default::default())
                .unwrap()
                .iter()
                .any(|i| i.link_id == "95618-5")
        );
        let err = recorded(
            ahc,
            &posted(&[("88122-7", "LA0000-0")]),
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(err, "LA0000-0 is not an answer of item 88122-7");
        let err = recorded(
            ahc,
            &posted(&[("88122-7", "LA6729-3"), ("88122-7", "LA28398-8")]),
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(err, "item 88122-7 takes one answer");
        // Unanswered enabled items are recorded as skipped.
        let items = recorded(ahc, &Posted::new(), &Default::default()).unwrap();
        // Items of recently screened domains are not asked, so not recorded.
        let recent: HashSet<String> = ["88122-7".to_string(), "88123-5".to_string()].into();
        let items_now = recorded(ahc, &Posted::new(), &recent).unwrap();
        assert!(
            items_now
                .iter()
                .all(|i| i.link_id != "88122-7" && i.link_id != "88123-5")
        );
        assert_eq!(items_now.len() + 2, items.len());
        assert!(
            items
                .iter()
                .any(|i| i.link_id == "71802-3" && i.absent == Some(Absent::Skipped))
        );
    }
}
