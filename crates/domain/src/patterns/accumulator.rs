//! The accumulation state: the period, the records the measures read (plain
//! values, as the FHIR reader gives them), the facts kept per patient, and
//! the [`Accumulator`] that takes the records as they stream in.
//!
//! Each measure family adds its own `impl Accumulator` in its module: how a
//! record of its kind is counted, and what its measures are once every
//! record is in. [`Accumulator::finish_raw`] calls those finishing steps in
//! the order of the report's tables, rates, medians and trends.

use std::collections::HashMap;

use serde::Serialize;
use time::{Date, Month, OffsetDateTime};

use super::UNKNOWN;
use super::appeals::Appeals;
use super::counters::{Keyed, Labels, id_key};
use super::coverage::Coverage;
use super::denials::Denials;
use super::export::Report;
use super::merge::{Raw, RawTable, raw_table};
use super::referrals::Referrals;
use super::screening::Screening;

/// A period of whole days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Date,
    pub end: Date,
}

impl Period {
    /// Whether `d` falls in the period (both ends included).
    pub fn contains(&self, d: Date) -> bool {
        self.start <= d && d <= self.end
    }

    /// The months the period touches, as "YYYY-MM", in order.
    pub fn months(&self) -> Vec<String> {
        (0..self.month_count())
            .map(|i| {
                let (y, m) = self.month_at(i);
                format!("{y:04}-{:02}", m as u8)
            })
            .collect()
    }

    pub(super) fn month_count(&self) -> usize {
        if self.start > self.end {
            return 0;
        }
        (month_number(self.end) - month_number(self.start) + 1) as usize
    }

    /// The index of `d`'s month among [`Period::months`], when `d` is in the period.
    pub(super) fn month_index(&self, d: Date) -> Option<usize> {
        self.contains(d)
            .then(|| (month_number(d) - month_number(self.start)) as usize)
    }

    fn month_at(&self, i: usize) -> (i32, Month) {
        let n = month_number(self.start) + i as i32;
        let year = n.div_euclid(12);
        let month = Month::try_from((n.rem_euclid(12) + 1) as u8).expect("1..=12");
        (year, month)
    }

    /// The last day of month `i` of the period, or the period's end if earlier.
    pub(super) fn month_last_day(&self, i: usize) -> Date {
        let (y, m) = self.month_at(i);
        let last = Date::from_calendar_date(y, m, m.length(y)).expect("a valid day");
        last.min(self.end)
    }
}

fn month_number(d: Date) -> i32 {
    d.year() * 12 + d.month() as i32 - 1
}

/// What a patient's breakdowns use; nothing that names them.
#[derive(Debug, Clone, Default)]
pub struct PatientFacts {
    /// First 3 digits of the ZIP code.
    pub postal_area: Option<String>,
    /// BCP 47 primary language subtag.
    pub language: Option<String>,
    /// Administrative gender.
    pub sex: Option<String>,
    pub birth_date: Option<Date>,
}

/// A denied claim or prior authorization: a ClaimResponse, or a denial
/// entered by hand from the payer's notice, which its appeal Task records.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// ClaimResponse id, or `Task/{id}` of the appeal recording a hand-entered one.
    pub id: String,
    pub patient: String,
    pub payer: String,
    /// Coverage type label.
    pub plan_type: Option<String>,
    /// "code display" of the drug or service.
    pub item: Option<String>,
    /// Reason codes.
    pub reasons: Vec<String>,
    /// Date of the notice.
    pub date: Date,
}

/// An appeal (a Task).
#[derive(Debug, Clone, PartialEq)]
pub struct Appeal {
    pub id: String,
    pub patient: String,
    /// Id of the denial it answers (as in [`Denial::id`]).
    pub denial: Option<String>,
    pub kind: String,
    pub expedited: bool,
    pub filed: OffsetDateTime,
    /// When completed (decision known).
    pub decided: Option<OffsetDateTime>,
    /// overturned | partly-overturned | upheld
    pub outcome: Option<String>,
    /// Task status.
    pub status: String,
}

/// A referral (an SDOHCC Task fulfilling a ServiceRequest).
#[derive(Debug, Clone, PartialEq)]
pub struct Referral {
    pub id: String,
    pub patient: String,
    /// SDOHCC category code.
    pub domain: Option<String>,
    pub service: Option<String>,
    pub authored: Date,
    pub accepted: Option<Date>,
    /// Completed.
    pub closed: Option<Date>,
    /// Task status.
    pub status: String,
}

/// One domain's result of a screening.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub patient: String,
    pub date: Date,
    /// SDOHCC category code.
    pub domain: String,
    pub positive: bool,
}

/// A visit (an Encounter).
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub patient: String,
    pub date: Date,
}

/// A Coverage's period and whether its status is active.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageSpan {
    pub patient: String,
    pub start: Option<Date>,
    pub end: Option<Date>,
    /// Status active.
    pub active: bool,
    /// The payer's name, for the breakdowns by the patient's payer.
    pub payer: Option<String>,
}

