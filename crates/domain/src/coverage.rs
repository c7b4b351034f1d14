//! Coverage: which appeal regime a plan falls under, and the gaps a clinician
//! should see at a glance (no active coverage, coverage ending soon, lapsed
//! Medicaid).
//!
//! The regimes are data (`profiles/appeal-regimes.json`), not code, so that a
//! practice can correct a filing window when a rule changes.

use serde::Deserialize;
use time::{Date, Duration};

/// Days before the end of a coverage period at which it is flagged as ending soon.
pub const ENDING_SOON_DAYS: i64 = 30;

/// The regime table shipped with Passerelle.
pub const SHIPPED_REGIMES: &str = include_str!("../../../profiles/appeal-regimes.json");

/// One appeal regime: how long a patient has to file, and from when.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Regime {
    pub id: String,
    pub label: String,
    pub citation: String,
    pub file_within_days: i64,
    #[serde(default)]
    pub receipt_offset_days: i64,
    #[serde(default)]
    pub expedited_decision_hours: Option<u32>,
    /// The rule that applied to notices dated before a change of regulation.
    #[serde(default)]
    pub earlier_rule: Option<EarlierRule>,
    pub payer_type_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EarlierRule {
    #[serde(with = "iso_date")]
    pub before: Date,
    pub file_within_days: i64,
}

/// The ordered table of regimes; the first match wins.
#[derive(Debug, Clone, Deserialize)]
pub struct RegimeTable {
    pub payer_type_system: String,
    pub regimes: Vec<Regime>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegimeTableError {
    #[error("the appeal regime table is not valid JSON of the expected shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("regime {0} has no payer-type prefix, so it could never match")]
    NoPrefix(String),
    #[error("regime {0} has a filing window of {1} days")]
    BadWindow(String, i64),
}

impl RegimeTable {
    /// Parse and check a table; the only way to get one.
    pub fn parse(json: &str) -> Result<Self, RegimeTableError> {
        let table: RegimeTable = serde_json::from_str(json)?;
        for r in &table.regimes {
            if r.payer_type_prefixes.is_empty() {
                return Err(RegimeTableError::NoPrefix(r.id.clone()));
            }
            if r.file_within_days <= 0 {
                return Err(RegimeTableError::BadWindow(
                    r.id.clone(),
                    r.file_within_days,
                ));
            }
        }
        Ok(table)
    }

    pub fn shipped() -> Self {
        Self::parse(SHIPPED_REGIMES).expect("the shipped regime table is valid (tested)")
    }

    /// The regime implied by a coverage's type codes, if any rule matches.
    pub fn regime_for(&self, types: &[Code]) -> Option<&Regime> {
        let codes: Vec<&str> = types
            .iter()
            .filter(|c| c.system.as_deref() == Some(self.payer_type_system.as_str()))
            .map(|c| c.code.as_str())
            .collect();
        self.regimes.iter().find(|r| {
            codes.iter().any(|code| {
                r.payer_type_prefixes
                    .iter()
                    .any(|p| code.starts_with(p.as_str()))
            })
        })
    }
}

impl Regime {
    /// Last day to file an appeal of a denial whose notice is dated `notice`.
    pub fn filing_deadline(&self, notice: Date) -> Date {
        let days = match &self.earlier_rule {
            Some(earlier) if notice < earlier.before => earlier.file_within_days,
            _ => self.file_within_days,
        };
        notice + Duration::days(self.receipt_offset_days + days)
    }
}

/// Days before a filing deadline at which an appeal is flagged: warnings at
/// 14, 3 and 1 days before it, so a two-week notice leaves time to gather
/// records and the last two catch an appeal nobody has filed yet.
pub const WARNING_DAYS: [i64; 3] = [14, 3, 1];

/// How close an appeal is to its filing deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineWarning {
    /// Within `threshold` days (one of [`WARNING_DAYS`]); `days_left` ≥ 0.
    DueSoon { threshold: i64, days_left: i64 },
    /// The deadline has passed.
    Overdue { days_late: i64 },
}

/// The warning for a filing `deadline` on `today`, if any.
pub fn deadline_warning(deadline: Date, today: Date) -> Option<DeadlineWarning> {
    let days_left = (deadline - today).whole_days();
    if days_left < 0 {
        return Some(DeadlineWarning::Overdue {
            days_late: -days_left,
        });
    }
    WARNING_DAYS
        .iter()
        .rev()
        .find(|t| days_left <= **t)
        .map(|t| DeadlineWarning::DueSoon {
            threshold: *t,
            days_left,
        })
}

