//! Suppression: the small-cell rule ([`SUPPRESSION_RULE`]), applied once to
//! the counts of every patient ([`Raw::suppress`]) to give the report. A count
//! is suppressed when it rests on fewer than [`SMALL_CELL`] distinct patients
//! (zero is shown: it reveals nobody); complementary suppression keeps a
//! suppressed count from being recovered by subtraction from a total; a
//! figure that another would give back is withheld with it; repeated
//! denials are listed only from [`SMALL_CELL`] patients, as a band.

use std::collections::BTreeMap;

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

use super::export::{Cell, Median, Rate, Repeated, Report, Table, Trend};
use super::merge::{Raw, RawRate, ShownWith};

/// Cells with fewer patients than this are suppressed.
pub const SMALL_CELL: u64 = 11;

/// The suppression rule in one sentence, stated in exports.
pub const SUPPRESSION_RULE: &str = "Any count that rests on 1 to 10 distinct patients is shown as \"< 11\" (a zero is shown, since it reveals nobody); when a table or monthly series has exactly one such cell, which its total would let a reader recover by subtraction, the smallest other non-zero cell is suppressed too (or the total withheld if there is none); a rate is withheld when its numerator, its denominator or their difference rests on 1 to 10 patients, a median when it rests on fewer than 11; a rate whose numerator a table also shows (positivity by domain, unmet needs) is withheld with the table's figure, and loses its denominator too when its numerator is withheld but the table shows it; the share of late appeal decisions is withheld when the expedited or the standard share it adds up is; an item denied by one payer is listed as repeated only for 11 or more patients, with their number as a band (11-19, 20-49, 50-99, 100 or more), never exact; postal areas are the first three digits of the ZIP code, and the areas of fewer than 20,000 people that HIPAA's Safe Harbor names are shown as 000.";

/// How a suppressed value is shown.
pub const SUPPRESSED: &str = "< 11";

/// The band of a repeated denial's patients (11 or more).
pub fn patient_band(patients: u64) -> &'static str {
    match patients {
        ..=19 => "11-19",
        20..=49 => "20-49",
        50..=99 => "50-99",
        _ => "100 or more",
    }
}

impl Raw {
    /// The report: every count suppressed by [`SUPPRESSION_RULE`].
    pub fn suppress(self, computed: OffsetDateTime) -> Report {
        let raw_rates = in_report_order(self.rates);
        let tables: Vec<Table> = self
            .tables
            .into_iter()
            .map(|t| {
                table(
                    &t.id,
                    &t.title,
                    &t.definition,
                    &t.dimension,
                    &t.unit,
                    t.cells,
                    t.total_patients,
                )
            })
            .collect();
        let links: Vec<ShownWith> = raw_rates.iter().map(|r| r.shown_with.clone()).collect();
        let mut rates: Vec<Rate> = raw_rates
            .into_iter()
            .map(|r| {
                rate(
                    &r.id,
                    &r.title,
                    &r.definition,
                    r.num,
                    r.den,
                    r.rest_patients,
                )
            })
            .collect();
        withhold_linked(&mut rates, &links, &tables);
        let medians = self
            .medians
            .into_iter()
            .map(|m| {
                median(
                    &m.id,
                    &m.title,
                    &m.definition,
                    m.values.median().map(|v| v / m.per_day),
                    m.values.n(),
                    m.patients,
                )
            })
            .collect();
        let trends = self
            .trends
            .into_iter()
            .map(|t| trend(&t.id, &t.title, &t.definition, &t.unit, t.points))
            .collect();

        let period = self.period.map(|p| (iso_date(p.start), iso_date(p.end)));
        Report {
            period: period.unwrap_or_default(),
            computed: computed.format(&Rfc3339).unwrap_or_default(),
            tables,
            rates,
            medians,
            repeated: repeated(self.repeated),
            trends,
            counted: self.counted,
            read: super::ReadPath::default(),
        }
    }
}

