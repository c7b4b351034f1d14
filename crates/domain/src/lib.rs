//! The rules of the product, free of I/O: the crate `passerelle-domain`,
//! which the app re-exports as `passerelle::domain`. Its dependencies are
//! serde, time and minijinja only, so the compiler keeps it pure.
//!
//! Everything here works on plain values that the `passerelle::fhir` layer has
//! already read and checked, so each rule is tested in microseconds and a
//! rule that comes from a standard lives in one place, citing its source.

pub mod appeal;
pub mod coverage;
pub mod directory;
pub mod evidence;
pub mod letter;
pub mod patient_task;
pub mod patterns;
pub mod queue;
pub mod referral;
pub mod screening;
pub mod sdoh;
pub mod visit;

pub use time::Date;

/// A calendar date written `YYYY-MM-DD` (a form field, a FHIR `date`); the
/// only parser of such dates, so every page and rule reads them alike.
pub fn iso_date(s: &str) -> Option<Date> {
    Date::parse(
        s.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}
