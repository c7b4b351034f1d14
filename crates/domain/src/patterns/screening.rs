//! Screening for social needs (one result per SDOHCC domain) and the visits
//! it should reach: positive screens by domain and by month, the share of
//! results positive in each domain, the unmet needs (a positive screen with
//! no referral in its domain authored in the period), and the share of
//! visits with a screening on their day.

use std::collections::HashMap;

use time::Date;

use super::accumulator::{Accumulator, Screen, Visit};
use super::breakdowns::DIMENSIONS;
use super::counters::{Keyed, Monthly, Seen, Share};
use super::merge::{Raw, RawRate, RawTrend, ShownWith, raw_table};

/// What the screens and visits leave for their measures and joins.
pub(super) struct Screening {
    /// Positive screens up to the period's end: (patient, domain, date).
    positives: Vec<(u32, u32, Date)>,
    screened_by_domain: Keyed<u32>,
    positive_by_domain: Keyed<u32>,
    negative_by_domain: Keyed<u32>,
    positives_monthly: Monthly,
    screened_days: Vec<(u32, Date)>,
    visits: Vec<(u32, Date)>,
}

/// The unmet needs: a positive screen in the period, no referral in that
/// domain authored in the period.
struct Unmet {
    /// Patients with an unmet need, per domain.
    by_domain: HashMap<u32, u64>,
    patients: Seen,
    /// Patients who screened positive in the period.
    positive_patients: Seen,
    /// Unmet domains, per patient.
    per_patient: Vec<u32>,
}

impl Screening {
    pub(super) fn new(months: usize) -> Self {
        Screening {
            positives: Vec::new(),
            screened_by_domain: Keyed::default(),
            positive_by_domain: Keyed::default(),
            negative_by_domain: Keyed::default(),
            positives_monthly: Monthly::new(months),
            screened_days: Vec::new(),
            visits: Vec::new(),
        }
    }

    /// Sort the positive screens by patient, domain and date, each once: the
    /// joins with referrals need them so.
    pub(super) fn sort_positives(&mut self) {
        self.positives.sort_unstable();
        self.positives.dedup();
    }

    /// The day of the latest positive screen of `patient` in `domain` on or
    /// before `day` (the positives sorted by [`Screening::sort_positives`]).
    pub(super) fn latest_positive(&self, patient: u32, domain: u32, day: Date) -> Option<Date> {
        let lo = self
            .positives
            .partition_point(|&(p, d, _)| (p, d) < (patient, domain));
        let hi = self
            .positives
            .partition_point(|&(p, d, _)| (p, d) <= (patient, domain));
        let dates = &self.positives[lo..hi];
        let upto = dates.partition_point(|&(_, _, date)| date <= day);
        upto.checked_sub(1).map(|i| dates[i].2)
    }
}

impl Accumulator {
    /// A screening result in one domain, of any date: a positive screen up
    /// to the period's end is kept for the join with referrals; a screen is
    /// counted when in the period; later ones are ignored.
    pub fn screen(&mut self, s: Screen) {
        self.counted.screens += 1;
        if s.date > self.period.end {
            return;
        }
        let p = self.pid(&s.patient);
        let domain = self.labels.id(&s.domain);
        let screening = &mut self.screening;
        if s.positive {
            screening.positives.push((p, domain, s.date));
        }
        let Some(month) = self.period.month_index(s.date) else {
            return;
        };
        screening.screened_by_domain.add(domain, p);
        if s.positive {
            screening.positive_by_domain.add(domain, p);
            screening.positives_monthly.add(month, p);
            self.patients[p as usize].positives += 1;
        } else {
            screening.negative_by_domain.add(domain, p);
        }
        screening.screened_days.push((p, s.date));
    }

    /// A visit in the period (others are ignored); two visits of a patient
    /// on one day count as one.
    pub fn visit(&mut self, v: Visit) {
        self.counted.visits += 1;
        if self.period.contains(v.date) {
            let p = self.pid(&v.patient);
            self.screening.visits.push((p, v.date));
        }
    }

