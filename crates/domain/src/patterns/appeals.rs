//! Appeals of denials: the share of denials that an appeal answers, the
//! share of decided appeals that overturn their denial, the decisions that
//! came later than the clock, and the time to a decision.
//!
//! Clocks: an expedited appeal is late when decided more than 72 hours after
//! filing (45 CFR 147.136, 42 CFR 422.572, 423.590, 438.410); a standard one
//! when decided more than 7 days after filing, the clock for standard
//! pre-service decisions (42 CFR 422.568(b)), used here for every kind.

use std::collections::HashSet;

use time::Duration;

use super::accumulator::{
    Accumulator, Appeal, F_EXP_LATE, F_EXP_ON_TIME, F_EXP_TIMED, F_LATE, F_ON_TIME, F_OUTCOME,
    F_OVERTURNED, F_STD_LATE, F_STD_ON_TIME, F_STD_TIMED, F_TIMED, F_UPHELD, left_out, norm,
};
use super::counters::{Histogram, Share, id_key};
use super::merge::{Raw, RawMedian, RawRate, ShownWith};

/// An expedited appeal decided later than this after filing is late.
pub const EXPEDITED_CLOCK_HOURS: i64 = 72;
/// A standard appeal decided later than this after filing is late
/// (standard pre-service decisions, 42 CFR 422.568(b)).
pub const STANDARD_CLOCK_DAYS: i64 = 7;

/// Decided appeals are counted for all of them, the expedited and the
/// standard ones, in this order (the indexes of `Appeals::timed` and
/// `Appeals::late`), each with its patients' flags: (decided, late, on time).
const CLOCK_FLAGS: [(u32, u32, u32); 3] = [
    (F_TIMED, F_LATE, F_ON_TIME),
    (F_EXP_TIMED, F_EXP_LATE, F_EXP_ON_TIME),
    (F_STD_TIMED, F_STD_LATE, F_STD_ON_TIME),
];

/// The rates of late decisions, in the order of [`CLOCK_FLAGS`]: (id, title,
/// definition).
const LATE_RATES: [(&str, &str, &str); 3] = [
    (
        "late-decisions",
        "Appeal decisions later than the clock",
        "Share of appeals filed in the period and decided whose decision came later than the clock: 72 hours from filing for an expedited appeal, 7 days for a standard one (the clock for standard pre-service decisions, 42 CFR 422.568(b)).",
    ),
    (
        "late-decisions-expedited",
        "Expedited appeal decisions later than 72 hours",
        "Share of expedited appeals filed in the period and decided whose decision came more than 72 hours after filing.",
    ),
    (
        "late-decisions-standard",
        "Standard appeal decisions later than 7 days",
        "Share of standard appeals filed in the period and decided whose decision came more than 7 days after filing (the clock for standard pre-service decisions, 42 CFR 422.568(b), used here for every kind of appeal).",
    ),
];

/// What the appeals leave for their measures.
#[derive(Default)]
pub(super) struct Appeals {
    /// Denial ids that some appeal answers (whenever filed).
    appealed: HashSet<u128>,
    /// The appeals filed in the period.
    ids: HashSet<u128>,
    outcomes: u64,
    overturned: u64,
    /// Decided appeals, and the late ones among them: all, expedited, standard.
    timed: [u64; 3],
    late: [u64; 3],
    decision_minutes: Histogram,
}

impl Accumulator {
    /// An appeal. Its link to a denial is kept whenever it was filed (so a
    /// denial late in the period appealed after it counts as appealed); the
    /// appeal itself is counted when filed in the period. Draft and
    /// entered-in-error appeals are left out; an id seen twice counts once.
    pub fn appeal(&mut self, a: Appeal) {
        self.counted.appeals += 1;
        if left_out(&norm(&a.status)) {
            return;
        }
        if let Some(denial) = &a.denial {
            self.appeals.appealed.insert(id_key(denial));
        }
        if !self.period.contains(a.filed.date()) || !self.appeals.ids.insert(id_key(&a.id)) {
            return;
        }
        let p = self.pid(&a.patient);
        let appeals = &mut self.appeals;
        let mut flags = 0;
        match a.outcome.as_deref().map(norm).as_deref() {
            Some("overturned" | "partly-overturned") => {
                appeals.outcomes += 1;
                appeals.overturned += 1;
                flags |= F_OUTCOME | F_OVERTURNED;
            }
            Some("upheld") => {
                appeals.outcomes += 1;
                flags |= F_OUTCOME | F_UPHELD;
            }
            _ => {}
        }
        if let Some(decided) = a.decided {
            let took = decided - a.filed;
            if !took.is_negative() {
                let expedited = a.expedited || norm(&a.kind) == "expedited-appeal";
                let (clock, which) = if expedited {
                    (Duration::hours(EXPEDITED_CLOCK_HOURS), 1)
                } else {
                    (Duration::days(STANDARD_CLOCK_DAYS), 2)
                };
                appeals.decision_minutes.add(took.whole_minutes());
                let late = took > clock;
                for k in [0, which] {
                    let (f_timed, f_late, f_on_time) = CLOCK_FLAGS[k];
                    appeals.timed[k] += 1;
                    flags |= f_timed;
                    if late {
                        appeals.late[k] += 1;
                        flags |= f_late;
                    } else {
                        flags |= f_on_time;
                    }
                }
            }
        }
        self.patients[p as usize].flags |= flags;
    }

