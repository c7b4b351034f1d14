//! Scoring a screening per SDOH domain, from one data table
//! (`profiles/screening-rules.json`) keyed by LOINC question and answer
//! codes, so that a rule from an instrument's documentation lives in one
//! place with its source, and a practice can read it.
//!
//! A positive answer marks its domain positive (SDOHCC Observation Screening
//! Response: `interpretation` POS on positive answers only, never NEG); a
//! total (the AHC HRSN safety score 95614-4) is positive above its
//! threshold; a skipped or "don't know" answer is neither.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use super::sdoh::Domain;

/// The rules shipped with Passerelle.
pub const SHIPPED_RULES: &str = include_str!("../../../profiles/screening-rules.json");

#[derive(Debug, Clone, Deserialize, Default)]
struct RawDeclined {
    codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawRules {
    #[serde(default)]
    declined_answers: RawDeclined,
    rules: Vec<RawRule>,
    #[serde(default)]
    totals: Vec<RawTotal>,
    #[serde(default)]
    questionnaire_domains: HashMap<String, HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawRule {
    question: String,
    positive_answers: Vec<String>,
    domain: String,
    source: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RawTotal {
    total: String,
    of: Vec<String>,
    positive_above: i64,
    domain: String,
    source: String,
    #[serde(default)]
    answer_scores: BTreeMap<String, i64>,
}

/// One rule: these answers to this question are positive for this domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub question: String,
    pub positive_answers: BTreeSet<String>,
    pub domain: Domain,
    pub source: String,
}

/// A total over several items, positive above a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct TotalRule {
    pub total: String,
    pub of: Vec<String>,
    pub positive_above: i64,
    pub domain: Domain,
    pub source: String,
    /// The score of each answer code (for items whose Questionnaire, and so
    /// whose `ordinalValue`, Passerelle does not have: recorded elsewhere).
    pub answer_scores: BTreeMap<String, i64>,
}

/// The checked rule table: the only way to get one is [`Rules::parse`].
#[derive(Debug, Clone)]
pub struct Rules {
    by_question: HashMap<String, Vec<Rule>>,
    /// Answer codes meaning "I choose not to answer": recorded as declined.
    pub declined: BTreeSet<String>,
    pub totals: Vec<TotalRule>,
    /// questionnaire id -> linkId -> domain screened by that item.
    pub item_domains: HashMap<String, HashMap<String, Domain>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RulesError {
    #[error("the screening rules are not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("the screening rules name an unknown domain {0:?}")]
    UnknownDomain(String),
    #[error("the rule for {0} has no positive answer and no source")]
    Incomplete(String),
}

fn domain(code: &str) -> Result<Domain, RulesError> {
    Domain::from_code(code).ok_or_else(|| RulesError::UnknownDomain(code.to_string()))
}

impl Rules {
    pub fn parse(json: &str) -> Result<Rules, RulesError> {
        let raw: RawRules =
            serde_json::from_str(json).map_err(|e| RulesError::Shape(e.to_string()))?;
        let mut by_question: HashMap<String, Vec<Rule>> = HashMap::new();
        for r in raw.rules {
            if r.positive_answers.is_empty() || r.source.trim().is_empty() {
                return Err(RulesError::Incomplete(r.question));
            }
            let rule = Rule {
                domain: domain(&r.domain)?,
                positive_answers: r.positive_answers.into_iter().collect(),
                question: r.question.clone(),
                source: r.source,
            };
            by_question.entry(r.question).or_default().push(rule);
        }
        let totals = raw
            .totals
            .into_iter()
            .map(|t| {
                Ok(TotalRule {
                    domain: domain(&t.domain)?,
                    total: t.total,
                    of: t.of,
                    positive_above: t.positive_above,
                    source: t.source,
                    answer_scores: t.answer_scores,
                })
            })
            .collect::<Result<Vec<_>, RulesError>>()?;
        let item_domains = raw
            .questionnaire_domains
            .into_iter()
            .map(|(q, items)| {
                let items = items
                    .into_iter()
                    .map(|(link, d)| Ok((link, domain(&d)?)))
                    .collect::<Result<HashMap<_, _>, RulesError>>()?;
                Ok((q, items))
            })
            .collect::<Result<HashMap<_, _>, RulesError>>()?;
        Ok(Rules {
            by_question,
            totals,
            item_domains,
            declined: raw.declined_answers.codes.into_iter().collect(),
        })
    }