    /// The positive screens and unmet needs by domain, the visits screened,
    /// the patients with an unmet need, the positivity of each domain and
    /// the positive screens by month. Gives the unmet domains per patient,
    /// for the breakdowns.
    pub(super) fn finish_screening(&mut self, raw: &mut Raw) -> Vec<u32> {
        let unmet = self.unmet_needs();
        let visits = self.visits_screened();
        raw.tables.push(self.keyed_table(
            "positive-screens-by-domain",
            "Positive screens by domain",
            "Screening results in the period that found a social need, by domain.",
            "domain",
            "positive screens",
            &self.screening.positive_by_domain,
        ));
        let cells = unmet
            .by_domain
            .iter()
            .map(|(d, v)| (self.labels.name(*d).to_owned(), *v, *v))
            .collect();
        raw.tables.push(raw_table(
            "unmet-needs-by-domain",
            "Unmet needs by domain",
            "Patients who screened positive in a domain in the period with no referral in that domain authored in the period.",
            "domain",
            "patients",
            cells,
            unmet.patients.count,
        ));

        raw.rates.push(RawRate::share(
            "visits-screened",
            "Visits with a screening",
            "Share of visits in the period (one per patient and day) on whose day the patient had a screening for social needs.",
            &visits,
        ));
        let (unmet_p, positive_p) = (unmet.patients.count, unmet.positive_patients.count);
        raw.rates.push(
            RawRate::new(
                "unmet-needs",
                "Patients with an unmet need",
                "Of the patients who screened positive in the period, the share with a positive domain for which no referral in that domain was authored in the period.",
                (unmet_p, unmet_p),
                (positive_p, positive_p),
                positive_p - unmet_p,
            )
            .shown_with(ShownWith::Totals(
                DIMENSIONS.iter().map(|d| format!("unmet-needs-by-{d}")).collect(),
            )),
        );
        self.positivity(raw);

        raw.trends.push(RawTrend::new(
            "positive-screens-by-month",
            "Positive screens by month",
            "Screening results that found a social need, by the month of the screening.",
            "positive screens",
            self.screening.positives_monthly.points(&self.period),
        ));
        unmet.per_patient
    }