    /// The appeal and overturn rates, the late decisions (all, expedited,
    /// standard) and the time to a decision.
    pub(super) fn finish_appeals(&self, raw: &mut Raw) {
        // Appeal rate: denials in the period that an appeal answers.
        let mut appealed = Share::new(self.patients.len());
        for (key, &p) in &self.denials.ids {
            appealed.add(p, self.appeals.appealed.contains(key));
        }
        let appeals = &self.appeals;
        raw.rates.push(RawRate::share(
            "appeal-rate",
            "Appeal rate",
            "Share of denials noticed in the period that an appeal answers (whenever it was filed).",
            &appealed,
        ));
        raw.rates.push(self.flagged_rate(
            "overturn-rate",
            "Overturn rate",
            "Share of appeals filed in the period and decided whose denial was overturned in full or in part.",
            (appeals.overturned, F_OVERTURNED),
            (appeals.outcomes, F_OUTCOME),
            F_UPHELD,
        ));
        for (k, (id, title, definition)) in LATE_RATES.into_iter().enumerate() {
            let (f_timed, f_late, f_on_time) = CLOCK_FLAGS[k];
            let rate = self.flagged_rate(
                id,
                title,
                definition,
                (appeals.late[k], f_late),
                (appeals.timed[k], f_timed),
                f_on_time,
            );
            // The share of all late decisions adds up the other two.
            raw.rates.push(if k == 0 {
                rate.shown_with(ShownWith::SumOf(&[
                    "late-decisions-expedited",
                    "late-decisions-standard",
                ]))
            } else {
                rate
            });
        }

        raw.medians.push(RawMedian::new(
            "time-to-decision",
            "Time to appeal decision",
            "Median days from filing to decision of the appeals filed in the period and decided.",
            appeals.decision_minutes.clone(),
            1440.0,
            self.flagged(F_TIMED),
        ));
    }

