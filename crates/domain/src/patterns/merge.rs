//! The measures' counts before suppression ([`Raw`]), and how the counts of
//! disjoint batches of patients add up to the counts of all of them: every
//! count and every number of distinct patients is a sum over patients, so
//! the patterns view reads the practice a batch of patients at a time and
//! keeps nothing of a batch but its counts.

use std::collections::BTreeMap;

use super::UNKNOWN;
use super::accumulator::{Counted, Period};
use super::counters::{Histogram, Share};

/// The measures' counts before any suppression. The computations of
/// disjoint sets of patients add up ([`Raw::merge`]): every count and every
/// number of distinct patients is a sum over patients. Suppression is
/// applied once, to the whole ([`Raw::suppress`]).
#[derive(Debug, Clone, Default)]
pub struct Raw {
    pub(super) period: Option<Period>,
    pub(super) tables: Vec<RawTable>,
    pub(super) rates: Vec<RawRate>,
    pub(super) medians: Vec<RawMedian>,
    pub(super) trends: Vec<RawTrend>,
    /// (payer, item) → distinct patients.
    pub(super) repeated: BTreeMap<(String, String), u64>,
    pub(super) counted: Counted,
}

#[derive(Debug, Clone)]
pub(super) struct RawTable {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) definition: String,
    pub(super) dimension: String,
    pub(super) unit: String,
    /// (label, value, distinct patients)
    pub(super) cells: Vec<(String, u64, u64)>,
    pub(super) total_patients: u64,
}

pub(super) fn raw_table(
    id: &str,
    title: &str,
    definition: &str,
    dimension: &str,
    unit: &str,
    cells: Vec<(String, u64, u64)>,
    total_patients: u64,
) -> RawTable {
    RawTable {
        id: id.to_owned(),
        title: title.to_owned(),
        definition: definition.to_owned(),
        dimension: dimension.to_owned(),
        unit: unit.to_owned(),
        cells,
        total_patients,
    }
}

#[derive(Debug, Clone)]
pub(super) struct RawRate {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) definition: String,
    pub(super) num: (u64, u64),
    pub(super) den: (u64, u64),
    pub(super) rest_patients: u64,
    /// Another figure that would give back what this rate withholds.
    pub(super) shown_with: ShownWith,
}

/// What else shows a rate's figures, so that suppression withholds them
/// together.
#[derive(Debug, Clone, Default)]
pub(super) enum ShownWith {
    #[default]
    Nothing,
    /// Its numerator is this table's cell.
    Cell { table: &'static str, label: String },
    /// Its numerator is the total of each of these tables.
    Totals(Vec<String>),
    /// It adds up these rates (numerators and denominators).
    SumOf(&'static [&'static str]),
}

impl RawRate {
    pub(super) fn shown_with(mut self, link: ShownWith) -> Self {
        self.shown_with = link;
        self
    }

    pub(super) fn new(
        id: &str,
        title: &str,
        definition: &str,
        num: (u64, u64),
        den: (u64, u64),
        rest_patients: u64,
    ) -> Self {
        RawRate {
            id: id.to_owned(),
            title: title.to_owned(),
            definition: definition.to_owned(),
            num,
            den,
            rest_patients,
            shown_with: ShownWith::Nothing,
        }
    }

    /// A rate of the records of a [`Share`].
    pub(super) fn share(id: &str, title: &str, definition: &str, s: &Share) -> Self {
        RawRate::new(
            id,
            title,
            definition,
            (s.num, s.num_p.count),
            (s.den, s.den_p.count),
            s.rest_p.count,
        )
    }
}

#[derive(Debug, Clone)]
pub(super) struct RawMedian {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) definition: String,
    pub(super) values: Histogram,
    /// What a value is divided by to give days.
    pub(super) per_day: f64,
    pub(super) patients: u64,
}

