//! Referrals to community services (SDOHCC Tasks fulfilling a
//! ServiceRequest) authored in the period: by social need (SDOH domain) and
//! by service, those rejected or never answered, the share closed within 60
//! days of the positive screen they answer, and the times to acceptance and
//! to completion.

use std::collections::HashSet;

use time::Date;

use super::accumulator::{Accumulator, F_ACCEPTED, F_CLOSED, Referral, left_out, norm};
use super::counters::{Histogram, Keyed, Share, id_key};
use super::merge::{Raw, RawMedian, RawRate};

/// A referral still requested (or received) this many days after it was
/// authored, at the end of the period, counts as never answered.
pub const UNANSWERED_AFTER_DAYS: i64 = 30;
/// A referral closed within this many days of the positive screen it
/// answers counts as closed in time.
pub const CLOSED_WITHIN_DAYS: i64 = 60;

/// What a referral with a domain keeps for the joins with screens.
#[derive(Clone, Copy)]
struct ReferralJoin {
    patient: u32,
    domain: u32,
    authored: Date,
    closed: Option<Date>,
}

/// What the referrals of the period leave for their measures and joins.
#[derive(Default)]
pub(super) struct Referrals {
    ids: HashSet<u128>,
    by_domain: Keyed<u32>,
    by_service: Keyed<u32>,
    unanswered: Keyed<u32>,
    accept_days: Histogram,
    close_days: Histogram,
    joins: Vec<ReferralJoin>,
}

impl Referrals {
    /// The (patient, domain) pairs with a referral in the period, in order,
    /// each once.
    pub(super) fn referred(&self) -> Vec<(u32, u32)> {
        let mut referred: Vec<(u32, u32)> =
            self.joins.iter().map(|r| (r.patient, r.domain)).collect();
        referred.sort_unstable();
        referred.dedup();
        referred
    }
}

impl Accumulator {
    /// A referral authored in the period (others are ignored). Draft and
    /// entered-in-error referrals are left out; an id seen twice counts once.
    pub fn referral(&mut self, r: Referral) {
        self.counted.referrals += 1;
        let status = norm(&r.status);
        if left_out(&status) || !self.period.contains(r.authored) {
            return;
        }
        if !self.referrals.ids.insert(id_key(&r.id)) {
            return;
        }
        let p = self.pid(&r.patient);
        self.patients[p as usize].referrals += 1;
        let domain = self.label(r.domain.as_deref());
        let service = self.label(r.service.as_deref());
        let referrals = &mut self.referrals;
        referrals.by_domain.add(domain, p);
        referrals.by_service.add(service, p);
        let waited = (self.period.end - r.authored).whole_days();
        let unanswered = matches!(status.as_str(), "rejected" | "cancelled")
            || (matches!(status.as_str(), "requested" | "received")
                && r.accepted.is_none()
                && waited > UNANSWERED_AFTER_DAYS);
        if unanswered {
            referrals.unanswered.add(domain, p);
        }
        let mut flags = 0;
        if let Some(days) = r.accepted.map(|a| (a - r.authored).whole_days())
            && days >= 0
        {
            referrals.accept_days.add(days);
            flags |= F_ACCEPTED;
        }
        if let Some(days) = r.closed.map(|c| (c - r.authored).whole_days())
            && days >= 0
        {
            referrals.close_days.add(days);
            flags |= F_CLOSED;
        }
        self.patients[p as usize].flags |= flags;
        if r.domain.as_deref().is_some_and(|d| !d.trim().is_empty()) {
            referrals.joins.push(ReferralJoin {
                patient: p,
                domain,
                authored: r.authored,
                closed: r.closed,
            });
        }
    }