/// Raw counts of the records given to the accumulator, whatever their date
/// and including duplicates and records the measures leave out (for progress
/// and checks; not broken down, so not suppressed).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counted {
    pub patients: u64,
    pub denials: u64,
    pub appeals: u64,
    pub referrals: u64,
    pub screens: u64,
    pub visits: u64,
    pub coverages: u64,
}

// Per-patient flags, set as appeals and referrals stream in; they give the
// distinct patients behind the rates and medians without keeping records.
pub(super) const F_OUTCOME: u32 = 1 << 0;
pub(super) const F_OVERTURNED: u32 = 1 << 1;
pub(super) const F_UPHELD: u32 = 1 << 2;
pub(super) const F_TIMED: u32 = 1 << 3;
pub(super) const F_LATE: u32 = 1 << 4;
pub(super) const F_ON_TIME: u32 = 1 << 5;
pub(super) const F_EXP_TIMED: u32 = 1 << 6;
pub(super) const F_EXP_LATE: u32 = 1 << 7;
pub(super) const F_EXP_ON_TIME: u32 = 1 << 8;
pub(super) const F_STD_TIMED: u32 = 1 << 9;
pub(super) const F_STD_LATE: u32 = 1 << 10;
pub(super) const F_STD_ON_TIME: u32 = 1 << 11;
pub(super) const F_ACCEPTED: u32 = 1 << 12;
pub(super) const F_CLOSED: u32 = 1 << 13;

#[derive(Default, Clone)]
pub(super) struct PatientState {
    pub(super) postal: Option<u32>,
    pub(super) language: Option<u32>,
    pub(super) sex: Option<u32>,
    pub(super) birth: Option<Date>,
    /// The payer of the coverage active on the period's last day (the one
    /// that began last, when several are), with its start.
    pub(super) payer: Option<(u32, Option<Date>)>,
    pub(super) denials: u32,
    pub(super) referrals: u32,
    pub(super) positives: u32,
    pub(super) flags: u32,
}

/// Task statuses whose records no measure counts.
pub(super) fn left_out(status: &str) -> bool {
    matches!(status, "entered-in-error" | "draft")
}

pub(super) fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// Takes records as they stream in and folds them into compact counts.
pub struct Accumulator {
    pub(super) period: Period,
    pub(super) counted: Counted,
    pub(super) labels: Labels,
    patient_index: HashMap<u128, u32>,
    pub(super) patients: Vec<PatientState>,
    pub(super) denials: Denials,
    pub(super) appeals: Appeals,
    pub(super) referrals: Referrals,
    pub(super) screening: Screening,
    pub(super) coverage: Coverage,
}

impl Accumulator {
    pub fn new(period: Period) -> Self {
        let months = period.month_count();
        Accumulator {
            period,
            counted: Counted::default(),
            labels: Labels::default(),
            patient_index: HashMap::new(),
            patients: Vec::new(),
            denials: Denials::new(months),
            appeals: Appeals::default(),
            referrals: Referrals::default(),
            screening: Screening::new(months),
            coverage: Coverage::default(),
        }
    }

    pub(super) fn pid(&mut self, id: &str) -> u32 {
        let next = self.patients.len() as u32;
        let p = *self.patient_index.entry(id_key(id)).or_insert(next);
        if p == next {
            self.patients.push(PatientState::default());
        }
        p
    }

    pub(super) fn label(&mut self, value: Option<&str>) -> u32 {
        self.labels.id(value.unwrap_or(UNKNOWN))
    }

    /// A patient's facts; before or after their other records. Given twice,
    /// the later facts win.
    pub fn patient(&mut self, id: &str, facts: PatientFacts) {
        self.counted.patients += 1;
        let p = self.pid(id);
        let postal = facts.postal_area.as_deref().map(|s| self.labels.id(s));
        let language = facts.language.as_deref().map(|s| self.labels.id(&norm(s)));
        let sex = facts.sex.as_deref().map(|s| self.labels.id(&norm(s)));
        let st = &mut self.patients[p as usize];
        st.postal = postal;
        st.language = language;
        st.sex = sex;
        st.birth = facts.birth_date;
    }

    /// Every measure, suppressed by [`SUPPRESSION_RULE`](super::SUPPRESSION_RULE).
    pub fn finish(self, computed: OffsetDateTime) -> Report {
        self.finish_raw().suppress(computed)
    }

    /// Every measure's counts before suppression: what the computations of
    /// disjoint sets of patients add up ([`Raw::merge`]).
    ///
    /// Each family adds its tables, rates, medians and trends to the same
    /// lists, so the order of the calls is the report's order: denials,
    /// appeals, referrals, coverage, screening, then the breakdowns by the
    /// patients' facts.
    pub fn finish_raw(mut self) -> Raw {
        let mut raw = Raw {
            period: Some(self.period),
            ..Raw::default()
        };
        // The joins of referrals and screens need the positive screens in order.
        self.screening.sort_positives();
        self.finish_denials(&mut raw);
        self.finish_appeals(&mut raw);
        self.finish_referrals(&mut raw);
        self.finish_coverage(&mut raw);
        let unmet = self.finish_screening(&mut raw);
        self.finish_breakdowns(&unmet, &mut raw);
        raw.counted = self.counted;
        raw
    }