impl RawMedian {
    pub(super) fn new(
        id: &str,
        title: &str,
        definition: &str,
        values: Histogram,
        per_day: f64,
        patients: u64,
    ) -> Self {
        RawMedian {
            id: id.to_owned(),
            title: title.to_owned(),
            definition: definition.to_owned(),
            values,
            per_day,
            patients,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct RawTrend {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) definition: String,
    pub(super) unit: String,
    pub(super) points: Vec<(String, u64, u64)>,
}

impl RawTrend {
    pub(super) fn new(
        id: &str,
        title: &str,
        definition: &str,
        unit: &str,
        points: Vec<(String, u64, u64)>,
    ) -> Self {
        RawTrend {
            id: id.to_owned(),
            title: title.to_owned(),
            definition: definition.to_owned(),
            unit: unit.to_owned(),
            points,
        }
    }
}

/// A figure that the counts of another set of patients add to, found by its
/// key: a table's, rate's, median's or trend's id, a cell's label.
trait AddUp {
    fn key(&self) -> &str;
    fn add(&mut self, other: Self);
}

/// Add each of `more` to the figure of `into` with the same key, or append
/// it (new keys at the end).
fn add_up<T: AddUp>(into: &mut Vec<T>, more: Vec<T>) {
    for m in more {
        match into.iter_mut().find(|x| x.key() == m.key()) {
            Some(x) => x.add(m),
            None => into.push(m),
        }
    }
}

/// A cell or a month: (label, value, distinct patients).
impl AddUp for (String, u64, u64) {
    fn key(&self) -> &str {
        &self.0
    }
    fn add(&mut self, (_, v, p): Self) {
        self.1 += v;
        self.2 += p;
    }
}

impl AddUp for RawTable {
    fn key(&self) -> &str {
        &self.id
    }
    fn add(&mut self, t: Self) {
        add_up(&mut self.cells, t.cells);
        self.total_patients += t.total_patients;
    }
}

impl AddUp for RawRate {
    fn key(&self) -> &str {
        &self.id
    }
    fn add(&mut self, r: Self) {
        self.num = (self.num.0 + r.num.0, self.num.1 + r.num.1);
        self.den = (self.den.0 + r.den.0, self.den.1 + r.den.1);
        self.rest_patients += r.rest_patients;
    }
}

impl AddUp for RawMedian {
    fn key(&self) -> &str {
        &self.id
    }
    fn add(&mut self, m: Self) {
        self.values.add_all(m.values);
        self.patients += m.patients;
    }
}

impl AddUp for RawTrend {
    fn key(&self) -> &str {
        &self.id
    }
    fn add(&mut self, t: Self) {
        add_up(&mut self.points, t.points);
    }
}

impl Counted {
    fn add(&mut self, b: Counted) {
        self.patients += b.patients;
        self.denials += b.denials;
        self.appeals += b.appeals;
        self.referrals += b.referrals;
        self.screens += b.screens;
        self.visits += b.visits;
        self.coverages += b.coverages;
    }
}

impl Raw {
    /// Add the counts of another set of patients, disjoint from these.
    pub fn merge(&mut self, other: Raw) {
        self.period = self.period.or(other.period);
        add_up(&mut self.tables, other.tables);
        add_up(&mut self.rates, other.rates);
        add_up(&mut self.medians, other.medians);
        add_up(&mut self.trends, other.trends);
        for (k, p) in other.repeated {
            *self.repeated.entry(k).or_default() += p;
        }
        self.counted.add(other.counted);
    }

    /// Rename the drugs and services (the cells of denials by item, the
    /// items of repeated denials), once every batch is in: they are counted
    /// by code and named from what all the batches read.
    pub fn rename_items(&mut self, name: impl Fn(&str) -> String) {
        for t in self.tables.iter_mut().filter(|t| t.id == "denials-by-item") {
            for cell in t.cells.iter_mut().filter(|c| c.0 != UNKNOWN) {
                cell.0 = name(&cell.0);
            }
        }
        self.repeated = std::mem::take(&mut self.repeated)
            .into_iter()
            .map(|((payer, item), p)| ((payer, name(&item)), p))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::fixtures::*;
    use crate::patterns::{Accumulator, PatientFacts, Visit};
    use time::Duration;
    use time::macros::{date, datetime};

    /// Patient `i` of a mixed population: a denial and its appeal, a
    /// referral, two screens, two visits, two coverages, the facts.
    fn one_patient(a: &mut Accumulator, i: usize) {
        let domains = [
            "food-insecurity",
            "housing-instability",
            "transportation-insecurity",
        ];
        let p = format!("patient-{i}");
        let day = YEAR.start + Duration::days((i % 365) as i64);
        a.denial(denial(
            &format!("d{i}"),
            &p,
            ["A", "B", "C", "D"][i % 4],
            ["X", "Y"][i % 2],
            day,
        ));
        let mut ap = appeal(
            &format!("a{i}"),
            &p,
            Some(&format!("d{i}")),
            datetime!(2025-06-01 10:00 UTC),
        );
        if !i.is_multiple_of(3) {
            ap.decided = Some(datetime!(2025-06-01 10:00 UTC) + Duration::hours((i % 200) as i64));
            ap.outcome = Some(
                if i.is_multiple_of(4) {
                    "overturned"
                } else {
                    "upheld"
                }
                .into(),
            );
        }
        a.appeal(ap);
        let mut r = referral(
            &format!("r{i}"),
            &p,
            domains[i % 3],
            day,
            ["completed", "requested", "rejected"][i % 3],
        );
        r.accepted = i
            .is_multiple_of(3)
            .then(|| day + Duration::days((i % 9) as i64));
        r.closed = i
            .is_multiple_of(3)
            .then(|| day + Duration::days((i % 90) as i64));
        a.referral(r);
        a.screen(screen(&p, day, domains[i % 3], i.is_multiple_of(2)));
        a.screen(screen(&p, day, domains[(i + 1) % 3], i.is_multiple_of(5)));
        a.visit(Visit {
            patient: p.clone(),
            date: day,
        });
        a.coverage(span(&p, None, Some(day), true));
        a.coverage(span(
            &p,
            Some(day + Duration::days(1)),
            None,
            !i.is_multiple_of(10),
        ));
        a.patient(
            &p,
            PatientFacts {
                postal_area: Some(["627", "606", "618", "000"][i % 4].into()),
                language: Some(
                    if i % 300 == 7 {
                        "vi"
                    } else {
                        ["en", "es"][i % 2]
                    }
                    .into(),
                ),
                sex: Some(["female", "male"][i % 2].into()),
                birth_date: Some(date!(1960 - 01 - 01) + Duration::days((i * 7) as i64)),
            },
        );
    }

    #[test]
    fn batches_of_patients_add_up_to_the_same_report_as_all_at_once() {
        let mut whole = Accumulator::new(YEAR);
        for i in 0..3000 {
            one_patient(&mut whole, i);
        }
        let whole = whole.finish(NOW);
        // In three uneven batches, each computed on its own, then added up.
        let mut merged = Raw::default();
        for batch in [0..1100, 1100..1900, 1900..3000] {
            let mut a = Accumulator::new(YEAR);
            for i in batch {
                one_patient(&mut a, i);
            }
            merged.merge(a.finish_raw());
        }
        let merged = merged.suppress(NOW);
        assert_eq!(merged, whole);
        // Not a vacuous equality: there are small cells, and shown ones.
        let language = whole.table("denials-by-language").unwrap();
        assert_eq!(language.cell("vi").unwrap().value, None);
        assert!(whole.median("time-to-decision").unwrap().days.is_some());
        assert!(whole.rates.iter().filter(|r| r.percent.is_some()).count() > 5);
    }

    #[test]
    fn items_counted_by_code_are_named_once_all_batches_are_in() {
        let mut total = Raw::default();
        for (prefix, payer) in [("a", "Sunrise"), ("b", "Sunrise")] {
            let mut a = acc();
            deny_many(&mut a, prefix, 6, payer, "1364445");
            total.merge(a.finish_raw());
        }
        total.rename_items(|code| format!("{code} apixaban 5 MG Oral Tablet"));
        let r = total.suppress(NOW);
        assert_eq!(
            values(r.table("denials-by-item").unwrap()),
            [("1364445 apixaban 5 MG Oral Tablet", Some(12))]
        );
        assert_eq!(r.repeated[0].item, "1364445 apixaban 5 MG Oral Tablet");
        assert_eq!(r.repeated[0].patients, "11-19");
    }
}