impl Regime {
    /// When an expedited (urgent) appeal must be decided: the regime's hours
    /// after the request, where the regime has an expedited clock.
    pub fn expedited_decision_due(
        &self,
        requested: time::OffsetDateTime,
    ) -> Option<time::OffsetDateTime> {
        self.expedited_decision_hours
            .map(|h| requested + Duration::hours(i64::from(h)))
    }
}

/// A coded value as read from FHIR: enough to match and to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Code {
    pub system: Option<String>,
    pub code: String,
    pub display: Option<String>,
}

/// FHIR `Coverage.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoverageStatus {
    Active,
    Cancelled,
    Draft,
    EnteredInError,
}

/// What the visit page needs of one Coverage.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageFacts {
    pub id: String,
    pub status: CoverageStatus,
    pub payer: String,
    pub plan: Option<String>,
    pub group: Option<String>,
    pub member_id: Option<String>,
    pub types: Vec<Code>,
    pub type_label: Option<String>,
    pub start: Option<Date>,
    pub end: Option<Date>,
    /// Cost to the beneficiary, already formatted ("Copay: 20 USD").
    pub costs: Vec<String>,
}

impl CoverageFacts {
    /// Active on `today`: status active and `today` inside the period.
    pub fn is_active_on(&self, today: Date) -> bool {
        self.status == CoverageStatus::Active
            && self.start.is_none_or(|s| s <= today)
            && self.end.is_none_or(|e| e >= today)
    }

    /// Medicaid by payer type (PHDSC 2x), the plan's own words aside.
    pub fn is_medicaid(&self, payer_type_system: &str) -> bool {
        self.types
            .iter()
            .any(|c| c.system.as_deref() == Some(payer_type_system) && c.code.starts_with('2'))
    }
}

/// A gap worth a clinician's attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoverageGap {
    /// No coverage is active today.
    NoActiveCoverage,
    /// An active coverage ends within [`ENDING_SOON_DAYS`].
    EndsSoon {
        coverage_id: String,
        end: Date,
        days_left: i64,
    },
    /// Medicaid ended (or was cancelled) and no Medicaid coverage is active.
    LapsedMedicaid {
        coverage_id: String,
        ended: Option<Date>,
    },
}

/// One coverage card: facts, regime and its own gaps.
#[derive(Debug, Clone)]
pub struct CoverageCard {
    pub facts: CoverageFacts,
    pub regime: Option<Regime>,
    pub active: bool,
    pub gaps: Vec<CoverageGap>,
}

/// The patient's coverage as the visit page shows it: cards, active first,
/// and the gaps that concern the patient as a whole.
#[derive(Debug, Clone)]
pub struct CoverageSummary {
    pub cards: Vec<CoverageCard>,
    pub gaps: Vec<CoverageGap>,
}

/// Assess a patient's coverages on `today`.
pub fn assess(coverages: Vec<CoverageFacts>, table: &RegimeTable, today: Date) -> CoverageSummary {
    let any_active = coverages.iter().any(|c| c.is_active_on(today));
    let medicaid_active = coverages
        .iter()
        .any(|c| c.is_active_on(today) && c.is_medicaid(&table.payer_type_system));
    let mut gaps = Vec::new();
    if !any_active {
        gaps.push(CoverageGap::NoActiveCoverage);
    }
    let mut cards: Vec<CoverageCard> = coverages
        .into_iter()
        .filter(|c| c.status != CoverageStatus::EnteredInError)
        .map(|facts| {
            let active = facts.is_active_on(today);
            let mut own = Vec::new();
            if let (true, Some(end)) = (active, facts.end) {
                let days_left = (end - today).whole_days();
                if days_left <= ENDING_SOON_DAYS {
                    own.push(CoverageGap::EndsSoon {
                        coverage_id: facts.id.clone(),
                        end,
                        days_left,
                    });
                }
            }
            let ended =
                facts.status == CoverageStatus::Cancelled || facts.end.is_some_and(|e| e < today);
            if ended && !medicaid_active && facts.is_medicaid(&table.payer_type_system) {
                own.push(CoverageGap::LapsedMedicaid {
                    coverage_id: facts.id.clone(),
                    ended: facts.end,
                });
            }
            let regime = table.regime_for(&facts.types).cloned();
            CoverageCard {
                facts,
                regime,
                active,
                gaps: own,
            }
        })
        .collect();
    // Active coverage first, then the most recently ended.
    cards.sort_by_key(|c| (!c.active, std::cmp::Reverse(c.facts.end)));
    gaps.extend(cards.iter().flat_map(|c| c.gaps.iter().cloned()));
    CoverageSummary { cards, gaps }
}

