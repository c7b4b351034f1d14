//! One reader of SDOH evidence, whoever recorded it: each domain's state
//! (positive, negative, declined; its date, its source, the record that
//! shows it) derived from screening records and health concerns in the
//! standard shapes, the same way for the visit page, the re-screening
//! interval, the referral's safety rule and the patterns.
//!
//! * A screening record ([`Screen`]: an Observation with its `hasMember`
//!   Observations, or a QuestionnaireResponse with its items) is scored by
//!   its LOINC question and answer codes with the form's own table
//!   ([`Rules`], `profiles/screening-rules.json`), whatever its categories:
//!   US Core Observation Screening Assessment and SDOHCC Observation
//!   Screening Response make `interpretation` optional, so its absence is
//!   no negative. A total recorded as a number (HITS 95614-4) is read
//!   against the table's threshold. An explicit `interpretation` POS also
//!   counts, for the SDOHCC domain categories it carries.
//! * A health concern ([`Concern`]) is positive evidence for its domains
//!   (SDOHCC category, else its code through [`ConditionCodes`]) unless it
//!   is refuted, entered in error, resolved or inactive.
//! * Status is respected ([`Standing`]): `entered-in-error` and `cancelled`
//!   are no result; `preliminary` (and `registered`, `in-progress`, …) are
//!   shown as such; an item skipped or declined (`dataAbsentReason`
//!   `asked-declined`, or the LOINC "I choose not to answer" answers) is no
//!   result either: declined shows only when the domain has no result.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use time::Date;

use super::screening::{Absent, Answer, ItemResponse, Rules, score};
use super::sdoh::Domain;
use super::visit::{Concern, DomainScreening, Finding};

/// What a record's status makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Standing {
    #[default]
    Final,
    /// A result, not final yet: shown labelled preliminary.
    Preliminary,
    /// Not a result at all (entered in error, cancelled).
    NotAResult,
}

impl Standing {
    /// R4 `Observation.status` (observation-status): final, amended and
    /// corrected are final; cancelled and entered-in-error are no result;
    /// registered, preliminary and unknown are preliminary.
    pub fn of_observation(status: &str) -> Standing {
        match status {
            "final" | "amended" | "corrected" => Standing::Final,
            "cancelled" | "entered-in-error" => Standing::NotAResult,
            _ => Standing::Preliminary,
        }
    }

    /// R4 `QuestionnaireResponse.status`: completed and amended are final;
    /// entered-in-error is no result; in-progress and stopped (answers not
    /// all given) are preliminary.
    pub fn of_questionnaire_response(status: &str) -> Standing {
        match status {
            "completed" | "amended" => Standing::Final,
            "entered-in-error" => Standing::NotAResult,
            _ => Standing::Preliminary,
        }
    }
}

/// One screening record, as the FHIR layer decoded it: an Observation (its
/// `hasMember` Observations as members), or a QuestionnaireResponse (its
/// items, nested or not, as members). A member without a date or source
/// takes its parent's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Screen {
    /// `Observation/…` or `QuestionnaireResponse/…`: a referral's reason.
    pub reference: Option<String>,
    pub standing: Standing,
    pub date: Option<Date>,
    /// Who recorded it, in words (`meta.source`, the performer or author).
    pub source: Option<String>,
    /// The question's codes (LOINC, or a linkId in the LOINC styles
    /// `71802-3` and `/96777-8/71802-3`, reduced to its last segment).
    pub questions: Vec<String>,
    pub answers: Vec<Answer>,
    pub absent: Option<Absent>,
    /// SDOHCC domain categories.
    pub domains: Vec<Domain>,
    /// `interpretation` POS.
    pub flagged_positive: bool,
    pub members: Vec<Screen>,
}

/// The reader's inputs for one patient.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub screens: Vec<Screen>,
    pub concerns: Vec<Concern>,
}

/// Verification statuses that make a concern no evidence (R4
/// condition-ver-status).
const NOT_EVIDENCE: [&str; 2] = ["refuted", "entered-in-error"];
/// Clinical statuses of a need that is no longer current (R4
/// condition-clinical).
const NOT_CURRENT: [&str; 3] = ["resolved", "inactive", "remission"];

