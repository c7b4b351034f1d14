//! Breakdowns by the patients' facts: the denials, referrals, positive
//! screens and patients with an unmet need, by the payer of the coverage
//! active on the period's last day, the postal area (the first three digits
//! of the ZIP code, 000 for the areas HIPAA's Safe Harbor method, 45 CFR
//! 164.514(b)(2)(i)(B), restricts), the preferred language, the age band on
//! the period's last day and the administrative sex.

use std::collections::BTreeMap;

use time::Date;

use super::UNKNOWN;
use super::accumulator::{Accumulator, PatientState};
use super::merge::{Raw, RawTable, raw_table};

/// The dimensions of the breakdowns by the patients' facts, as table ids end.
pub const DIMENSIONS: [&str; 5] = ["payer", "postal-area", "language", "age-band", "sex"];
/// Age bands, youngest first.
pub const AGE_BANDS: [&str; 4] = ["0-17", "18-39", "40-64", "65+"];

/// The age band of someone born on `birth`, on the day `on` (whole years;
/// someone born on 29 February has their birthday on 1 March in other years).
pub fn age_band(birth: Date, on: Date) -> &'static str {
    let mut years = on.year() - birth.year();
    if (on.month() as u8, on.day()) < (birth.month() as u8, birth.day()) {
        years -= 1;
    }
    match years {
        ..=17 => AGE_BANDS[0],
        18..=39 => AGE_BANDS[1],
        40..=64 => AGE_BANDS[2],
        _ => AGE_BANDS[3],
    }
}

/// 3-digit ZIP areas of 20,000 people or fewer, which HIPAA's Safe Harbor
/// method (45 CFR 164.514(b)(2)(i)(B)) has shown as 000 (the list HHS gives
/// from the 2000 census).
pub const RESTRICTED_ZIP3: [&str; 17] = [
    "036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878",
    "879", "884", "890", "893",
];

/// The postal area of a US ZIP code: its first three digits, 000 for the
/// areas Safe Harbor restricts; none when the code does not start with
/// three digits.
pub fn postal_area(zip: &str) -> Option<String> {
    let first: &str = zip.trim().get(..3)?;
    if !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if RESTRICTED_ZIP3.contains(&first) {
        "000".to_string()
    } else {
        first.to_string()
    })
}

/// The measures broken down: (id, title, unit, definition).
const MEASURES: [(&str, &str, &str, &str); 4] = [
    (
        "denials",
        "Denials",
        "denials",
        "Denials noticed in the period",
    ),
    (
        "referrals",
        "Referrals",
        "referrals",
        "Referrals authored in the period",
    ),
    (
        "positive-screens",
        "Positive screens",
        "positive screens",
        "Screening results in the period that found a social need",
    ),
    (
        "unmet-needs",
        "Patients with an unmet need",
        "patients",
        "Patients who screened positive in a domain in the period with no referral in that domain in the period",
    ),
];

/// The dimensions: (id, name, definition).
const DIMS: [(&str, &str, &str); DIMENSIONS.len()] = [
    (
        "payer",
        "payer",
        "by the payer of the patient's coverage active on the last day of the period",
    ),
    (
        "postal-area",
        "postal area",
        "by the first three digits of the patient's ZIP code",
    ),
    (
        "language",
        "language",
        "by the patient's preferred language",
    ),
    (
        "age-band",
        "age band",
        "by the patient's age on the last day of the period",
    ),
    ("sex", "sex", "by the patient's administrative sex"),
];

impl Accumulator {
    /// Every measure by every dimension, but the denials by payer: those are
    /// by the payer that denied them (a table of the denials).
    /// `unmet_count` gives each patient's unmet domains.
    pub(super) fn finish_breakdowns(&self, unmet_count: &[u32], raw: &mut Raw) {
        for (mi, measure) in MEASURES.iter().enumerate() {
            for dim in DIMS {
                if measure.0 == "denials" && dim.0 == "payer" {
                    continue;
                }
                let value = |p: usize, st: &PatientState| {
                    u64::from(match mi {
                        0 => st.denials,
                        1 => st.referrals,
                        2 => st.positives,
                        _ => (unmet_count[p] > 0) as u32,
                    })
                };
                raw.tables.push(self.breakdown(measure, dim, value));
            }
        }
    }

