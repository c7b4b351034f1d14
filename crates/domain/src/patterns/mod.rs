//! See patterns: measures across the practice's patients over a period —
//! denials, appeals, referrals, screening and coverage — with every small
//! count suppressed, for a de-identified export a policy reader can use.
//!
//! Records stream in one at a time through an [`Accumulator`], in any order
//! (a patient's facts may arrive after their denials, an appeal before the
//! denial it answers). Nothing keeps a whole resource: each record is folded
//! into counters at once, and only the compact state that a join needs is
//! kept — u32 patient indexes, interned labels, 128-bit hashes of ids, dates
//! — so memory grows with distinct patients and keys, not with the size of
//! the resources.
//!
//! Small cells: see [`SUPPRESSION_RULE`]. A count is suppressed when it rests
//! on fewer than [`SMALL_CELL`] distinct patients (zero is shown: it reveals
//! nobody), and complementary suppression keeps a suppressed count from being
//! recovered by subtraction from a total; repeated denials of an item by a
//! payer are listed only when they concern at least [`SMALL_CELL`] patients,
//! and otherwise are not listed at all (not even as "< 11").
//!
//! Clocks: an expedited appeal is late when decided more than 72 hours after
//! filing (45 CFR 147.136, 42 CFR 422.572, 423.590, 438.410); a standard one
//! when decided more than 7 days after filing, the clock for standard
//! pre-service decisions (42 CFR 422.568(b)), used here for every kind.
//!
//! The submodules follow the computation:
//!
//! * `accumulator`: the period, the records the measures read ([`Denial`],
//!   [`Appeal`], …) and the [`Accumulator`] that folds them in; `counters`:
//!   the compact state it keeps (bit sets of patients, keyed and monthly
//!   counts, histograms);
//! * one module per measure family, each counting its records as they
//!   stream in and giving its measures once they are all in: `denials`,
//!   `appeals`, `referrals`, `screening` (screens and visits), `coverage`;
//!   `breakdowns`: the same counts by the patients' facts (payer, postal
//!   area, language, age band, sex);
//! * `merge`: the counts before suppression ([`Raw`]), added up over batches
//!   of patients;
//! * `read`: which read path (Bulk Data export or searches) gave the
//!   records, and when to fall back from one to the other;
//! * `suppression`: the small-cell rule, applied once to the whole;
//! * `export`: the [`Report`], whose tables, rates, medians and trends are
//!   the rows of the CSV export and the groups of the MeasureReport.

mod accumulator;
mod appeals;
mod breakdowns;
mod counters;
mod coverage;
mod denials;
mod export;
mod merge;
mod read;
mod referrals;
mod screening;
mod suppression;

#[cfg(test)]
mod fixtures;

pub use accumulator::{
    Accumulator, Appeal, Counted, CoverageSpan, Denial, PatientFacts, Period, Referral, Screen,
    Visit,
};
pub use appeals::{EXPEDITED_CLOCK_HOURS, STANDARD_CLOCK_DAYS};
pub use breakdowns::{AGE_BANDS, DIMENSIONS, RESTRICTED_ZIP3, age_band, postal_area};
pub use counters::id_key;
pub use denials::NO_REASON;
pub use export::{Cell, Median, Rate, Repeated, Report, Table, Trend};
pub use merge::Raw;
pub use read::{BulkOutcome, Next, ReadMode, ReadPath};
pub use referrals::{CLOSED_WITHIN_DAYS, UNANSWERED_AFTER_DAYS};
pub use suppression::{SMALL_CELL, SUPPRESSED, SUPPRESSION_RULE, patient_band};

/// The label of a cell for records without the dimension's value.
pub const UNKNOWN: &str = "unknown";