    /// The patients with `flag` set.
    pub(super) fn flagged(&self, flag: u32) -> u64 {
        self.patients.iter().filter(|s| s.flags & flag != 0).count() as u64
    }

    /// A table of counts by label (the keys are interned labels).
    pub(super) fn keyed_table(
        &self,
        id: &str,
        title: &str,
        definition: &str,
        dimension: &str,
        unit: &str,
        k: &Keyed<u32>,
    ) -> RawTable {
        let cells = k
            .cells()
            .into_iter()
            .map(|(key, v, p)| (self.labels.name(key).to_owned(), v, p))
            .collect();
        raw_table(
            id,
            title,
            definition,
            dimension,
            unit,
            cells,
            k.distinct_patients(self.patients.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::fixtures::*;
    use time::Duration;
    use time::macros::{date, datetime};

    #[test]
    fn periods_include_both_ends_and_list_their_months() {
        assert!(YEAR.contains(date!(2025 - 01 - 01)));
        assert!(YEAR.contains(date!(2025 - 12 - 31)));
        assert!(!YEAR.contains(date!(2024 - 12 - 31)));
        assert!(!YEAR.contains(date!(2026 - 01 - 01)));
        let p = Period {
            start: date!(2024 - 11 - 20),
            end: date!(2025 - 02 - 03),
        };
        assert_eq!(p.months(), ["2024-11", "2024-12", "2025-01", "2025-02"]);
        assert_eq!(p.month_last_day(0), date!(2024 - 11 - 30));
        assert_eq!(p.month_last_day(3), date!(2025 - 02 - 03));
        let empty = Period {
            start: date!(2025 - 02 - 01),
            end: date!(2025 - 01 - 01),
        };
        assert!(empty.months().is_empty());
    }

    #[test]
    fn a_hundred_thousand_records_stream_through() {
        let mut a = Accumulator::new(YEAR);
        let domains = [
            "food-insecurity",
            "housing-instability",
            "transportation-insecurity",
        ];
        let n = 10_000;
        for i in 0..n {
            let p = format!("patient-{i}");
            let day = YEAR.start + Duration::days((i % 365) as i64);
            a.denial(denial(
                &format!("d{i}"),
                &p,
                ["A", "B", "C"][i % 3],
                ["X", "Y"][i % 2],
                day,
            ));
            let mut ap = appeal(
                &format!("a{i}"),
                &p,
                Some(&format!("d{i}")),
                datetime!(2025-06-01 10:00 UTC),
            );
            ap.decided = Some(datetime!(2025-06-03 10:00 UTC));
            ap.outcome = Some(if i % 4 == 0 { "overturned" } else { "upheld" }.into());
            a.appeal(ap);
            let mut r = referral(&format!("r{i}"), &p, domains[i % 3], day, "completed");
            r.accepted = Some(day + Duration::days(2));
            r.closed = Some(day + Duration::days(20));
            a.referral(r);
            a.screen(screen(&p, day, domains[i % 3], true));
            a.screen(screen(&p, day, domains[(i + 1) % 3], i % 5 == 0));
            a.visit(Visit {
                patient: p.clone(),
                date: day,
            });
            a.visit(Visit {
                patient: p.clone(),
                date: day + Duration::days(100),
            });
            a.coverage(span(&p, None, Some(day), true));
            a.coverage(span(&p, Some(day + Duration::days(1)), None, i % 10 != 0));
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some(["627", "606", "618"][i % 3].into()),
                    language: Some(["en", "es"][i % 2].into()),
                    sex: Some(["female", "male"][i % 2].into()),
                    birth_date: Some(date!(1960 - 01 - 01) + Duration::days((i * 7) as i64)),
                },
            );
        }
        let r = a.finish(NOW);
        let n = n as u64;
        assert_eq!(
            r.counted,
            Counted {
                patients: n,
                denials: n,
                appeals: n,
                referrals: n,
                screens: 2 * n,
                visits: 2 * n,
                coverages: 2 * n
            }
        );
        assert_eq!(r.table("denials-by-payer").unwrap().total, Some(n));
        assert_eq!(r.rate("appeal-rate").unwrap().percent, Some(100.0));
        assert_eq!(r.rate("overturn-rate").unwrap().percent, Some(25.0));
        assert_eq!(
            r.rate("referrals-closed-within-60-days").unwrap().percent,
            Some(100.0)
        );
        assert_eq!(r.median("time-to-decision").unwrap().days, Some(2.0));
        assert_eq!(r.median("time-to-close").unwrap().days, Some(20.0));
        assert_eq!(r.repeated.len(), 6);
        serde_json::to_string(&r).unwrap();
    }
}
