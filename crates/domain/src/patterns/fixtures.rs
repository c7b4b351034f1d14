//! Records and helpers shared by the unit tests of the patterns modules:
//! a year's period, a computation date, and one record of each kind with
//! the fields most tests leave alone.

use time::macros::{date, datetime};
use time::{Date, OffsetDateTime};

use super::{Accumulator, Appeal, CoverageSpan, Denial, Period, Referral, Screen, Table};

pub(super) const YEAR: Period = Period {
    start: date!(2025 - 01 - 01),
    end: date!(2025 - 12 - 31),
};

pub(super) const NOW: OffsetDateTime = datetime!(2026-01-05 09:00 UTC);

pub(super) fn acc() -> Accumulator {
    Accumulator::new(YEAR)
}

pub(super) fn denial(id: &str, patient: &str, payer: &str, item: &str, date: Date) -> Denial {
    Denial {
        id: id.into(),
        patient: patient.into(),
        payer: payer.into(),
        plan_type: Some("Medicaid HMO".into()),
        item: Some(item.into()),
        reasons: vec!["197".into()],
        date,
    }
}

/// `n` patients ("{prefix}{i}") each with one denial by `payer`.
pub(super) fn deny_many(a: &mut Accumulator, prefix: &str, n: usize, payer: &str, item: &str) {
    for i in 0..n {
        a.denial(denial(
            &format!("{prefix}-d{i}"),
            &format!("{prefix}{i}"),
            payer,
            item,
            date!(2025 - 03 - 10),
        ));
    }
}

pub(super) fn appeal(
    id: &str,
    patient: &str,
    denial: Option<&str>,
    filed: OffsetDateTime,
) -> Appeal {
    Appeal {
        id: id.into(),
        patient: patient.into(),
        denial: denial.map(Into::into),
        kind: "internal-appeal".into(),
        expedited: false,
        filed,
        decided: None,
        outcome: None,
        status: "in-progress".into(),
    }
}

pub(super) fn referral(
    id: &str,
    patient: &str,
    domain: &str,
    authored: Date,
    status: &str,
) -> Referral {
    Referral {
        id: id.into(),
        patient: patient.into(),
        domain: Some(domain.into()),
        service: Some("Food bank".into()),
        authored,
        accepted: None,
        closed: None,
        status: status.into(),
    }
}

pub(super) fn screen(patient: &str, date: Date, domain: &str, positive: bool) -> Screen {
    Screen {
        patient: patient.into(),
        date,
        domain: domain.into(),
        positive,
    }
}

pub(super) fn span(
    patient: &str,
    start: Option<Date>,
    end: Option<Date>,
    active: bool,
) -> CoverageSpan {
    CoverageSpan {
        patient: patient.into(),
        start,
        end,
        active,
        payer: Some("Sunrise".into()),
    }
}

pub(super) fn values(t: &Table) -> Vec<(&str, Option<u64>)> {
    t.cells
        .iter()
        .map(|c| (c.label.as_str(), c.value))
        .collect()
}