/// The rates in the report's order: the positivity rates by domain in the
/// domains' order, whichever batch saw a domain first, after the unmet needs.
fn in_report_order(rates: Vec<RawRate>) -> Vec<RawRate> {
    let (mut fixed, mut by_domain): (Vec<RawRate>, Vec<RawRate>) = rates
        .into_iter()
        .partition(|r| !r.id.starts_with("positivity-"));
    by_domain.sort_by(|a, b| a.id.cmp(&b.id));
    let at = fixed
        .iter()
        .position(|r| r.id == "unmet-needs")
        .map_or(fixed.len(), |i| i + 1);
    fixed.splice(at..at, by_domain);
    fixed
}

/// Rates that other figures would reveal. A rate whose numerator a table
/// also shows: withheld with the table's figure; and with its numerator
/// withheld while the table shows it, the denominator goes too (it would
/// give the difference). A rate that adds up others: withheld when one of
/// them is.
fn withhold_linked(rates: &mut [Rate], links: &[ShownWith], tables: &[Table]) {
    let table = |id: &str| tables.iter().find(|t| t.id == id);
    let withheld: Vec<String> = rates
        .iter()
        .filter(|r| r.numerator.is_none() || r.denominator.is_none())
        .map(|r| r.id.clone())
        .collect();
    for (r, link) in rates.iter_mut().zip(links) {
        let published = match link {
            ShownWith::Nothing => continue,
            ShownWith::Cell { table: t, label } => table(t)
                .and_then(|t| t.cell(label))
                .is_some_and(|c| c.value.is_some()),
            ShownWith::Totals(ids) => ids
                .iter()
                .all(|id| table(id).is_some_and(|t| t.total.is_some())),
            ShownWith::SumOf(parts) => {
                if parts.iter().any(|p| withheld.iter().any(|w| w == p)) {
                    withhold(r);
                }
                continue;
            }
        };
        if !published {
            r.numerator = None;
            r.percent = None;
        } else if r.numerator.is_none() {
            withhold(r);
        }
    }
}

/// The items denied by one payer for at least [`SMALL_CELL`] patients, by
/// band, largest first, then by name: no order within a band that would
/// rank the exact counts.
fn repeated(by_pair: BTreeMap<(String, String), u64>) -> Vec<Repeated> {
    let mut repeated: Vec<Repeated> = by_pair
        .into_iter()
        .filter(|(_, p)| *p >= SMALL_CELL)
        .map(|((payer, item), p)| Repeated {
            payer,
            item,
            patients: patient_band(p),
        })
        .collect();
    let rank = |band: &str| {
        ["100 or more", "50-99", "20-49", "11-19"]
            .iter()
            .position(|b| *b == band)
    };
    repeated.sort_by(|a, b| {
        rank(a.patients)
            .cmp(&rank(b.patients))
            .then_with(|| (&a.payer, &a.item).cmp(&(&b.payer, &b.item)))
    });
    repeated
}

fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

fn small(value: u64, patients: u64) -> bool {
    value > 0 && patients < SMALL_CELL
}

fn cell(label: String, value: u64, patients: u64) -> Cell {
    let value = (!small(value, patients)).then_some(value);
    Cell {
        label,
        value,
        patients,
    }
}

/// Complementary suppression: when exactly one cell is suppressed, a shown
/// total would reveal it, so the smallest other non-zero cell is suppressed
/// too. Returns false when no such cell exists (the total must be withheld).
fn protect(cells: &mut [Cell]) -> bool {
    if cells.iter().filter(|c| c.value.is_none()).count() != 1 {
        return true;
    }
    let other = cells
        .iter_mut()
        .filter(|c| c.value.is_some_and(|v| v > 0))
        .min_by(|a, b| (a.value, a.patients, &a.label).cmp(&(b.value, b.patients, &b.label)));
    match other {
        Some(c) => {
            c.value = None;
            true
        }
        None => false,
    }
}

/// Shown cells by value, largest first, then label; suppressed ones last by
/// label, so their order reveals nothing of their size.
fn sort_cells(cells: &mut [Cell]) {
    cells.sort_by(|a, b| match (a.value, b.value) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.label.cmp(&b.label)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.label.cmp(&b.label),
    });
}

