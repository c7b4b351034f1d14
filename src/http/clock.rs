//! The clock, as the pages read it: today's date for the date rules (age,
//! coverage, deadlines) and now as a FHIR `dateTime` for what is written.
//! One place, so every page reads the same clock, in UTC.

use time::Date;

use super::AppError;

/// Today, as the date rules see it (UTC).
pub(super) fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// FHIR dateTime of now, to the second.
pub(super) fn now_fhir() -> Result<String, AppError> {
    time::OffsetDateTime::now_utc()
        .replace_millisecond(0)?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(AppError::from)
}