/// Is this concern no evidence at all (refuted, or entered in error)?
pub fn concern_void(c: &Concern) -> bool {
    c.verification
        .as_deref()
        .is_some_and(|v| NOT_EVIDENCE.contains(&v))
}

/// Each domain's state, latest first per domain, one entry per domain that
/// has any evidence. A domain without an entry is unknown.
pub fn read(rules: &Rules, evidence: &Evidence) -> Vec<DomainScreening> {
    let mut candidates = Vec::new();
    for sitting in sittings(rules, &evidence.screens) {
        candidates.extend(score_sitting(rules, &sitting));
    }
    candidates.extend(evidence.concerns.iter().flat_map(concern_findings));
    let mut best: BTreeMap<Domain, DomainScreening> = BTreeMap::new();
    for c in candidates {
        match best.get(&c.domain) {
            Some(b) if !better(&c, b) => {}
            _ => {
                best.insert(c.domain, c);
            }
        }
    }
    best.into_values().collect()
}

/// Every result the evidence holds, one per sitting and domain (and per
/// current concern and domain), not only the latest: what a population
/// count needs (the patterns view counts screens over a period). Declined
/// answers and undated records are left out: neither is a screen that can
/// be placed in a period. A sitting and a concern recorded on one day for
/// one domain with one finding (a screening and the concern it raised)
/// count once.
pub fn results(rules: &Rules, evidence: &Evidence) -> Vec<DomainScreening> {
    let mut out: Vec<DomainScreening> = Vec::new();
    let mut seen: BTreeSet<(Domain, Date, bool)> = BTreeSet::new();
    let sittings = sittings(rules, &evidence.screens);
    let scored = sittings.iter().flat_map(|s| score_sitting(rules, s));
    for r in scored.chain(evidence.concerns.iter().flat_map(concern_findings)) {
        let Some(date) = r.date.filter(|_| r.is_result()) else {
            continue;
        };
        if seen.insert((r.domain, date, r.positive())) {
            out.push(r);
        }
    }
    out
}

/// Is `a` the one to show rather than `b`? A result beats a declined
/// answer whatever its date (declining is no result, it does not hide the
/// last one); then the later day; on the same day positive beats negative
/// (as the form's own rule: any positive answer of that day), and final
/// beats preliminary.
fn better(a: &DomainScreening, b: &DomainScreening) -> bool {
    match (a.is_result(), b.is_result()) {
        (true, false) => true,
        (false, true) => false,
        _ => (a.date, a.positive(), !a.preliminary) > (b.date, b.positive(), !b.preliminary),
    }
}

fn concern_findings(c: &Concern) -> Vec<DomainScreening> {
    let current = !c
        .clinical_status
        .as_deref()
        .is_some_and(|s| NOT_CURRENT.contains(&s));
    if concern_void(c) || !current {
        return vec![];
    }
    let preliminary = matches!(
        c.verification.as_deref(),
        Some("provisional" | "differential")
    );
    c.domains
        .iter()
        .map(|&domain| DomainScreening {
            domain,
            date: c.recorded.or(c.onset),
            finding: Finding::Positive,
            preliminary,
            source: c.source.clone(),
            evidence: Some(format!("Condition/{}", c.id)),
        })
        .collect()
}

/// One answered (or not) question, flattened out of its record.
struct Flat<'a> {
    item: ItemResponse,
    domains: &'a [Domain],
    flagged: bool,
    reference: Option<&'a str>,
}

/// The items recorded together: same day, same source, same standing.
/// Loose Observations of one sitting (the four HITS items and no panel)
/// are scored together, so their total is computed as the form's is.
struct Sitting<'a> {
    date: Option<Date>,
    source: Option<&'a str>,
    preliminary: bool,
    items: Vec<Flat<'a>>,
}

type SittingKey<'a> = (Option<Date>, Option<&'a str>, bool);