/// A table from (label, value, distinct patients) and the distinct patients
/// of the whole table, suppressed by [`SUPPRESSION_RULE`].
fn table(
    id: &str,
    title: &str,
    definition: &str,
    dimension: &str,
    unit: &str,
    cells: Vec<(String, u64, u64)>,
    total_patients: u64,
) -> Table {
    let sum: u64 = cells.iter().map(|c| c.1).sum();
    let mut cells: Vec<Cell> = cells.into_iter().map(|(l, v, p)| cell(l, v, p)).collect();
    let mut total = (!small(sum, total_patients)).then_some(sum);
    if total.is_some() && !protect(&mut cells) {
        total = None;
    }
    sort_cells(&mut cells);
    Table {
        id: id.to_owned(),
        title: title.to_owned(),
        definition: definition.to_owned(),
        dimension: dimension.to_owned(),
        unit: unit.to_owned(),
        cells,
        total,
    }
}

/// A monthly series; its total is shown elsewhere (or could be), so a lone
/// suppressed month gets a complementary suppression like a table's cell.
fn trend(
    id: &str,
    title: &str,
    definition: &str,
    unit: &str,
    points: Vec<(String, u64, u64)>,
) -> Trend {
    let mut points: Vec<Cell> = points.into_iter().map(|(l, v, p)| cell(l, v, p)).collect();
    protect(&mut points);
    Trend {
        id: id.to_owned(),
        title: title.to_owned(),
        definition: definition.to_owned(),
        unit: unit.to_owned(),
        points,
    }
}

/// A rate from (records, distinct patients) of its numerator and
/// denominator, and the distinct patients of the denominator's records not in
/// the numerator (the difference a reader could compute).
fn rate(
    id: &str,
    title: &str,
    definition: &str,
    (num, num_p): (u64, u64),
    (den, den_p): (u64, u64),
    rest_p: u64,
) -> Rate {
    let den_shown = !small(den, den_p);
    let num_shown = den_shown && !small(num, num_p) && !small(den - num.min(den), rest_p);
    let percent = (num_shown && den > 0).then(|| (num as f64 * 1000.0 / den as f64).round() / 10.0);
    Rate {
        id: id.to_owned(),
        title: title.to_owned(),
        definition: definition.to_owned(),
        numerator: num_shown.then_some(num),
        denominator: den_shown.then_some(den),
        percent,
    }
}

/// Withhold a whole rate: numerator, denominator and share.
fn withhold(r: &mut Rate) {
    r.numerator = None;
    r.denominator = None;
    r.percent = None;
}