    /// One measure by one dimension: its value per patient, added up by the
    /// patients' label, with each label's patients.
    fn breakdown(
        &self,
        (mid, mtitle, unit, mdef): &(&str, &str, &str, &str),
        (did, dname, ddef): (&str, &str, &str),
        value: impl Fn(usize, &PatientState) -> u64,
    ) -> RawTable {
        let labels = &self.labels;
        let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        if did == "age-band" {
            for band in AGE_BANDS {
                groups.insert(band.to_owned(), (0, 0));
            }
        }
        let mut total_p = 0;
        for (p, st) in self.patients.iter().enumerate() {
            let v = value(p, st);
            if v == 0 {
                continue;
            }
            total_p += 1;
            let label = match did {
                "postal-area" => st.postal.map(|l| labels.name(l)).unwrap_or(UNKNOWN),
                "language" => st.language.map(|l| labels.name(l)).unwrap_or(UNKNOWN),
                "sex" => st.sex.map(|l| labels.name(l)).unwrap_or(UNKNOWN),
                "payer" => st.payer.map(|(l, _)| labels.name(l)).unwrap_or(UNKNOWN),
                _ => st
                    .birth
                    .map(|b| age_band(b, self.period.end))
                    .unwrap_or(UNKNOWN),
            };
            let g = groups.entry(label.to_owned()).or_default();
            g.0 += v;
            g.1 += 1;
        }
        let cells = groups.into_iter().map(|(l, (v, p))| (l, v, p)).collect();
        raw_table(
            &format!("{mid}-by-{did}"),
            &format!("{mtitle} by {dname}"),
            &format!("{mdef}, {ddef} (unknown when not recorded)."),
            dname,
            unit,
            cells,
            total_p,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::fixtures::*;
    use crate::patterns::{CoverageSpan, PatientFacts};
    use time::macros::date;

    #[test]
    fn age_bands_at_their_boundaries() {
        let birth = date!(2000 - 06 - 15);
        assert_eq!(age_band(birth, date!(2018 - 06 - 14)), "0-17");
        assert_eq!(age_band(birth, date!(2018 - 06 - 15)), "18-39");
        assert_eq!(age_band(birth, date!(2040 - 06 - 14)), "18-39");
        assert_eq!(age_band(birth, date!(2040 - 06 - 15)), "40-64");
        assert_eq!(age_band(birth, date!(2065 - 06 - 14)), "40-64");
        assert_eq!(age_band(birth, date!(2065 - 06 - 15)), "65+");
        assert_eq!(age_band(birth, date!(2000 - 06 - 15)), "0-17");
        // Born on 29 February: 18 on 1 March of a common year.
        let leap = date!(2004 - 02 - 29);
        assert_eq!(age_band(leap, date!(2022 - 02 - 28)), "0-17");
        assert_eq!(age_band(leap, date!(2022 - 03 - 01)), "18-39");
    }

    #[test]
    fn breakdowns_by_payer_use_the_coverage_active_on_the_last_day() {
        let mut a = acc();
        let cover = |p: &str, payer: &str, start: Date, end: Option<Date>| CoverageSpan {
            patient: p.into(),
            start: Some(start),
            end,
            active: true,
            payer: Some(payer.into()),
        };
        for i in 0..12 {
            let p = format!("h{i}");
            // An older coverage and a newer one, both active: the newer's payer.
            a.coverage(cover(&p, "Sunrise", date!(2020 - 01 - 01), None));
            a.coverage(cover(&p, "Harbor", date!(2025 - 02 - 01), None));
            a.referral(referral(
                &format!("rh{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 03 - 01),
                "requested",
            ));
        }
        for i in 0..11 {
            let p = format!("s{i}");
            a.coverage(cover(&p, "Sunrise", date!(2020 - 01 - 01), None));
            a.referral(referral(
                &format!("rs{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 03 - 01),
                "requested",
            ));
        }
        for i in 0..11 {
            // Ended before the period's last day: no payer then.
            let p = format!("x{i}");
            a.coverage(cover(
                &p,
                "Sunrise",
                date!(2020 - 01 - 01),
                Some(date!(2025 - 06 - 30)),
            ));
            a.referral(referral(
                &format!("rx{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 03 - 01),
                "requested",
            ));
        }
        let r = a.finish(NOW);
        assert_eq!(
            values(r.table("referrals-by-payer").unwrap()),
            [
                ("Harbor", Some(12)),
                ("Sunrise", Some(11)),
                ("unknown", Some(11))
            ]
        );
        assert!(r.table("denials-by-payer").is_some());
    }

    #[test]
    fn postal_areas_are_three_digits_and_safe_harbor_areas_are_000() {
        assert_eq!(postal_area("62701").as_deref(), Some("627"));
        assert_eq!(postal_area(" 60601-1234").as_deref(), Some("606"));
        assert_eq!(postal_area("03601").as_deref(), Some("000"));
        assert_eq!(postal_area("89301").as_deref(), Some("000"));
        assert_eq!(postal_area("H2X 1Y4"), None);
        assert_eq!(postal_area("12"), None);
        // Not ASCII: no panic, no area.
        assert_eq!(postal_area("é1234"), None);
        assert_eq!(postal_area("1é234"), None);
    }

    #[test]
    fn breakdowns_by_the_patients_facts() {
        let mut a = acc();
        for i in 0..22 {
            let p = format!("p{i}");
            a.denial(denial(
                &format!("d{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 05 - 01),
            ));
            a.referral(referral(
                &format!("r{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 05 - 01),
                "requested",
            ));
            // Born so that half are 17 and half 18 on the period's last day.
            let birth = if i < 11 {
                date!(2008 - 01 - 01)
            } else {
                date!(2007 - 12 - 31)
            };
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some("627".into()),
                    language: Some(if i < 11 { "ES" } else { "en" }.into()),
                    sex: Some(if i < 11 { "female" } else { "male" }.into()),
                    birth_date: Some(birth),
                },
            );
        }
        // A patient with no facts at all.
        a.denial(denial(
            "dx",
            "nobody",
            "Sunrise",
            "MRI",
            date!(2025 - 05 - 01),
        ));
        let r = a.finish(NOW);
        let ages = r.table("denials-by-age-band").unwrap();
        // "unknown" (1 patient) is alone suppressed: the zero bands cannot
        // protect it, so the smallest shown band (first by label) is too.
        assert_eq!(
            values(ages),
            [
                ("18-39", Some(11)),
                ("40-64", Some(0)),
                ("65+", Some(0)),
                ("0-17", None),
                ("unknown", None)
            ]
        );
        assert_eq!(ages.total, Some(23));
        assert_eq!(
            values(r.table("referrals-by-language").unwrap()),
            [("en", Some(11)), ("es", Some(11))]
        );
        assert_eq!(
            values(r.table("denials-by-sex").unwrap()),
            [("male", Some(11)), ("female", None), ("unknown", None)]
        );
        // 22 in 627 and 1 unknown: 627 is suppressed to protect the unknown cell.
        let postal = r.table("denials-by-postal-area").unwrap();
        assert_eq!(values(postal), [("627", None), ("unknown", None)]);
        assert_eq!(postal.total, Some(23));
        assert_eq!(r.counted.patients, 22);
        // Every table and trend is there, empty or not.
        for id in ["denials", "referrals", "positive-screens", "unmet-needs"] {
            for dim in DIMENSIONS {
                assert!(
                    r.table(&format!("{id}-by-{dim}")).is_some(),
                    "{id}-by-{dim}"
                );
            }
        }
        // Denials by payer are by the denying payer: one table, not two.
        assert_eq!(r.tables.len(), 9 + 4 * 5 - 1);
        assert_eq!(r.trends.len(), 4);
    }
}