mod iso_date {
    use serde::{Deserialize, Deserializer};
    use time::Date;
    use time::macros::format_description;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        Date::parse(&s, format_description!("[year]-[month]-[day]"))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const SOPT: &str = "urn:oid:2.16.840.1.113883.3.221.5";

    fn sopt(code: &str) -> Vec<Code> {
        vec![Code {
            system: Some(SOPT.into()),
            code: code.into(),
            display: None,
        }]
    }

    fn coverage(id: &str, code: &str, start: Option<Date>, end: Option<Date>) -> CoverageFacts {
        CoverageFacts {
            id: id.into(),
            status: CoverageStatus::Active,
            payer: "Payer".into(),
            plan: None,
            group: None,
            member_id: None,
            types: sopt(code),
            type_label: None,
            start,
            end,
            costs: vec![],
        }
    }

    #[test]
    fn shipped_table_parses_and_maps_each_payer_type() {
        let t = RegimeTable::shipped();
        let id = |code: &str| t.regime_for(&sopt(code)).map(|r| r.id.as_str());
        assert_eq!(id("122"), Some("medicare-part-d"));
        assert_eq!(id("121"), Some("medicare-ab"));
        assert_eq!(id("111"), Some("medicare-advantage"));
        assert_eq!(id("211"), Some("medicaid-managed-care"));
        assert_eq!(id("51"), Some("aca-employer"));
        assert_eq!(id("6"), Some("aca-employer"));
        // Roots that do not say which regime applies match none.
        assert_eq!(id("1"), None);
        assert_eq!(id("2"), None);
        assert_eq!(id("22"), None);
        assert_eq!(id("81"), None);
        // A code from another system never matches, whatever its digits.
        let other = vec![Code {
            system: Some("http://example.org".into()),
            code: "122".into(),
            display: None,
        }];
        assert!(t.regime_for(&other).is_none());
    }

    #[test]
    fn deadlines_follow_each_regime() {
        let t = RegimeTable::shipped();
        let r = |id: &str| t.regimes.iter().find(|r| r.id == id).unwrap().clone();
        let notice = date!(2026 - 03 - 02);
        assert_eq!(
            r("aca-employer").filing_deadline(notice),
            date!(2026 - 08 - 29)
        );
        // 120 days from presumed receipt 5 days after the notice.
        assert_eq!(
            r("medicare-ab").filing_deadline(notice),
            date!(2026 - 07 - 05)
        );
        assert_eq!(
            r("medicare-part-d").filing_deadline(notice),
            date!(2026 - 05 - 06)
        );
        assert_eq!(
            r("medicaid-managed-care").filing_deadline(notice),
            date!(2026 - 05 - 01)
        );
        assert_eq!(
            r("medicare-advantage").filing_deadline(notice),
            date!(2026 - 05 - 06)
        );
        // A Medicare Advantage notice from before 2025 keeps the 60-day window.
        assert_eq!(
            r("medicare-advantage").filing_deadline(date!(2024 - 12 - 02)),
            date!(2025 - 01 - 31)
        );
    }

    #[test]
    fn deadlines_from_a_friday_across_a_leap_day_and_expedited() {
        let t = RegimeTable::shipped();
        let r = |id: &str| t.regimes.iter().find(|r| r.id == id).unwrap().clone();
        // A notice dated Friday 2027-12-31: calendar days, weekends included.
        let friday = date!(2027 - 12 - 31);
        assert_eq!(friday.weekday(), time::Weekday::Friday);
        assert_eq!(
            r("medicaid-managed-care").filing_deadline(friday),
            date!(2028 - 02 - 29),
            "60 days, into a leap February"
        );
        assert_eq!(
            r("medicare-part-d").filing_deadline(friday),
            date!(2028 - 03 - 05)
        );
        assert_eq!(
            r("medicare-ab").filing_deadline(friday),
            date!(2028 - 05 - 04),
            "5 days to presumed receipt, then 120"
        );
        assert_eq!(
            r("aca-employer").filing_deadline(friday),
            date!(2028 - 06 - 28)
        );
        // Across 29 February 2028 versus a common year.
        assert_eq!(
            r("medicaid-managed-care").filing_deadline(date!(2028 - 02 - 01)),
            date!(2028 - 04 - 01)
        );
        assert_eq!(
            r("medicaid-managed-care").filing_deadline(date!(2027 - 02 - 01)),
            date!(2027 - 04 - 02)
        );
        // Expedited: 72 hours from the request, where the regime has a clock.
        let asked = time::macros::datetime!(2028-02-28 16:30 -5);
        assert_eq!(
            r("medicare-advantage").expedited_decision_due(asked),
            Some(time::macros::datetime!(2028-03-02 16:30 -5))
        );
        assert_eq!(r("medicare-ab").expedited_decision_due(asked), None);
    }