fn median(
    id: &str,
    title: &str,
    definition: &str,
    value: Option<f64>,
    n: u64,
    patients: u64,
) -> Median {
    let shown = !small(n, patients);
    Median {
        id: id.to_owned(),
        title: title.to_owned(),
        definition: definition.to_owned(),
        days: if shown {
            value.map(|d| (d * 100.0).round() / 100.0)
        } else {
            None
        },
        n: shown.then_some(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::fixtures::*;
    use crate::patterns::{Accumulator, Appeal, Period, Screen};
    use time::Duration;
    use time::macros::{date, datetime};

    #[test]
    fn ten_patients_are_suppressed_and_eleven_shown() {
        let mut a = acc();
        deny_many(&mut a, "a", 11, "Alpha", "MRI");
        deny_many(&mut a, "b", 10, "Beta", "MRI");
        deny_many(&mut a, "c", 10, "Gamma", "MRI");
        // Ten denials of one patient are still one patient.
        for i in 0..10 {
            a.denial(denial(
                &format!("z{i}"),
                "z",
                "Zeta",
                "MRI",
                date!(2025 - 05 - 01),
            ));
        }
        let r = a.finish(NOW);
        let t = r.table("denials-by-payer").unwrap();
        assert_eq!(
            values(t),
            [
                ("Alpha", Some(11)),
                ("Beta", None),
                ("Gamma", None),
                ("Zeta", None)
            ]
        );
        assert_eq!(
            t.total,
            Some(41),
            "three suppressed cells: the total reveals none of them"
        );
        assert_eq!(t.cell("Beta").unwrap().patients, 10);
        let json = serde_json::to_value(t).unwrap();
        assert!(
            json["cells"][1].get("patients").is_none(),
            "patient counts are never exported"
        );
        assert!(json["cells"][1]["value"].is_null());
    }

    #[test]
    fn a_lone_suppressed_cell_gets_a_complementary_suppression() {
        let mut a = acc();
        deny_many(&mut a, "a", 30, "Alpha", "MRI");
        deny_many(&mut a, "b", 12, "Beta", "MRI");
        deny_many(&mut a, "c", 14, "Gamma", "MRI");
        deny_many(&mut a, "d", 3, "Delta", "MRI");
        let r = a.finish(NOW);
        let t = r.table("denials-by-payer").unwrap();
        // Total 59 − 30 − 14 would give Beta + Delta, never Delta alone.
        assert_eq!(
            values(t),
            [
                ("Alpha", Some(30)),
                ("Gamma", Some(14)),
                ("Beta", None),
                ("Delta", None)
            ]
        );
        assert_eq!(t.total, Some(59));
    }

    #[test]
    fn the_total_is_withheld_when_nothing_else_can_protect_the_cell() {
        let cells = vec![("a".to_owned(), 5, 5), ("b".to_owned(), 0, 0)];
        let t = table("t", "T", "D", "x", "denials", cells, 12);
        assert_eq!(t.total, None);
        assert_eq!(values(&t), [("b", Some(0)), ("a", None)]);
        // A total on fewer than 11 patients is itself suppressed.
        let t = table(
            "t",
            "T",
            "D",
            "x",
            "denials",
            vec![("a".to_owned(), 4, 4)],
            4,
        );
        assert_eq!(t.total, None);
        // Nothing at all: zeros are shown.
        let t = table("t", "T", "D", "x", "denials", vec![], 0);
        assert_eq!(t.total, Some(0));
    }

    #[test]
    fn a_lone_suppressed_month_gets_a_complementary_suppression() {
        let mut a = Accumulator::new(Period {
            start: date!(2025 - 01 - 01),
            end: date!(2025 - 03 - 31),
        });
        for i in 0..20 {
            a.denial(denial(
                &format!("j{i}"),
                &format!("j{i}"),
                "P",
                "X",
                date!(2025 - 01 - 15),
            ));
        }
        for i in 0..12 {
            a.denial(denial(
                &format!("f{i}"),
                &format!("f{i}"),
                "P",
                "X",
                date!(2025 - 02 - 15),
            ));
        }
        for i in 0..2 {
            a.denial(denial(
                &format!("m{i}"),
                &format!("m{i}"),
                "P",
                "X",
                date!(2025 - 03 - 15),
            ));
        }
        let r = a.finish(NOW);
        let points: Vec<_> = r
            .trend("denials-by-month")
            .unwrap()
            .points
            .iter()
            .map(|c| c.value)
            .collect();
        assert_eq!(points, [Some(20), None, None]);
    }

    #[test]
    fn a_rate_is_withheld_when_its_numerator_denominator_or_difference_is_small() {
        let r = rate("r", "R", "D", (10, 10), (40, 40), 30);
        assert_eq!(
            (r.numerator, r.denominator, r.percent),
            (None, Some(40), None)
        );
        let r = rate("r", "R", "D", (11, 11), (40, 40), 29);
        assert_eq!(
            (r.numerator, r.denominator, r.percent),
            (Some(11), Some(40), Some(27.5))
        );
        let r = rate("r", "R", "D", (0, 0), (40, 40), 40);
        assert_eq!(
            (r.numerator, r.percent),
            (Some(0), Some(0.0)),
            "zero reveals nobody"
        );
        let r = rate("r", "R", "D", (0, 0), (10, 10), 10);
        assert_eq!((r.numerator, r.denominator, r.percent), (None, None, None));
        // 35 of 40: the 5 others could be recovered by subtraction.
        let r = rate("r", "R", "D", (35, 35), (40, 40), 5);
        assert_eq!(
            (r.numerator, r.denominator, r.percent),
            (None, Some(40), None)
        );
        let r = rate("r", "R", "D", (40, 40), (40, 40), 0);
        assert_eq!(r.percent, Some(100.0));
        let r = rate("r", "R", "D", (0, 0), (0, 0), 0);
        assert_eq!(
            (r.numerator, r.denominator, r.percent),
            (Some(0), Some(0), None)
        );
    }

    #[test]
    fn a_rate_whose_numerator_a_table_shows_goes_with_the_tables_figure() {
        let screen = |p: &str, domain: &str, positive: bool| Screen {
            patient: p.into(),
            date: date!(2025 - 05 - 01),
            domain: domain.into(),
            positive,
        };
        let mut a = acc();
        // food: 30 positive of 60; housing: 40 positive of 45 (5 negatives,
        // a small difference); transport: 3 positive of 40; utilities: 50
        // positive of 70.
        for (prefix, domain, positive, all) in [
            ("f", "food-insecurity", 30, 60),
            ("h", "housing-instability", 40, 45),
            ("t", "transportation-insecurity", 3, 40),
            ("u", "utility-insecurity", 50, 70),
        ] {
            for i in 0..all {
                a.screen(screen(&format!("{prefix}{i}"), domain, i < positive));
            }
        }
        let r = a.finish(NOW);
        let positives = r.table("positive-screens-by-domain").unwrap();
        // Transport is small; food (the smallest other) is withheld with it.
        let cell = |d: &str| positives.cell(d).unwrap().value;
        assert_eq!(cell("transportation-insecurity"), None);
        assert_eq!(cell("food-insecurity"), None);
        assert_eq!(cell("housing-instability"), Some(40));
        assert_eq!(cell("utility-insecurity"), Some(50));
        let whole = |id: &str| {
            let x = r.rate(id).unwrap();
            (x.numerator, x.denominator, x.percent)
        };
        // Food's 30 shown as a rate would undo the complementary suppression.
        assert_eq!(whole("positivity-food-insecurity"), (None, Some(60), None));
        assert_eq!(
            whole("positivity-transportation-insecurity"),
            (None, Some(40), None)
        );
        // Housing's numerator is in the table; its 5 negatives would follow
        // from the denominator: withheld too.
        assert_eq!(whole("positivity-housing-instability"), (None, None, None));
        assert_eq!(
            whole("positivity-utility-insecurity"),
            (Some(50), Some(70), Some(71.4))
        );
    }

    #[test]
    fn the_late_share_is_withheld_when_a_part_of_it_is() {
        let mut a = acc();
        let filed = datetime!(2025-03-01 09:00 UTC);
        let appeal = |i: usize, expedited: bool, hours: i64| Appeal {
            id: format!("a{i}"),
            patient: format!("p{i}"),
            denial: None,
            kind: "internal-appeal".into(),
            expedited,
            filed,
            decided: Some(filed + Duration::hours(hours)),
            outcome: Some("upheld".into()),
            status: "completed".into(),
        };
        // 5 expedited (2 late): withheld; 40 standard (20 late): shown.
        for i in 0..5 {
            a.appeal(appeal(i, true, if i < 2 { 100 } else { 24 }));
        }
        for i in 5..45 {
            a.appeal(appeal(i, false, if i < 25 { 24 * 10 } else { 24 }));
        }
        let r = a.finish(NOW);
        let rate = |id: &str| r.rate(id).unwrap().clone();
        assert_eq!(rate("late-decisions-expedited").percent, None);
        assert_eq!(rate("late-decisions-standard").percent, Some(50.0));
        // 22 of 45 overall, less 20 of 40 standard, would give 2 of 5.
        let overall = rate("late-decisions");
        assert_eq!(
            (overall.numerator, overall.denominator, overall.percent),
            (None, None, None)
        );
    }
}