fn sittings<'a>(rules: &Rules, screens: &'a [Screen]) -> Vec<Sitting<'a>> {
    let mut by_key: BTreeMap<SittingKey<'a>, Vec<Flat<'a>>> = BTreeMap::new();
    for s in screens {
        flatten(rules, s, (None, None, None, false), &mut by_key);
    }
    by_key
        .into_iter()
        .map(|((date, source, preliminary), items)| Sitting {
            date,
            source,
            preliminary,
            items,
        })
        .collect()
}

type Inherited<'a> = (Option<Date>, Option<&'a str>, Option<&'a str>, bool);

fn flatten<'a>(
    rules: &Rules,
    s: &'a Screen,
    (date, source, reference, preliminary): Inherited<'a>,
    out: &mut BTreeMap<SittingKey<'a>, Vec<Flat<'a>>>,
) {
    if s.standing == Standing::NotAResult {
        return;
    }
    let date = s.date.or(date);
    let source = s.source.as_deref().or(source);
    let reference = s.reference.as_deref().or(reference);
    let preliminary = preliminary || s.standing == Standing::Preliminary;
    if let Some(question) = pick_question(rules, &s.questions) {
        out.entry((date, source, preliminary))
            .or_default()
            .push(Flat {
                item: rules.normalise(ItemResponse {
                    link_id: question.to_string(),
                    question: question.to_string(),
                    answers: s.answers.clone(),
                    absent: s.absent,
                }),
                domains: &s.domains,
                flagged: s.flagged_positive,
                reference,
            });
    }
    for m in &s.members {
        flatten(rules, m, (date, source, reference, preliminary), out);
    }
}

/// The first code the rules know, else the first code.
fn pick_question<'a>(rules: &Rules, questions: &'a [String]) -> Option<&'a str> {
    questions
        .iter()
        .find(|q| rules.knows(q))
        .or(questions.first())
        .map(String::as_str)
}

fn answered(i: &ItemResponse) -> bool {
    i.absent.is_none() && !i.answers.is_empty()
}

fn integer(i: &ItemResponse) -> Option<i64> {
    i.answers.iter().find_map(|a| match a {
        Answer::Integer(n) => Some(*n),
        _ => None,
    })
}

fn score_sitting(rules: &Rules, s: &Sitting) -> Vec<DomainScreening> {
    let items: Vec<ItemResponse> = s.items.iter().map(|f| f.item.clone()).collect();
    let scored = score(rules, &items, &rules.answer_scores());
    let mut positive = scored.positive.clone();
    let mut screened = scored.screened.clone();
    // Where a positive came from: the first record that shows it.
    let mut shown_by: BTreeMap<Domain, Option<&str>> = BTreeMap::new();
    for (f, r) in s.items.iter().zip(&scored.items) {
        if r.positive {
            for d in &r.domains {
                shown_by.entry(*d).or_insert(f.reference);
            }
        }
    }
    // A total recorded as a number.
    let mut direct_totals = BTreeSet::new();
    for f in &s.items {
        let Some(n) = integer(&f.item).filter(|_| answered(&f.item)) else {
            continue;
        };
        if let Some((d, pos)) = rules.total_value(&f.item.question, n) {
            direct_totals.insert(d);
            screened.insert(d);
            if pos {
                positive.insert(d);
                shown_by.entry(d).or_insert(f.reference);
            }
        }
    }
    // A total that could not be computed (an item missing) is no result
    // for its domain, unless something else screened it.
    for t in scored.totals.iter().filter(|t| t.value.is_none()) {
        let Some(rule) = rules.total(&t.total) else {
            continue;
        };
        let other = s.items.iter().any(|f| {
            answered(&f.item)
                && f.item.question != rule.total
                && !rule.of.contains(&f.item.question)
                && rules.domains_of(&f.item.question).contains(&t.domain)
        });
        if !other && !direct_totals.contains(&t.domain) {
            screened.remove(&t.domain);
        }
    }
    for t in scored.totals.iter().filter(|t| t.positive) {
        let part = s.items.iter().find(|f| {
            rules
                .total(&t.total)
                .is_some_and(|r| r.of.contains(&f.item.question))
        });
        shown_by
            .entry(t.domain)
            .or_insert(part.and_then(|f| f.reference));
    }
    // An explicit positive interpretation, for the domains it names.
    let mut declined = BTreeSet::new();
    for f in &s.items {
        let domains: BTreeSet<Domain> = if f.domains.is_empty() {
            rules.domains_of(&f.item.question)
        } else {
            f.domains.iter().copied().collect()
        };
        if f.flagged {
            for d in &domains {
                positive.insert(*d);
                screened.insert(*d);
                shown_by.entry(*d).or_insert(f.reference);
            }
        }
        if f.item.absent == Some(Absent::Declined) {
            declined.extend(domains);
        }
    }
    let first_reference = s.items.iter().find_map(|f| f.reference);
    let entry = |domain: Domain, finding: Finding| DomainScreening {
        domain,
        date: s.date,
        finding,
        preliminary: s.preliminary,
        source: s.source.map(str::to_string),
        evidence: if finding == Finding::Positive {
            shown_by
                .get(&domain)
                .copied()
                .flatten()
                .or(first_reference)
                .map(str::to_string)
        } else {
            None
        },
    };
    let mut out: Vec<DomainScreening> = Vec::new();
    for d in &screened {
        let finding = if positive.contains(d) {
            Finding::Positive
        } else {
            Finding::Negative
        };
        out.push(entry(*d, finding));
    }
    for d in declined.difference(&screened) {
        out.push(entry(*d, Finding::Declined));
    }
    out
}