    #[test]
    fn warnings_at_14_3_and_1_days_then_overdue() {
        let deadline = date!(2026 - 12 - 31);
        let w = |today| deadline_warning(deadline, today);
        assert_eq!(w(date!(2026 - 12 - 16)), None, "15 days left");
        assert_eq!(
            w(date!(2026 - 12 - 17)),
            Some(DeadlineWarning::DueSoon {
                threshold: 14,
                days_left: 14
            })
        );
        assert_eq!(
            w(date!(2026 - 12 - 28)),
            Some(DeadlineWarning::DueSoon {
                threshold: 3,
                days_left: 3
            })
        );
        assert_eq!(
            w(date!(2026 - 12 - 30)),
            Some(DeadlineWarning::DueSoon {
                threshold: 1,
                days_left: 1
            })
        );
        assert_eq!(
            w(date!(2026 - 12 - 31)),
            Some(DeadlineWarning::DueSoon {
                threshold: 1,
                days_left: 0
            })
        );
        assert_eq!(
            w(date!(2027 - 01 - 02)),
            Some(DeadlineWarning::Overdue { days_late: 2 })
        );
    }

    #[test]
    fn table_errors_are_clear() {
        let err = RegimeTable::parse(r#"{"payer_type_system":"x","regimes":[{"id":"a","label":"A","citation":"c","file_within_days":10,"payer_type_prefixes":[]}]}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "regime a has no payer-type prefix, so it could never match"
        );
        assert!(RegimeTable::parse("{").is_err());
    }

    #[test]
    fn gaps_no_active_ending_soon_and_lapsed_medicaid() {
        let t = RegimeTable::shipped();
        let today = date!(2026 - 11 - 22);
        // Nothing at all.
        assert_eq!(
            assess(vec![], &t, today).gaps,
            vec![CoverageGap::NoActiveCoverage]
        );
        // Active, ending in 30 days exactly: flagged; in 31: not.
        let s = assess(
            vec![coverage("a", "51", None, Some(date!(2026 - 12 - 22)))],
            &t,
            today,
        );
        assert_eq!(
            s.gaps,
            vec![CoverageGap::EndsSoon {
                coverage_id: "a".into(),
                end: date!(2026 - 12 - 22),
                days_left: 30
            }]
        );
        assert!(
            assess(
                vec![coverage("a", "51", None, Some(date!(2026 - 12 - 23)))],
                &t,
                today
            )
            .gaps
            .is_empty()
        );
        // Medicaid that ended, nothing active: two gaps.
        let s = assess(
            vec![coverage("m", "211", None, Some(date!(2026 - 10 - 31)))],
            &t,
            today,
        );
        assert_eq!(
            s.gaps,
            vec![
                CoverageGap::NoActiveCoverage,
                CoverageGap::LapsedMedicaid {
                    coverage_id: "m".into(),
                    ended: Some(date!(2026 - 10 - 31))
                }
            ]
        );
        // Old Medicaid replaced by a new Medicaid period: no lapse.
        let s = assess(
            vec![
                coverage("old", "211", None, Some(date!(2025 - 12 - 31))),
                coverage("new", "211", Some(date!(2026 - 01 - 01)), None),
            ],
            &t,
            today,
        );
        assert!(s.gaps.is_empty());
        assert_eq!(s.cards[0].facts.id, "new", "active coverage comes first");
        // Cancelled status counts as ended; entered-in-error is not shown.
        let mut c = coverage("x", "211", None, None);
        c.status = CoverageStatus::Cancelled;
        let mut e = coverage("e", "51", None, None);
        e.status = CoverageStatus::EnteredInError;
        let s = assess(vec![c, e], &t, today);
        assert_eq!(s.cards.len(), 1);
        assert!(s.gaps.contains(&CoverageGap::LapsedMedicaid {
            coverage_id: "x".into(),
            ended: None
        }));
    }
}
