//! Denials: the claims and prior authorizations denied with a notice dated
//! in the period (claim responses, and denials entered by hand from the
//! payer's notice), by payer, plan type, drug or service, reason code (CARC,
//! RARC or X12 886) and month; and the items one payer denies for many
//! patients, listed as repeated denials.

use std::collections::{BTreeMap, HashMap};

use super::accumulator::{Accumulator, Denial};
use super::counters::{Keyed, Monthly, id_key};
use super::merge::{Raw, RawTrend};

/// The label of the reason cell for denials that give no reason code.
pub const NO_REASON: &str = "no reason given";

/// What the denials of the period leave for their measures.
pub(super) struct Denials {
    /// Denials in the period: id → patient, for the join with appeals.
    pub(super) ids: HashMap<u128, u32>,
    by_payer: Keyed<u32>,
    by_plan: Keyed<u32>,
    by_item: Keyed<u32>,
    by_reason: Keyed<u32>,
    by_payer_item: Keyed<(u32, u32)>,
    monthly: Monthly,
}

impl Denials {
    pub(super) fn new(months: usize) -> Self {
        Denials {
            ids: HashMap::new(),
            by_payer: Keyed::default(),
            by_plan: Keyed::default(),
            by_item: Keyed::default(),
            by_reason: Keyed::default(),
            by_payer_item: Keyed::default(),
            monthly: Monthly::new(months),
        }
    }
}

impl Accumulator {
    /// A denial noticed in the period (others are ignored); an id seen twice
    /// counts once.
    pub fn denial(&mut self, d: Denial) {
        self.counted.denials += 1;
        let Some(month) = self.period.month_index(d.date) else {
            return;
        };
        let key = id_key(&d.id);
        if self.denials.ids.contains_key(&key) {
            return;
        }
        let p = self.pid(&d.patient);
        self.denials.ids.insert(key, p);
        self.patients[p as usize].denials += 1;
        let payer = self.labels.id(&d.payer);
        let plan = self.label(d.plan_type.as_deref());
        self.denials.by_payer.add(payer, p);
        self.denials.by_plan.add(plan, p);
        let item = self.label(d.item.as_deref());
        self.denials.by_item.add(item, p);
        if d.item.as_deref().is_some_and(|i| !i.trim().is_empty()) {
            self.denials.by_payer_item.add((payer, item), p);
        }
        let mut reasons: Vec<u32> = d.reasons.iter().map(|r| self.labels.id(r)).collect();
        reasons.sort_unstable();
        reasons.dedup();
        if reasons.is_empty() {
            reasons.push(self.labels.id(NO_REASON));
        }
        for r in reasons {
            self.denials.by_reason.add(r, p);
        }
        self.denials.monthly.add(month, p);
    }