// ---- Conditions that carry only a code

/// The code-to-domain table shipped with Passerelle.
pub const SHIPPED_CONDITION_CODES: &str =
    include_str!("../../../profiles/sdoh-condition-codes.json");

#[derive(Debug, Deserialize)]
struct RawCodes {
    systems: BTreeMap<String, String>,
    codes: Vec<RawCode>,
}

#[derive(Debug, Deserialize)]
struct RawCode {
    system: String,
    code: String,
    domain: String,
    source: String,
}

/// Which domain a Condition's code is about (`profiles/sdoh-condition-codes.json`):
/// ICD-10-CM by its code and every code below it, the longest entry first;
/// SNOMED CT exactly.
#[derive(Debug, Clone)]
pub struct ConditionCodes {
    /// (system URI, code without dots, upper case, domain), longest code first.
    entries: Vec<(String, String, Domain, bool)>,
}

/// The ICD-10-CM system URI (US Core).
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";

fn bare(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '.')
        .flat_map(char::to_uppercase)
        .collect()
}

impl ConditionCodes {
    pub fn parse(json: &str) -> Result<ConditionCodes, String> {
        let raw: RawCodes = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for c in raw.codes {
            let system = raw
                .systems
                .get(&c.system)
                .ok_or_else(|| format!("unknown system {:?}", c.system))?;
            let domain = Domain::from_code(&c.domain)
                .ok_or_else(|| format!("unknown domain {:?}", c.domain))?;
            if c.source.trim().is_empty() {
                return Err(format!("no source for {}", c.code));
            }
            let prefix = system == ICD10CM;
            entries.push((system.clone(), bare(&c.code), domain, prefix));
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.1.len()));
        Ok(ConditionCodes { entries })
    }

    pub fn shipped() -> &'static ConditionCodes {
        static TABLE: std::sync::OnceLock<ConditionCodes> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            ConditionCodes::parse(SHIPPED_CONDITION_CODES)
                .expect("profiles/sdoh-condition-codes.json is valid (tested)")
        })
    }

    /// The domain of one coding, if the table has it.
    pub fn domain(&self, system: &str, code: &str) -> Option<Domain> {
        let code = bare(code);
        self.entries
            .iter()
            .find(|(s, c, _, prefix)| {
                s == system
                    && if *prefix {
                        code.starts_with(c.as_str())
                    } else {
                        code == *c
                    }
            })
            .map(|e| e.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn rules() -> Rules {
        Rules::shipped()
    }

    fn code(c: &str) -> Answer {
        Answer::Code(c.into())
    }

    fn obs(id: &str, question: &str, answers: Vec<Answer>) -> Screen {
        Screen {
            reference: Some(format!("Observation/{id}")),
            date: Some(date!(2026 - 03 - 02)),
            source: Some("Community Health Plan".into()),
            questions: vec![question.into()],
            answers,
            ..Screen::default()
        }
    }

    fn state(list: &[DomainScreening], d: Domain) -> Option<&DomainScreening> {
        list.iter().find(|s| s.domain == d)
    }

    fn read_screens(screens: Vec<Screen>) -> Vec<DomainScreening> {
        read(
            &rules(),
            &Evidence {
                screens,
                concerns: vec![],
            },
        )
    }

    #[test]
    fn a_panel_without_interpretation_is_scored_by_its_codes() {
        // US Core AHC HRSN panel 96777-8 with hasMember items, no interpretation.
        let mut panel = obs("panel", "96777-8", vec![]);
        panel.members = vec![
            Screen {
                date: None,
                source: None,
                ..obs("m1", "71802-3", vec![code("LA31993-1")])
            },
            obs("m2", "88122-7", vec![code("LA28397-0")]),
            obs("m3", "93030-5", vec![code("LA32-8")]),
        ];
        let list = read_screens(vec![panel]);
        let food = state(&list, Domain::FoodInsecurity).unwrap();
        assert_eq!(food.finding, Finding::Positive);
        assert_eq!(food.date, Some(date!(2026 - 03 - 02)));
        assert_eq!(food.source.as_deref(), Some("Community Health Plan"));
        assert_eq!(food.evidence.as_deref(), Some("Observation/m2"));
        assert_eq!(
            state(&list, Domain::HousingInstability).unwrap().finding,
            Finding::Negative,
            "a member takes its panel's date and source"
        );
        assert_eq!(
            state(&list, Domain::TransportationInsecurity)
                .unwrap()
                .finding,
            Finding::Negative
        );
        assert!(state(&list, Domain::UtilityInsecurity).is_none(), "unknown");
    }

    #[test]
    fn a_hits_total_recorded_as_a_number_is_read_against_the_threshold() {
        // HITS total 95614-4: 11 or more is positive (CMS AHC HRSN).
        let twelve = read_screens(vec![obs("t", "95614-4", vec![Answer::Integer(12)])]);
        let ipv = state(&twelve, Domain::IntimatePartnerViolence).unwrap();
        assert_eq!(ipv.finding, Finding::Positive);
        assert_eq!(ipv.evidence.as_deref(), Some("Observation/t"));
        let ten = read_screens(vec![obs("t", "95614-4", vec![Answer::Integer(10)])]);
        assert_eq!(
            state(&ten, Domain::IntimatePartnerViolence)
                .unwrap()
                .finding,
            Finding::Negative
        );
    }

    #[test]
    fn hits_items_recorded_elsewhere_are_summed_with_the_shipped_scores() {
        // Four loose item Observations, no total, no interpretation:
        // 3 + 3 + 3 + 2 = 11.
        let items = ["95618-5", "95617-7", "95616-9", "95615-1"]
            .iter()
            .zip(["LA10082-8", "LA10082-8", "LA10082-8", "LA10066-1"])
            .map(|(q, a)| obs(q, q, vec![code(a)]))
            .collect();
        let list = read_screens(items);
        assert_eq!(
            state(&list, Domain::IntimatePartnerViolence)
                .unwrap()
                .finding,
            Finding::Positive
        );
        // Only one item: no total, so no result (not a negative).
        let one = read_screens(vec![obs("a", "95618-5", vec![code("LA6270-8")])]);
        assert!(state(&one, Domain::IntimatePartnerViolence).is_none());
    }

    #[test]
    fn declined_skipped_entered_in_error_and_cancelled_are_no_result() {
        let mut declined = obs("d", "93030-5", vec![]);
        declined.absent = Some(Absent::Declined);
        let mut choose_not = obs("c", "96779-4", vec![code("LA30122-8")]);
        choose_not.date = Some(date!(2026 - 03 - 03));
        let mut skipped = obs("s", "88122-7", vec![]);
        skipped.absent = Some(Absent::Skipped);
        let mut wrong = obs("w", "95614-4", vec![Answer::Integer(15)]);
        wrong.standing = Standing::NotAResult;
        let list = read_screens(vec![declined, choose_not, skipped, wrong]);
        assert_eq!(
            state(&list, Domain::TransportationInsecurity)
                .unwrap()
                .finding,
            Finding::Declined
        );
        assert!(!state(&list, Domain::UtilityInsecurity).unwrap().is_result());
        assert!(state(&list, Domain::FoodInsecurity).is_none());
        assert!(state(&list, Domain::IntimatePartnerViolence).is_none());
        // A later decline does not hide an earlier result.
        let mut earlier = obs("e", "93030-5", vec![code("LA33-6")]);
        earlier.date = Some(date!(2025 - 12 - 01));
        let mut later = obs("l", "93030-5", vec![]);
        later.absent = Some(Absent::Declined);
        let list = read_screens(vec![earlier, later]);
        let t = state(&list, Domain::TransportationInsecurity).unwrap();
        assert_eq!(
            (t.finding, t.date),
            (Finding::Positive, Some(date!(2025 - 12 - 01)))
        );
    }

    #[test]
    fn preliminary_is_a_result_labelled_as_such_and_final_wins_the_same_day() {
        let mut p = obs("p", "88122-7", vec![code("LA28397-0")]);
        p.standing = Standing::Preliminary;
        let list = read_screens(vec![p.clone()]);
        let food = state(&list, Domain::FoodInsecurity).unwrap();
        assert!(food.positive() && food.preliminary);
        let f = obs("f", "88123-5", vec![code("LA6729-3")]);
        let list = read_screens(vec![p, f]);
        assert!(!state(&list, Domain::FoodInsecurity).unwrap().preliminary);
    }

    #[test]
    fn an_interpretation_pos_counts_for_its_domain_categories() {
        // SDOHCC Observation Screening Response with a code the table does
        // not score, interpretation POS and a domain category.
        let mut o = obs("x", "88124-3", vec![code("LA19952-3")]);
        o.questions = vec!["99999-9".into()];
        o.domains = vec![Domain::FoodInsecurity];
        o.flagged_positive = true;
        let list = read_screens(vec![o.clone()]);
        assert!(state(&list, Domain::FoodInsecurity).unwrap().positive());
        // Without POS and without a rule: unknown, not negative.
        o.flagged_positive = false;
        assert!(read_screens(vec![o]).is_empty());
        // HVS risk item 88124-3 "At risk", scored by its code.
        let list = read_screens(vec![obs("r", "88124-3", vec![code("LA19952-3")])]);
        assert!(state(&list, Domain::FoodInsecurity).unwrap().positive());
    }

    fn concern(id: &str, domains: Vec<Domain>, verification: &str, clinical: &str) -> Concern {
        Concern {
            id: id.into(),
            version: None,
            domains,
            text: "Food insecurity".into(),
            verification: Some(verification.into()),
            clinical_status: Some(clinical.into()),
            recorded: Some(date!(2026 - 02 - 10)),
            onset: None,
            source: Some("Epic".into()),
        }
    }

    #[test]
    fn a_current_concern_is_positive_evidence_and_a_void_one_is_not() {
        let read_concerns = |c: Vec<Concern>| {
            read(
                &rules(),
                &Evidence {
                    screens: vec![],
                    concerns: c,
                },
            )
        };
        let list = read_concerns(vec![concern(
            "z",
            vec![Domain::FoodInsecurity],
            "confirmed",
            "active",
        )]);
        let food = &list[0];
        assert!(food.positive());
        assert_eq!(food.evidence.as_deref(), Some("Condition/z"));
        assert_eq!(food.source.as_deref(), Some("Epic"));
        for (v, c) in [
            ("refuted", "active"),
            ("entered-in-error", "active"),
            ("confirmed", "resolved"),
            ("confirmed", "inactive"),
        ] {
            assert!(
                read_concerns(vec![concern("z", vec![Domain::FoodInsecurity], v, c)]).is_empty(),
                "{v} {c}"
            );
        }
    }

    #[test]
    fn the_latest_day_wins_and_positive_wins_the_same_day() {
        let mut old = obs("o", "88122-7", vec![code("LA28397-0")]);
        old.date = Some(date!(2025 - 01 - 10));
        let new = obs("n", "88122-7", vec![code("LA28398-8")]);
        let list = read_screens(vec![old, new.clone()]);
        assert_eq!(
            state(&list, Domain::FoodInsecurity).unwrap().finding,
            Finding::Negative
        );
        let mut other_source = obs("p", "88123-5", vec![code("LA28397-0")]);
        other_source.source = Some("Portal".into());
        let list = read_screens(vec![new, other_source]);
        let food = state(&list, Domain::FoodInsecurity).unwrap();
        assert_eq!(
            (food.finding, food.source.as_deref()),
            (Finding::Positive, Some("Portal"))
        );
    }

    #[test]
    fn every_dated_result_counts_once_for_a_population_and_declined_or_undated_ones_not() {
        let mut old = obs("o", "88122-7", vec![code("LA28397-0")]);
        old.date = Some(date!(2025 - 01 - 10));
        let new = obs("n", "88122-7", vec![code("LA28398-8")]);
        let mut undated = obs("u", "88122-7", vec![code("LA28397-0")]);
        undated.date = None;
        let mut declined = obs("d", "93030-5", vec![]);
        declined.absent = Some(Absent::Declined);
        // The concern a screening raised on its own day counts once with it.
        let mut same_day = concern("z", vec![Domain::FoodInsecurity], "confirmed", "active");
        same_day.recorded = Some(date!(2025 - 01 - 10));
        let later = concern("y", vec![Domain::HousingInstability], "confirmed", "active");
        let list = results(
            &rules(),
            &Evidence {
                screens: vec![old, new, undated, declined],
                concerns: vec![same_day, later],
            },
        );
        let mut got: Vec<(Domain, Option<time::Date>, bool)> = list
            .iter()
            .map(|r| (r.domain, r.date, r.positive()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (Domain::FoodInsecurity, Some(date!(2025 - 01 - 10)), true),
                (Domain::FoodInsecurity, Some(date!(2026 - 03 - 02)), false),
                (
                    Domain::HousingInstability,
                    Some(date!(2026 - 02 - 10)),
                    true
                ),
            ]
        );
    }

    #[test]
    fn condition_codes_map_by_icd10_prefix_and_snomed_exactly() {
        let t = ConditionCodes::shipped();
        let snomed = "http://snomed.info/sct";
        assert_eq!(t.domain(ICD10CM, "Z59.41"), Some(Domain::FoodInsecurity));
        assert_eq!(t.domain(ICD10CM, "z5941"), Some(Domain::FoodInsecurity));
        assert_eq!(t.domain(ICD10CM, "Z59.12"), Some(Domain::UtilityInsecurity));
        assert_eq!(t.domain(ICD10CM, "Z59.19"), Some(Domain::InadequateHousing));
        assert_eq!(
            t.domain(ICD10CM, "Z59.811"),
            Some(Domain::HousingInstability)
        );
        assert_eq!(t.domain(ICD10CM, "Z59.89"), None);
        for ipv in [
            "T74.11XA", "T74.31XA", "T76.11XD", "Z91.410", "Z63.0", "Y07.03",
        ] {
            assert_eq!(
                t.domain(ICD10CM, ipv),
                Some(Domain::IntimatePartnerViolence),
                "{ipv}"
            );
        }
        assert_eq!(
            t.domain(ICD10CM, "T74.12XA"),
            None,
            "child abuse is not IPV"
        );
        assert_eq!(t.domain(snomed, "733423003"), Some(Domain::FoodInsecurity));
        assert_eq!(
            t.domain(snomed, "7334230030"),
            None,
            "SNOMED matches exactly"
        );
        assert_eq!(t.domain(snomed, "Z59.41"), None, "the system matters");
    }

    #[test]
    fn the_hits_answer_scores_are_those_of_the_questionnaire() {
        let scores = rules().answer_scores();
        assert_eq!(scores["LA6270-8"], 1);
        assert_eq!(scores["LA6482-9"], 5);
        assert_eq!(scores.len(), 5);
    }
}