    /// A rate whose distinct patients are those with a flag: the records of
    /// its numerator and denominator, each with its patients' flag, and the
    /// flag of the patients of the rest.
    fn flagged_rate(
        &self,
        id: &str,
        title: &str,
        definition: &str,
        (num, num_flag): (u64, u32),
        (den, den_flag): (u64, u32),
        rest_flag: u32,
    ) -> RawRate {
        RawRate::new(
            id,
            title,
            definition,
            (num, self.flagged(num_flag)),
            (den, self.flagged(den_flag)),
            self.flagged(rest_flag),
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
    fn appeals_join_their_denials_in_any_order() {
        let mut a = acc();
        for i in 0..22 {
            let p = format!("p{i}");
            let filed = datetime!(2025-06-01 10:00 UTC);
            if i < 6 {
                // The appeal arrives before its denial.
                a.appeal(appeal(&format!("a{i}"), &p, Some(&format!("d{i}")), filed));
            }
            a.denial(denial(
                &format!("d{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 05 - 20),
            ));
            if (6..10).contains(&i) {
                a.appeal(appeal(&format!("a{i}"), &p, Some(&format!("d{i}")), filed));
            }
            if (10..11).contains(&i) {
                // Filed after the period: the denial was still appealed.
                a.appeal(appeal(
                    &format!("a{i}"),
                    &p,
                    Some(&format!("d{i}")),
                    datetime!(2026-01-03 10:00 UTC),
                ));
            }
        }
        // Answering a denial outside the period, or none: no effect.
        a.appeal(appeal(
            "x1",
            "q",
            Some("old"),
            datetime!(2025-02-01 10:00 UTC),
        ));
        a.denial(denial("old", "q", "Sunrise", "MRI", date!(2024 - 12 - 01)));
        a.appeal(appeal("x2", "q", None, datetime!(2025-02-01 10:00 UTC)));
        // A draft appeal is not one.
        let mut draft = appeal("x3", "p11", Some("d11"), datetime!(2025-06-01 10:00 UTC));
        draft.status = "draft".into();
        a.appeal(draft);
        let r = a.finish(NOW);
        let rate = r.rate("appeal-rate").unwrap();
        assert_eq!(
            (rate.numerator, rate.denominator, rate.percent),
            (Some(11), Some(22), Some(50.0))
        );
    }

    fn decided(
        id: &str,
        patient: &str,
        expedited: bool,
        hours: i64,
        minutes: i64,
        outcome: &str,
    ) -> Appeal {
        let filed = datetime!(2025-03-01 08:00 UTC);
        let mut a = appeal(id, patient, None, filed);
        a.expedited = expedited;
        a.decided = Some(filed + Duration::hours(hours) + Duration::minutes(minutes));
        a.outcome = Some(outcome.into());
        a.status = "completed".into();
        a
    }

    #[test]
    fn overturn_rate_counts_partly_overturned_and_decided_appeals_only() {
        let mut a = acc();
        for i in 0..6 {
            a.appeal(decided(
                &format!("o{i}"),
                &format!("o{i}"),
                false,
                24,
                0,
                "overturned",
            ));
        }
        for i in 0..5 {
            a.appeal(decided(
                &format!("q{i}"),
                &format!("q{i}"),
                false,
                24,
                0,
                "partly-overturned",
            ));
        }
        for i in 0..11 {
            a.appeal(decided(
                &format!("u{i}"),
                &format!("u{i}"),
                false,
                24,
                0,
                "upheld",
            ));
        }
        for i in 0..5 {
            a.appeal(appeal(
                &format!("w{i}"),
                &format!("w{i}"),
                None,
                datetime!(2025-03-01 08:00 UTC),
            ));
        }
        // Filed before the period.
        let mut early = decided("early2", "u1", false, 24, 0, "overturned");
        early.filed = datetime!(2024-12-31 23:00 UTC);
        a.appeal(early);
        let r = a.finish(NOW);
        let o = r.rate("overturn-rate").unwrap();
        assert_eq!(
            (o.numerator, o.denominator, o.percent),
            (Some(11), Some(22), Some(50.0))
        );
    }

    #[test]
    fn decisions_later_than_72_hours_or_7_days_are_late() {
        let mut a = acc();
        for i in 0..11 {
            a.appeal(decided(
                &format!("e-on{i}"),
                &format!("e-on{i}"),
                true,
                72,
                0,
                "upheld",
            ));
            a.appeal(decided(
                &format!("e-late{i}"),
                &format!("e-late{i}"),
                true,
                72,
                1,
                "upheld",
            ));
            a.appeal(decided(
                &format!("s-on{i}"),
                &format!("s-on{i}"),
                false,
                7 * 24,
                0,
                "upheld",
            ));
            a.appeal(decided(
                &format!("s-late{i}"),
                &format!("s-late{i}"),
                false,
                7 * 24 + 1,
                0,
                "upheld",
            ));
            a.appeal(decided(
                &format!("s-slow{i}"),
                &format!("s-slow{i}"),
                false,
                30 * 24,
                0,
                "upheld",
            ));
        }
        // An expedited kind is expedited.
        let mut k = decided("kind", "kind", false, 80, 0, "upheld");
        k.kind = "expedited-appeal".into();
        a.appeal(k);
        let r = a.finish(NOW);
        let e = r.rate("late-decisions-expedited").unwrap();
        assert_eq!((e.numerator, e.denominator), (Some(12), Some(23)));
        let s = r.rate("late-decisions-standard").unwrap();
        assert_eq!((s.numerator, s.denominator), (Some(22), Some(33)));
        let all = r.rate("late-decisions").unwrap();
        assert_eq!((all.numerator, all.denominator), (Some(34), Some(56)));
        assert!(all.definition.contains("42 CFR 422.568(b)"));
        // Median of 56: sorted 72h×11, 72h01×11, 80h, 168h×11, 169h×11, 720h×11;
        // positions 27 and 28 (from 0) are both 168 h → 7 days.
        let m = r.median("time-to-decision").unwrap();
        assert_eq!((m.days, m.n), (Some(7.0), Some(56)));
    }
}