    /// The denials by payer, plan type, item and reason; the repeated
    /// denials; the denials by month.
    pub(super) fn finish_denials(&self, raw: &mut Raw) {
        let denials = &self.denials;
        raw.tables.push(self.keyed_table(
            "denials-by-payer",
            "Denials by payer",
            "Claims and prior authorizations denied with a notice dated in the period (claim responses, and denials entered by hand from the notice in the appeal form), by the payer that denied them.",
            "payer",
            "denials",
            &denials.by_payer,
        ));
        raw.tables.push(self.keyed_table(
            "denials-by-plan-type",
            "Denials by plan type",
            "Denials noticed in the period, by the type of the patient's coverage (unknown when the coverage gives none).",
            "plan type",
            "denials",
            &denials.by_plan,
        ));
        raw.tables.push(self.keyed_table(
            "denials-by-item",
            "Denials by drug or service",
            "Denials noticed in the period, by the code and name of the drug or service denied.",
            "drug or service",
            "denials",
            &denials.by_item,
        ));
        raw.tables.push(self.keyed_table(
            "denials-by-reason",
            "Denials by reason",
            "Denials noticed in the period, by the payer's reason code (CARC, RARC or X12 886); a denial with several reasons counts once under each, so the total counts denial-reason pairs.",
            "reason",
            "denials",
            &denials.by_reason,
        ));

        let labels = &self.labels;
        let repeated: BTreeMap<(String, String), u64> = denials
            .by_payer_item
            .patients_by_key()
            .into_iter()
            .map(|((payer, item), p)| {
                (
                    (labels.name(payer).to_owned(), labels.name(item).to_owned()),
                    p,
                )
            })
            .collect();
        raw.repeated = repeated;

        raw.trends.push(RawTrend::new(
            "denials-by-month",
            "Denials by month",
            "Denials by the month of their notice.",
            "denials",
            denials.monthly.points(&self.period),
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::patterns::fixtures::*;
    use crate::patterns::{Repeated, patient_band};
    use time::macros::date;

    #[test]
    fn denials_on_the_period_boundaries_count_and_those_outside_do_not() {
        let mut a = acc();
        for i in 0..11 {
            let p = format!("p{i}");
            a.denial(denial(
                &format!("first{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 01 - 01),
            ));
            a.denial(denial(
                &format!("last{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 12 - 31),
            ));
            a.denial(denial(
                &format!("before{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2024 - 12 - 31),
            ));
            a.denial(denial(
                &format!("after{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2026 - 01 - 01),
            ));
            // The same id again counts once.
            a.denial(denial(
                &format!("last{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 12 - 31),
            ));
        }
        let r = a.finish(NOW);
        let t = r.table("denials-by-payer").unwrap();
        assert_eq!(values(t), [("Sunrise", Some(22))]);
        assert_eq!(t.total, Some(22));
        assert_eq!(r.counted.denials, 55);
        let months = r.trend("denials-by-month").unwrap();
        assert_eq!(months.points.len(), 12);
        assert_eq!(months.points[0].label, "2025-01");
        assert_eq!(months.points[0].value, Some(11));
        assert_eq!(months.points[11].value, Some(11));
        assert_eq!(months.points[5].value, Some(0));
        assert_eq!(r.period, ("2025-01-01".into(), "2025-12-31".into()));
        assert_eq!(r.computed, "2026-01-05T09:00:00Z");
    }

    #[test]
    fn denials_by_plan_item_and_reason() {
        let mut a = acc();
        for i in 0..11 {
            let mut d = denial(
                &format!("d{i}"),
                &format!("p{i}"),
                "Sunrise",
                "72148 MRI lumbar spine",
                date!(2025 - 04 - 01),
            );
            d.reasons = vec!["197".into(), "N54".into(), "197".into()];
            a.denial(d);
            let mut d = denial(
                &format!("e{i}"),
                &format!("p{i}"),
                "Sunrise",
                "72148 MRI lumbar spine",
                date!(2025 - 04 - 02),
            );
            d.plan_type = None;
            d.item = None;
            d.reasons = vec![];
            a.denial(d);
        }
        let r = a.finish(NOW);
        assert_eq!(
            values(r.table("denials-by-plan-type").unwrap()),
            [("Medicaid HMO", Some(11)), ("unknown", Some(11))]
        );
        assert_eq!(
            values(r.table("denials-by-item").unwrap()),
            [("72148 MRI lumbar spine", Some(11)), ("unknown", Some(11))]
        );
        let reasons = r.table("denials-by-reason").unwrap();
        assert_eq!(
            values(reasons),
            [
                ("197", Some(11)),
                ("N54", Some(11)),
                ("no reason given", Some(11))
            ]
        );
        assert_eq!(reasons.total, Some(33));
    }

    #[test]
    fn repeated_denials_are_listed_from_eleven_patients() {
        let mut a = acc();
        deny_many(
            &mut a,
            "a",
            11,
            "Sunrise",
            "1364445 apixaban 5 MG Oral Tablet",
        );
        deny_many(&mut a, "b", 10, "Sunrise", "72148 MRI lumbar spine");
        // One patient denied twelve times is one patient.
        for i in 0..12 {
            a.denial(denial(
                &format!("s{i}"),
                "solo",
                "Harbor",
                "E0601 CPAP",
                date!(2025 - 07 - 01),
            ));
        }
        // The same item by another payer is another pair.
        deny_many(
            &mut a,
            "c",
            6,
            "Harbor",
            "1364445 apixaban 5 MG Oral Tablet",
        );
        let r = a.finish(NOW);
        assert_eq!(
            r.repeated,
            [Repeated {
                payer: "Sunrise".into(),
                item: "1364445 apixaban 5 MG Oral Tablet".into(),
                patients: "11-19"
            }]
        );
        assert_eq!(
            [11, 19, 20, 49, 50, 99, 100, 5000].map(patient_band),
            [
                "11-19",
                "11-19",
                "20-49",
                "20-49",
                "50-99",
                "50-99",
                "100 or more",
                "100 or more"
            ]
        );
    }
}