    pub fn shipped() -> Rules {
        Rules::parse(SHIPPED_RULES).expect("the shipped screening rules are valid (tested)")
    }

    /// The shipped rules, parsed once.
    pub fn shared() -> &'static Rules {
        static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
        RULES.get_or_init(Rules::shipped)
    }

    /// How an item counts: a "choose not to answer" code makes it declined.
    pub fn normalise(&self, mut item: ItemResponse) -> ItemResponse {
        let declined = item
            .answers
            .iter()
            .any(|a| matches!(a, Answer::Code(c) if self.declined.contains(c)));
        if item.absent.is_none() && declined {
            item.answers.clear();
            item.absent = Some(Absent::Declined);
        }
        item
    }

    /// Does the table know this question (a rule, a total or one of its parts)?
    pub fn knows(&self, question: &str) -> bool {
        self.by_question.contains_key(question)
            || self
                .totals
                .iter()
                .any(|t| t.total == question || t.of.iter().any(|q| q == question))
    }

    /// Every question and total code the table scores, sorted: what to
    /// search a server's Observations by, whatever their categories.
    pub fn question_codes(&self) -> Vec<String> {
        let mut out: BTreeSet<String> = self.by_question.keys().cloned().collect();
        for t in &self.totals {
            out.insert(t.total.clone());
            out.extend(t.of.iter().cloned());
        }
        out.into_iter().collect()
    }

    /// The answer scores of every total, for scoring items recorded elsewhere.
    pub fn answer_scores(&self) -> BTreeMap<String, i64> {
        self.totals
            .iter()
            .flat_map(|t| t.answer_scores.iter().map(|(k, v)| (k.clone(), *v)))
            .collect()
    }

    /// A total recorded as a number (the HITS total 95614-4 as `valueInteger`
    /// or `valueQuantity`): its domain, and whether it is positive.
    pub fn total_value(&self, question: &str, value: i64) -> Option<(Domain, bool)> {
        self.totals
            .iter()
            .find(|t| t.total == question)
            .map(|t| (t.domain, value > t.positive_above))
    }

    /// The total rule named `total`.
    pub fn total(&self, total: &str) -> Option<&TotalRule> {
        self.totals.iter().find(|t| t.total == total)
    }

    /// The domains a question screens, positive or not.
    pub fn domains_of(&self, question: &str) -> BTreeSet<Domain> {
        let mut out: BTreeSet<Domain> = self
            .by_question
            .get(question)
            .into_iter()
            .flatten()
            .map(|r| r.domain)
            .collect();
        out.extend(
            self.totals
                .iter()
                .filter(|t| t.of.iter().any(|q| q == question) || t.total == question)
                .map(|t| t.domain),
        );
        out
    }
}

/// One answer as the form gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A coded answer (LOINC LA code for the instruments).
    Code(String),
    Integer(i64),
    Decimal(f64),
    Boolean(bool),
    Text(String),
}

/// How an item was left unanswered (FHIR `data-absent-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// Not answered.
    Skipped,
    /// The patient declined to answer.
    Declined,
    /// The patient does not know.
    DontKnow,
}

impl Absent {
    /// The code in `http://terminology.hl7.org/CodeSystem/data-absent-reason`.
    pub fn code(self) -> &'static str {
        match self {
            Absent::Skipped => "not-asked",
            Absent::Declined => "asked-declined",
            Absent::DontKnow => "asked-unknown",
        }
    }
}

