//! Coverage: lapses (a coverage ending in the period with no other active
//! coverage of the patient on the next day) and gaps (patients with a
//! coverage on record but none active on a month's last day), month by
//! month; and the payer of the coverage active on the period's last day,
//! which the breakdowns by payer use.

use time::Date;

use super::accumulator::{Accumulator, CoverageSpan, Period};
use super::counters::Monthly;
use super::merge::{Raw, RawTrend};

/// A coverage's period and status, by patient index.
#[derive(Clone, Copy)]
struct Span {
    patient: u32,
    start: Option<Date>,
    end: Option<Date>,
    active: bool,
}

impl Span {
    fn covers(&self, d: Date) -> bool {
        self.start.is_none_or(|s| s <= d) && self.end.is_none_or(|e| d <= e)
    }
}

/// The coverages that can affect a measure of the period.
#[derive(Default)]
pub(super) struct Coverage {
    spans: Vec<Span>,
}

impl Accumulator {
    /// A coverage period; those starting after the day following the
    /// period's end can affect no measure and are ignored.
    pub fn coverage(&mut self, c: CoverageSpan) {
        self.counted.coverages += 1;
        let horizon = self.period.end.next_day().unwrap_or(self.period.end);
        if c.start.is_some_and(|s| s > horizon) {
            return;
        }
        let p = self.pid(&c.patient);
        let covers_end = c.start.is_none_or(|s| s <= self.period.end)
            && c.end.is_none_or(|e| self.period.end <= e);
        if c.active
            && covers_end
            && let Some(payer) = c.payer.as_deref()
        {
            let payer = self.labels.id(payer);
            let st = &mut self.patients[p as usize];
            if st.payer.is_none_or(|(_, start)| c.start > start) {
                st.payer = Some((payer, c.start));
            }
        }
        self.coverage.spans.push(Span {
            patient: p,
            start: c.start,
            end: c.end,
            active: c.active,
        });
    }

    /// The coverage lapses and gaps by month, patient by patient.
    pub(super) fn finish_coverage(&mut self, raw: &mut Raw) {
        let period = self.period;
        self.coverage.spans.sort_unstable_by_key(|s| s.patient);
        let months = period.month_count();
        let mut lapses = Monthly::new(months);
        let mut gaps = Monthly::new(months);
        let month_ends: Vec<Date> = (0..months).map(|m| period.month_last_day(m)).collect();
        for spans in self.coverage.spans.chunk_by(|a, b| a.patient == b.patient) {
            let p = spans[0].patient;
            for d in lapse_days(spans, &period) {
                if let Some(m) = period.month_index(d) {
                    lapses.add(m, p);
                }
            }
            for (m, &day) in month_ends.iter().enumerate() {
                let on_record = spans
                    .iter()
                    .any(|s| s.start.or(s.end).is_none_or(|d| d <= day));
                let covered = spans.iter().any(|s| s.active && s.covers(day));
                if on_record && !covered {
                    gaps.add(m, p);
                }
            }
        }

        raw.trends.push(RawTrend::new(
            "coverage-lapses-by-month",
            "Coverage lapses by month",
            "Coverages ending in the month with no other active coverage of the patient on the next day (one lapse per patient and day; a coverage no longer active without an end date cannot be placed in a month and is not counted).",
            "lapses",
            lapses.points(&period),
        ));
        raw.trends.push(RawTrend::new(
            "coverage-gaps-by-month",
            "Patients without coverage, by month",
            "Patients with a coverage on record that began on or before the last day of the month (or of the period) but none active on that day.",
            "patients",
            gaps.points(&period),
        ));
    }
}

/// The days in the period on which one of a patient's coverages ends with
/// no other active one covering the next day; each day once, in order.
fn lapse_days(spans: &[Span], period: &Period) -> Vec<Date> {
    let mut lapse_days: Vec<Date> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let Some(end) = s.end else { continue };
        if !period.contains(end) {
            continue;
        }
        let Some(next) = end.next_day() else { continue };
        let covered = spans
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && o.active && o.covers(next));
        if !covered {
            lapse_days.push(end);
        }
    }
    lapse_days.sort_unstable();
    lapse_days.dedup();
    lapse_days
}

#[cfg(test)]
mod tests {
    use crate::patterns::fixtures::*;
    use time::macros::date;

    #[test]
    fn lapses_are_coverages_ending_without_another_active_one_the_next_day() {
        let mut a = acc();
        for i in 0..11 {
            // Lapsed at the end of March.
            let p = format!("lapse{i}");
            a.coverage(span(
                &p,
                Some(date!(2024 - 01 - 01)),
                Some(date!(2025 - 03 - 31)),
                true,
            ));
            // A cancelled coverage does not cover the gap.
            a.coverage(span(&p, Some(date!(2025 - 04 - 01)), None, false));
            // Continued: another active coverage from the next day.
            let p = format!("cont{i}");
            a.coverage(span(
                &p,
                Some(date!(2024 - 01 - 01)),
                Some(date!(2025 - 03 - 31)),
                true,
            ));
            a.coverage(span(&p, Some(date!(2025 - 04 - 01)), None, true));
            // Not active (so never covering), ended in June.
            let p = format!("ended{i}");
            a.coverage(span(
                &p,
                Some(date!(2025 - 06 - 01)),
                Some(date!(2025 - 06 - 15)),
                false,
            ));
            // Ended after the period: not a lapse in it.
            let p = format!("future{i}");
            a.coverage(span(&p, None, Some(date!(2026 - 03 - 31)), true));
        }
        // Two coverages of one patient ending the same day: one lapse.
        for i in 0..11 {
            let p = format!("twice{i}");
            a.coverage(span(&p, None, Some(date!(2025 - 09 - 30)), true));
            a.coverage(span(&p, None, Some(date!(2025 - 09 - 30)), true));
        }
        let r = a.finish(NOW);
        let lapses: Vec<_> = r
            .trend("coverage-lapses-by-month")
            .unwrap()
            .points
            .iter()
            .map(|c| c.value)
            .collect();
        let mut want = vec![Some(0); 12];
        want[2] = Some(11);
        want[5] = Some(11);
        want[8] = Some(11);
        assert_eq!(lapses, want);
        let gaps: Vec<_> = r
            .trend("coverage-gaps-by-month")
            .unwrap()
            .points
            .iter()
            .map(|c| c.value)
            .collect();
        // January–February: none; March's last day is still covered; from
        // April the "lapse" patients; from June (30th) the "ended" ones; from
        // September (30th is covered) October on, the "twice" ones.
        assert_eq!(
            gaps,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(11),
                Some(11),
                Some(22),
                Some(22),
                Some(22),
                Some(22),
                Some(33),
                Some(33),
                Some(33)
            ]
        );
        assert_eq!(r.counted.coverages, 88);
    }
}