    /// The referrals by domain and service, those unanswered, the share
    /// closed in time, and the times to acceptance and to completion.
    pub(super) fn finish_referrals(&self, raw: &mut Raw) {
        let referrals = &self.referrals;
        raw.tables.push(self.keyed_table(
            "referrals-by-domain",
            "Referrals by domain",
            "Referrals to community services authored in the period, by social need (SDOH domain).",
            "domain",
            "referrals",
            &referrals.by_domain,
        ));
        raw.tables.push(self.keyed_table(
            "referrals-by-service",
            "Referrals by service",
            "Referrals authored in the period, by the service referred to.",
            "service",
            "referrals",
            &referrals.by_service,
        ));
        raw.tables.push(self.keyed_table(
            "referrals-unanswered-by-domain",
            "Referrals rejected or never answered, by domain",
            "Referrals authored in the period that the service rejected, that were cancelled, or that were still waiting for an answer more than 30 days after they were sent, at the end of the period.",
            "domain",
            "referrals",
            &referrals.unanswered,
        ));

        raw.rates.push(RawRate::share(
            "referrals-closed-within-60-days",
            "Referrals closed within 60 days of a positive screen",
            "Of the referrals authored in the period whose patient screened positive in the referral's domain on or before the day it was authored, the share completed within 60 days of the latest such screen.",
            &self.closed_in_time(),
        ));

        raw.medians.push(RawMedian::new(
            "time-to-accept",
            "Time for a service to accept a referral",
            "Median days from authoring to acceptance of the referrals authored in the period and accepted.",
            referrals.accept_days.clone(),
            1.0,
            self.flagged(F_ACCEPTED),
        ));
        raw.medians.push(RawMedian::new(
            "time-to-close",
            "Time to close a referral",
            "Median days from authoring to completion of the referrals authored in the period and completed.",
            referrals.close_days.clone(),
            1.0,
            self.flagged(F_CLOSED),
        ));
    }