/// One item of a completed form.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResponse {
    pub link_id: String,
    /// The item's LOINC (or local) question code.
    pub question: String,
    pub answers: Vec<Answer>,
    pub absent: Option<Absent>,
}

/// The result of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub link_id: String,
    pub question: String,
    pub domains: BTreeSet<Domain>,
    pub positive: bool,
}

/// A computed total.
#[derive(Debug, Clone, PartialEq)]
pub struct TotalResult {
    pub total: String,
    /// `None` when an item of the total was not answered.
    pub value: Option<i64>,
    pub positive: bool,
    pub domain: Domain,
}

/// A scored screening.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scored {
    pub items: Vec<ItemResult>,
    pub totals: Vec<TotalResult>,
    /// Domains with at least one positive answer or total.
    pub positive: BTreeSet<Domain>,
    /// Domains that were screened (answered), positive or not.
    pub screened: BTreeSet<Domain>,
}

/// Score a form. `ordinal` gives an answer code's score (from the
/// Questionnaire's `ordinalValue`), for totals.
pub fn score(rules: &Rules, items: &[ItemResponse], ordinal: &BTreeMap<String, i64>) -> Scored {
    let mut scored = Scored::default();
    let items: Vec<ItemResponse> = items.iter().cloned().map(|i| rules.normalise(i)).collect();
    let items = &items[..];
    for item in items {
        let domains = rules.domains_of(&item.question);
        let answered = item.absent.is_none() && !item.answers.is_empty();
        let positive = answered
            && rules
                .by_question
                .get(&item.question)
                .into_iter()
                .flatten()
                .any(|rule| {
                    item.answers
                        .iter()
                        .any(|a| matches!(a, Answer::Code(c) if rule.positive_answers.contains(c)))
                });
        if answered {
            scored.screened.extend(domains.iter().copied());
        }
        if positive {
            for rule in rules.by_question.get(&item.question).into_iter().flatten() {
                if item
                    .answers
                    .iter()
                    .any(|a| matches!(a, Answer::Code(c) if rule.positive_answers.contains(c)))
                {
                    scored.positive.insert(rule.domain);
                }
            }
        }
        scored.items.push(ItemResult {
            link_id: item.link_id.clone(),
            question: item.question.clone(),
            domains,
            positive,
        });
    }
    for total in &rules.totals {
        let parts: Vec<Option<i64>> = total
            .of
            .iter()
            .map(|q| {
                items
                    .iter()
                    .find(|i| &i.question == q && i.absent.is_none())
                    .and_then(|i| {
                        i.answers.iter().find_map(|a| match a {
                            Answer::Code(c) => ordinal.get(c).copied(),
                            Answer::Integer(n) => Some(*n),
                            _ => None,
                        })
                    })
            })
            .collect();
        let any_answered = parts.iter().any(Option::is_some);
        if !any_answered {
            continue;
        }
        let value = parts.iter().copied().sum::<Option<i64>>();
        let positive = value.is_some_and(|v| v > total.positive_above);
        scored.screened.insert(total.domain);
        if positive {
            scored.positive.insert(total.domain);
        }
        scored.totals.push(TotalResult {
            total: total.total.clone(),
            value,
            positive,
            domain: total.domain,
        });
    }
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The positive answers of each published instrument, written here from
    /// the instruments' own guides (cited per rule) so the scorer is tested
    /// independently of the shipped table.
    const TABLE: &str = r#"{
      "rules": [
        {"question": "88122-7", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign (Hager et al., Pediatrics 2010): often or sometimes true to either item"},
        {"question": "88123-5", "positive_answers": ["LA28397-0", "LA6729-3"], "domain": "food-insecurity", "source": "Hunger Vital Sign"},
        {"question": "71802-3", "positive_answers": ["LA31994-9"], "domain": "housing-instability", "source": "CMS AHC HRSN Screening Tool guide"},
        {"question": "71802-3", "positive_answers": ["LA31995-6"], "domain": "homelessness", "source": "CMS AHC HRSN Screening Tool guide"},
        {"question": "96778-6", "positive_answers": ["LA31996-4", "LA28580-1", "LA31997-2", "LA31998-0", "LA31999-8", "LA32000-4", "LA32001-2"], "domain": "inadequate-housing", "source": "CMS AHC HRSN: any problem, not None of the above"},
        {"question": "93030-5", "positive_answers": ["LA33-6"], "domain": "transportation-insecurity", "source": "CMS AHC HRSN"},
        {"question": "96779-4", "positive_answers": ["LA33-6", "LA32002-0"], "domain": "utility-insecurity", "source": "CMS AHC HRSN"},
        {"question": "76513-1", "positive_answers": ["LA15832-1", "LA22683-9"], "domain": "financial-insecurity", "source": "CMS AHC HRSN supplemental"},
        {"question": "93031-3", "positive_answers": ["LA30128-5"], "domain": "medical-cost-burden", "source": "NACHC PRAPARE"}
      ],
      "totals": [
        {"total": "95614-4", "of": ["95618-5", "95617-7", "95616-9", "95615-1"], "positive_above": 10, "domain": "intimate-partner-violence", "source": "CMS AHC HRSN: a score of 11 or more is positive"}
      ],
      "questionnaire_domains": {"hvs": {"q1": "food-insecurity"}}
    }"#;

    fn rules() -> Rules {
        Rules::parse(TABLE).unwrap()
    }

    fn item(question: &str, code: &str) -> ItemResponse {
        ItemResponse {
            link_id: question.into(),
            question: question.into(),
            answers: vec![Answer::Code(code.into())],
            absent: None,
        }
    }

    fn skipped(question: &str, absent: Absent) -> ItemResponse {
        ItemResponse {
            link_id: question.into(),
            question: question.into(),
            answers: vec![],
            absent: Some(absent),
        }
    }

    fn safety_ordinals() -> BTreeMap<String, i64> {
        [
            ("LA6270-8", 1),
            ("LA10066-1", 2),
            ("LA10082-8", 3),
            ("LA16644-9", 4),
            ("LA6482-9", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn positive_of(items: &[ItemResponse]) -> BTreeSet<Domain> {
        score(&rules(), items, &safety_ordinals()).positive
    }

    #[test]
    fn hunger_vital_sign_often_or_sometimes_on_either_item_is_positive() {
        // Hunger Vital Sign: "often true" or "sometimes true" to either statement.
        assert!(
            positive_of(&[item("88122-7", "LA6729-3"), item("88123-5", "LA28398-8")])
                .contains(&Domain::FoodInsecurity)
        );
        assert!(
            positive_of(&[item("88122-7", "LA28398-8"), item("88123-5", "LA28397-0")])
                .contains(&Domain::FoodInsecurity)
        );
        let never = score(
            &rules(),
            &[item("88122-7", "LA28398-8"), item("88123-5", "LA28398-8")],
            &safety_ordinals(),
        );
        assert!(never.positive.is_empty());
        assert!(
            never.screened.contains(&Domain::FoodInsecurity),
            "a negative screen is still a screen"
        );
    }

    #[test]
    fn housing_answers_split_between_instability_and_homelessness() {
        assert_eq!(
            positive_of(&[item("71802-3", "LA31994-9")]),
            BTreeSet::from([Domain::HousingInstability])
        );
        assert_eq!(
            positive_of(&[item("71802-3", "LA31995-6")]),
            BTreeSet::from([Domain::Homelessness])
        );
        assert!(positive_of(&[item("71802-3", "LA31993-1")]).is_empty());
    }

    #[test]
    fn housing_quality_any_problem_is_positive_none_is_not() {
        let multi = ItemResponse {
            link_id: "q".into(),
            question: "96778-6".into(),
            answers: vec![
                Answer::Code("LA28580-1".into()),
                Answer::Code("LA32001-2".into()),
            ],
            absent: None,
        };
        assert_eq!(
            positive_of(&[multi]),
            BTreeSet::from([Domain::InadequateHousing])
        );
        assert!(positive_of(&[item("96778-6", "LA9-3")]).is_empty());
    }

    #[test]
    fn transportation_utilities_financial_and_medicine_cost() {
        assert_eq!(
            positive_of(&[item("93030-5", "LA33-6")]),
            BTreeSet::from([Domain::TransportationInsecurity])
        );
        assert!(positive_of(&[item("93030-5", "LA32-8")]).is_empty());
        assert_eq!(
            positive_of(&[item("96779-4", "LA32002-0")]),
            BTreeSet::from([Domain::UtilityInsecurity])
        );
        assert_eq!(
            positive_of(&[item("96779-4", "LA33-6")]),
            BTreeSet::from([Domain::UtilityInsecurity])
        );
        assert!(positive_of(&[item("96779-4", "LA32-8")]).is_empty());
        assert_eq!(
            positive_of(&[item("76513-1", "LA22683-9")]),
            BTreeSet::from([Domain::FinancialInsecurity])
        );
        assert!(positive_of(&[item("76513-1", "LA22682-1")]).is_empty());
        assert_eq!(
            positive_of(&[item("93031-3", "LA30128-5")]),
            BTreeSet::from([Domain::MedicalCostBurden])
        );
    }

    #[test]
    fn skipped_and_dont_know_are_neither_positive_nor_screened() {
        let s = score(
            &rules(),
            &[
                skipped("88122-7", Absent::Skipped),
                skipped("93030-5", Absent::DontKnow),
            ],
            &safety_ordinals(),
        );
        assert!(s.positive.is_empty());
        assert!(s.screened.is_empty());
        assert_eq!(Absent::DontKnow.code(), "asked-unknown");
        assert_eq!(Absent::Declined.code(), "asked-declined");
    }

    fn safety(codes: [&str; 4]) -> Scored {
        let qs = ["95618-5", "95617-7", "95616-9", "95615-1"];
        let items: Vec<_> = qs.iter().zip(codes).map(|(q, c)| item(q, c)).collect();
        score(&rules(), &items, &safety_ordinals())
    }

    #[test]
    fn the_safety_total_is_positive_above_ten() {
        // CMS AHC HRSN guide: add the four answers (1-5); 11 or more is positive.
        let ten = safety(["LA10082-8", "LA10082-8", "LA10066-1", "LA10066-1"]); // 3+3+2+2
        assert_eq!(ten.totals[0].value, Some(10));
        assert!(!ten.positive.contains(&Domain::IntimatePartnerViolence));
        assert!(ten.screened.contains(&Domain::IntimatePartnerViolence));
        let eleven = safety(["LA10082-8", "LA10082-8", "LA10082-8", "LA10066-1"]); // 3+3+3+2
        assert_eq!(eleven.totals[0].value, Some(11));
        assert!(eleven.positive.contains(&Domain::IntimatePartnerViolence));
        let lowest = safety(["LA6270-8"; 4]);
        assert_eq!(lowest.totals[0].value, Some(4));
        // One item skipped: no total, never positive by guess.
        let partial = score(
            &rules(),
            &[
                item("95618-5", "LA6482-9"),
                item("95617-7", "LA6482-9"),
                item("95616-9", "LA6482-9"),
                skipped("95615-1", Absent::Declined),
            ],
            &safety_ordinals(),
        );
        assert_eq!(partial.totals[0].value, None);
        assert!(!partial.positive.contains(&Domain::IntimatePartnerViolence));
    }

    #[test]
    fn the_shipped_table_scores_the_instruments_as_designed() {
        let rules = Rules::shipped();
        let pos = |q: &str, a: &str| score(&rules, &[item(q, a)], &BTreeMap::new()).positive;
        assert_eq!(
            pos("88122-7", "LA6729-3"),
            BTreeSet::from([Domain::FoodInsecurity])
        );
        assert_eq!(
            pos("88123-5", "LA28397-0"),
            BTreeSet::from([Domain::FoodInsecurity])
        );
        assert!(pos("88122-7", "LA28398-8").is_empty());
        assert_eq!(
            pos("71802-3", "LA31994-9"),
            BTreeSet::from([Domain::HousingInstability])
        );
        assert_eq!(
            pos("71802-3", "LA31995-6"),
            BTreeSet::from([Domain::Homelessness])
        );
        assert_eq!(
            pos("96778-6", "LA28580-1"),
            BTreeSet::from([Domain::InadequateHousing])
        );
        assert!(pos("96778-6", "LA9-3").is_empty());
        assert_eq!(
            pos("93030-5", "LA33-6"),
            BTreeSet::from([Domain::TransportationInsecurity])
        );
        assert_eq!(
            pos("96779-4", "LA32002-0"),
            BTreeSet::from([Domain::UtilityInsecurity])
        );
        assert_eq!(
            pos("76513-1", "LA15832-1"),
            BTreeSet::from([Domain::FinancialInsecurity])
        );
        assert!(pos("76513-1", "LA31980-8").is_empty(), "not hard at all");
        assert!(pos("93031-3", "LA30128-5").contains(&Domain::MedicalCostBurden));
        assert_eq!(rules.totals[0].total, "95614-4");
        assert_eq!(rules.totals[0].positive_above, 10);
        // Interpreter needed (US Core: same meaning as LOINC 54588-9).
        assert_eq!(
            pos("54588-9", "LA33-6"),
            BTreeSet::from([Domain::LanguageAccess])
        );
        assert!(pos("54588-9", "LA32-8").is_empty());
        // SILS (Morris et al. 2006): "sometimes" or more often is limited literacy.
        assert_eq!(
            pos("93157-6", "LA10082-8"),
            BTreeSet::from([Domain::PersonalHealthLiteracy])
        );
        assert_eq!(
            pos("93157-6", "LA9933-8"),
            BTreeSet::from([Domain::PersonalHealthLiteracy])
        );
        assert!(pos("93157-6", "LA10066-1").is_empty(), "rarely is not");
        // PRAPARE: seeing people less than once a week; afraid of a partner.
        assert_eq!(
            pos("93029-7", "LA27722-0"),
            BTreeSet::from([Domain::SocialConnection])
        );
        assert_eq!(
            pos("76501-6", "LA33-6"),
            BTreeSet::from([Domain::IntimatePartnerViolence])
        );
        // Medicines skipped to save money (NHIS item wording).
        assert_eq!(
            pos("rx-skipped-doses-cost-12m", "LA33-6"),
            BTreeSet::from([Domain::MedicalCostBurden])
        );
        // "I choose not to answer" is declined, not a negative screen.
        let declined = score(&rules, &[item("93030-5", "LA30122-8")], &BTreeMap::new());
        assert!(declined.screened.is_empty() && declined.positive.is_empty());
    }

    #[test]
    fn bad_tables_are_refused_clearly() {
        let err = Rules::parse(r#"{"rules": [{"question": "x", "positive_answers": ["a"], "domain": "hunger", "source": "s"}]}"#).unwrap_err();
        assert_eq!(err, RulesError::UnknownDomain("hunger".into()));
        let err = Rules::parse(r#"{"rules": [{"question": "x", "positive_answers": [], "domain": "food-insecurity", "source": "s"}]}"#).unwrap_err();
        assert_eq!(err, RulesError::Incomplete("x".into()));
        assert!(matches!(Rules::parse("[]"), Err(RulesError::Shape(_))));
        assert_eq!(rules().item_domains["hvs"]["q1"], Domain::FoodInsecurity);
    }
}