    /// Each patient's positive domains in the period without a referral in
    /// that domain authored in the period.
    fn unmet_needs(&self) -> Unmet {
        let n = self.patients.len();
        let referred = self.referrals.referred();
        let mut unmet = Unmet {
            by_domain: HashMap::new(),
            patients: Seen::new(n),
            positive_patients: Seen::new(n),
            per_patient: vec![0u32; n],
        };
        let positives = &self.screening.positives;
        for screens in positives.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let (p, d, _) = screens[0];
            if !screens.iter().any(|s| self.period.contains(s.2)) {
                continue;
            }
            unmet.positive_patients.insert(p);
            if referred.binary_search(&(p, d)).is_err() {
                *unmet.by_domain.entry(d).or_default() += 1;
                unmet.patients.insert(p);
                unmet.per_patient[p as usize] += 1;
            }
        }
        unmet
    }

    /// Visits screened: any screening of the patient on the visit's day.
    fn visits_screened(&mut self) -> Share {
        let screening = &mut self.screening;
        screening.visits.sort_unstable();
        screening.visits.dedup();
        screening.screened_days.sort_unstable();
        screening.screened_days.dedup();
        let mut share = Share::new(self.patients.len());
        for v in &screening.visits {
            share.add(v.0, screening.screened_days.binary_search(v).is_ok());
        }
        share
    }

    /// The share of screening results positive, domain by domain in the
    /// order of their names.
    fn positivity(&self, raw: &mut Raw) {
        let screening = &self.screening;
        let mut domains: Vec<(String, u32)> = screening
            .screened_by_domain
            .values
            .keys()
            .map(|&d| (self.labels.name(d).to_owned(), d))
            .collect();
        domains.sort();
        let screened_p = screening.screened_by_domain.patients_by_key();
        let positive_p = screening.positive_by_domain.patients_by_key();
        let negative_p = screening.negative_by_domain.patients_by_key();
        let of = |m: &HashMap<u32, u64>, d: u32| m.get(&d).copied().unwrap_or(0);
        for (name, d) in domains {
            let pos = screening
                .positive_by_domain
                .values
                .get(&d)
                .copied()
                .unwrap_or(0);
            let all = screening.screened_by_domain.values[&d];
            raw.rates.push(RawRate::new(
                &format!("positivity-{name}"),
                &format!("Screening positivity: {name}"),
                &format!("Share of screening results in the domain {name} in the period that found the need."),
                (pos, of(&positive_p, d)),
                (all, of(&screened_p, d)),
                of(&negative_p, d),
            )
            .shown_with(ShownWith::Cell {
                table: "positive-screens-by-domain",
                label: name.clone(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::PatientFacts;
    use crate::patterns::fixtures::*;
    use time::macros::date;

    #[test]
    fn unmet_needs_are_positive_screens_without_a_referral_in_their_domain() {
        let mut a = acc();
        for i in 0..11 {
            let p = format!("met{i}");
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some("627".into()),
                    ..Default::default()
                },
            );
            a.screen(screen(&p, date!(2025 - 04 - 01), "food-insecurity", true));
            a.referral(referral(
                &format!("r{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 06 - 01),
                "requested",
            ));
        }
        for i in 0..11 {
            let p = format!("unmet{i}");
            a.screen(screen(&p, date!(2025 - 04 - 01), "food-insecurity", true));
            a.screen(screen(
                &p,
                date!(2025 - 04 - 01),
                "housing-instability",
                true,
            ));
            // A referral in another domain, and one before the period, do not meet it.
            a.referral(referral(
                &format!("h{i}"),
                &p,
                "housing-instability",
                date!(2025 - 06 - 01),
                "requested",
            ));
            a.referral(referral(
                &format!("o{i}"),
                &p,
                "food-insecurity",
                date!(2024 - 06 - 01),
                "requested",
            ));
            // Facts after the records.
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some("606".into()),
                    ..Default::default()
                },
            );
        }
        for i in 0..5 {
            // Positive only before the period: not a need of this period.
            a.screen(screen(
                &format!("old{i}"),
                date!(2024 - 04 - 01),
                "food-insecurity",
                true,
            ));
        }
        let r = a.finish(NOW);
        let u = r.rate("unmet-needs").unwrap();
        assert_eq!(
            (u.numerator, u.denominator, u.percent),
            (Some(11), Some(22), Some(50.0))
        );
        assert_eq!(
            values(r.table("unmet-needs-by-domain").unwrap()),
            [("food-insecurity", Some(11))]
        );
        assert_eq!(
            values(r.table("unmet-needs-by-postal-area").unwrap()),
            [("606", Some(11))]
        );
        assert_eq!(
            values(r.table("positive-screens-by-postal-area").unwrap()),
            [("606", Some(22)), ("627", Some(11))]
        );
        assert_eq!(
            values(r.table("positive-screens-by-domain").unwrap()),
            [
                ("food-insecurity", Some(22)),
                ("housing-instability", Some(11))
            ]
        );
    }

    #[test]
    fn positivity_by_domain_and_positive_screens_by_month() {
        let mut a = acc();
        for i in 0..44 {
            let p = format!("p{i}");
            a.screen(screen(&p, date!(2025 - 02 - 03), "food-insecurity", i < 11));
            a.screen(screen(
                &p,
                date!(2025 - 02 - 03),
                "housing-instability",
                i < 3,
            ));
        }
        let r = a.finish(NOW);
        // Food's 11 is withheld in the table to protect housing's 3 (the
        // total 14 would give it back), so its rate goes with it.
        let f = r.rate("positivity-food-insecurity").unwrap();
        assert_eq!(
            (f.numerator, f.denominator, f.percent),
            (None, Some(44), None)
        );
        let h = r.rate("positivity-housing-instability").unwrap();
        assert_eq!(
            (h.numerator, h.denominator, h.percent),
            (None, Some(44), None)
        );
        let m = r.trend("positive-screens-by-month").unwrap();
        assert_eq!(m.points[1].label, "2025-02");
        assert_eq!(m.points[1].value, Some(14));
    }

    #[test]
    fn a_visit_is_screened_when_the_patient_has_a_screening_that_day() {
        let mut a = acc();
        for i in 0..22 {
            let p = format!("p{i}");
            a.visit(Visit {
                patient: p.clone(),
                date: date!(2025 - 05 - 05),
            });
            a.visit(Visit {
                patient: p.clone(),
                date: date!(2025 - 05 - 05),
            });
            let day = if i < 11 {
                date!(2025 - 05 - 05)
            } else {
                date!(2025 - 05 - 06)
            };
            a.screen(screen(&p, day, "food-insecurity", false));
            a.visit(Visit {
                patient: p,
                date: date!(2026 - 05 - 05),
            });
        }
        let r = a.finish(NOW);
        let v = r.rate("visits-screened").unwrap();
        assert_eq!(
            (v.numerator, v.denominator, v.percent),
            (Some(11), Some(22), Some(50.0))
        );
        assert_eq!(r.counted.visits, 66);
    }
}