    /// Referrals closed within 60 days of the positive screen they answer
    /// (the latest in their domain on or before the day they were authored),
    /// of those that answer one.
    fn closed_in_time(&self) -> Share {
        let mut share = Share::new(self.patients.len());
        for r in &self.referrals.joins {
            let Some(screened) = self
                .screening
                .latest_positive(r.patient, r.domain, r.authored)
            else {
                continue;
            };
            let closed_in_time = r.closed.is_some_and(|c| {
                let days = (c - screened).whole_days();
                (0..=CLOSED_WITHIN_DAYS).contains(&days)
            });
            share.add(r.patient, closed_in_time);
        }
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::fixtures::*;
    use time::Duration;
    use time::macros::date;

    #[test]
    fn medians_average_the_two_middle_values_and_need_eleven_patients() {
        let mut h = Histogram::default();
        for v in [1, 2, 3, 10] {
            h.add(v);
        }
        assert_eq!(h.median(), Some(2.5));
        h.add(10);
        assert_eq!(h.median(), Some(3.0));
        assert_eq!(Histogram::default().median(), None);

        let mut a = acc();
        for i in 0..12 {
            let mut r = referral(
                &format!("r{i}"),
                &format!("p{i}"),
                "food-insecurity",
                date!(2025 - 02 - 01),
                "completed",
            );
            r.accepted = Some(date!(2025 - 02 - 01) + Duration::days(i));
            r.closed = Some(date!(2025 - 02 - 01) + Duration::days(10 + i));
            a.referral(r);
        }
        // One patient's ten referrals: ten closings, one patient.
        for i in 0..10 {
            let mut r = referral(
                &format!("s{i}"),
                "solo",
                "food-insecurity",
                date!(2025 - 02 - 01),
                "completed",
            );
            r.accepted = Some(date!(2025 - 02 - 02));
            a.referral(r);
        }
        let r = a.finish(NOW);
        let accept = r.median("time-to-accept").unwrap();
        // 0..=11 plus ten 1s: sorted 0,1×11,2,…,11; positions 10 and 11 are 1, 1.
        assert_eq!((accept.days, accept.n), (Some(1.0), Some(22)));
        let close = r.median("time-to-close").unwrap();
        assert_eq!((close.days, close.n), (Some(15.5), Some(12)));

        let mut a = acc();
        for i in 0..10 {
            let mut r = referral(
                &format!("r{i}"),
                &format!("p{i}"),
                "food-insecurity",
                date!(2025 - 02 - 01),
                "completed",
            );
            r.closed = Some(date!(2025 - 03 - 01));
            a.referral(r);
        }
        let m = a.finish(NOW);
        let close = m.median("time-to-close").unwrap();
        assert_eq!((close.days, close.n), (None, None));
    }

    #[test]
    fn referrals_by_domain_service_and_those_never_answered() {
        let mut a = acc();
        let end = YEAR.end;
        for i in 0..11 {
            let p = format!("p{i}");
            // Requested 31 days before the end: never answered.
            a.referral(referral(
                &format!("old{i}"),
                &p,
                "food-insecurity",
                end - Duration::days(31),
                "requested",
            ));
            // Requested 30 days before: still in time.
            a.referral(referral(
                &format!("new{i}"),
                &p,
                "food-insecurity",
                end - Duration::days(30),
                "requested",
            ));
            a.referral(referral(
                &format!("rej{i}"),
                &p,
                "housing-instability",
                date!(2025 - 03 - 01),
                "rejected",
            ));
            a.referral(referral(
                &format!("can{i}"),
                &p,
                "housing-instability",
                date!(2025 - 03 - 01),
                "cancelled",
            ));
            let mut r = referral(
                &format!("ok{i}"),
                &p,
                "transportation-insecurity",
                date!(2025 - 03 - 01),
                "in-progress",
            );
            r.service = None;
            a.referral(r);
            // Not counted: outside the period, in error, draft.
            a.referral(referral(
                &format!("x{i}"),
                &p,
                "food-insecurity",
                date!(2024 - 03 - 01),
                "requested",
            ));
            a.referral(referral(
                &format!("y{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 03 - 01),
                "entered-in-error",
            ));
            a.referral(referral(
                &format!("z{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 03 - 01),
                "draft",
            ));
        }
        let r = a.finish(NOW);
        assert_eq!(
            values(r.table("referrals-by-domain").unwrap()),
            [
                ("food-insecurity", Some(22)),
                ("housing-instability", Some(22)),
                ("transportation-insecurity", Some(11))
            ]
        );
        assert_eq!(
            values(r.table("referrals-by-service").unwrap()),
            [("Food bank", Some(44)), ("unknown", Some(11))]
        );
        assert_eq!(
            values(r.table("referrals-unanswered-by-domain").unwrap()),
            [
                ("housing-instability", Some(22)),
                ("food-insecurity", Some(11))
            ]
        );
        assert_eq!(r.counted.referrals, 88);
    }

    #[test]
    fn referrals_join_the_latest_positive_screen_in_their_domain() {
        let mut a = acc();
        for i in 0..11 {
            let p = format!("in{i}");
            // Screened before the period; closed 60 days after the screen.
            let mut r = referral(
                &format!("a{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 01 - 10),
                "completed",
            );
            r.closed = Some(date!(2024 - 12 - 20) + Duration::days(60));
            a.referral(r);
            a.screen(screen(&p, date!(2024 - 12 - 20), "food-insecurity", true));
        }
        for i in 0..11 {
            let p = format!("late{i}");
            a.screen(screen(
                &p,
                date!(2025 - 02 - 01),
                "housing-instability",
                true,
            ));
            // A later positive screen after the referral does not count.
            a.screen(screen(
                &p,
                date!(2025 - 05 - 01),
                "housing-instability",
                true,
            ));
            let mut r = referral(
                &format!("b{i}"),
                &p,
                "housing-instability",
                date!(2025 - 02 - 01),
                "completed",
            );
            r.closed = Some(date!(2025 - 02 - 01) + Duration::days(61));
            a.referral(r);
        }
        for i in 0..11 {
            let p = format!("no{i}");
            // Positive in another domain, or a negative screen, or after: no link.
            a.screen(screen(
                &p,
                date!(2025 - 02 - 01),
                "housing-instability",
                true,
            ));
            a.screen(screen(&p, date!(2025 - 02 - 01), "food-insecurity", false));
            a.screen(screen(&p, date!(2025 - 03 - 02), "food-insecurity", true));
            let mut r = referral(
                &format!("c{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 03 - 01),
                "completed",
            );
            r.closed = Some(date!(2025 - 03 - 05));
            a.referral(r);
        }
        let r = a.finish(NOW);
        let c = r.rate("referrals-closed-within-60-days").unwrap();
        assert_eq!(
            (c.numerator, c.denominator, c.percent),
            (Some(11), Some(22), Some(50.0))
        );
    }
}
