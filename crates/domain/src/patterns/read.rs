//! How the population was read: by FHIR Bulk Data export (Bulk Data Access
//! IG 2.0.0) where the EHR offers it, else by paged searches, and what the
//! result page says about it.
//!
//! The measures are the same either way: both paths give the same records
//! to the same batch-wise counting.

use serde::{Deserialize, Serialize};

/// Which read path the patterns view may take (the EHR entry's
/// `backend.bulk_export`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Bulk Data export when the server offers it, searches otherwise or
    /// when the export fails (the default).
    #[default]
    Auto,
    /// Paged searches only.
    Search,
    /// Bulk Data export only: a server that does not offer it, or an
    /// export that fails, is an error.
    Bulk,
}

/// What happened to the attempt at a Bulk Data export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkOutcome {
    /// The server does not offer it (CapabilityStatement, or 404/405/501).
    NotOffered(String),
    /// It was offered but failed (refused, timed out, reported errors).
    Failed(String),
}

/// What to do after a Bulk Data export could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read by paged searches; the page says why.
    Search { why: String },
    /// Stop with this error.
    Fail(String),
}

impl ReadMode {
    /// Whether to try an export first.
    pub fn tries_bulk(self) -> bool {
        self != ReadMode::Search
    }

    /// After `outcome`: fall back to searches, unless export was required.
    pub fn after(self, outcome: BulkOutcome) -> Next {
        let why = match outcome {
            BulkOutcome::NotOffered(w) => format!("the EHR does not offer Bulk Data export ({w})"),
            BulkOutcome::Failed(w) => format!("the Bulk Data export failed: {w}"),
        };
        match self {
            ReadMode::Bulk => Next::Fail(why),
            ReadMode::Auto | ReadMode::Search => Next::Search { why },
        }
    }
}

/// The path the last result was read by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub enum ReadPath {
    /// Paged searches; `why` bulk export was not used, when it was tried.
    #[default]
    Search,
    SearchAfter {
        why: String,
    },
    /// FHIR Bulk Data export; `unreadable` lines (malformed JSON, another
    /// resource type than the file's) were not counted, by resource type.
    Bulk {
        unreadable: Vec<(String, usize)>,
    },
}

impl ReadPath {
    /// The sentence the result page shows.
    pub fn words(&self) -> String {
        match self {
            ReadPath::Search => "Read by paged FHIR searches.".into(),
            ReadPath::SearchAfter { why } => {
                format!("Read by paged FHIR searches: {why}.")
            }
            ReadPath::Bulk { unreadable } if unreadable.is_empty() => {
                "Read by FHIR Bulk Data export.".into()
            }
            ReadPath::Bulk { unreadable } => {
                let n: usize = unreadable.iter().map(|(_, n)| n).sum();
                let by: Vec<String> = unreadable
                    .iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect();
                format!(
                    "Read by FHIR Bulk Data export; {n} line{} of the export could not be read and {} not counted ({}).",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "is" } else { "are" },
                    by.join(", ")
                )
            }
        }
    }

    pub fn is_bulk(&self) -> bool {
        matches!(self, ReadPath::Bulk { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_searches_and_bulk_only_fails() {
        let gone = || BulkOutcome::NotOffered("Patient/$export answered 404".into());
        assert!(ReadMode::Auto.tries_bulk() && ReadMode::Bulk.tries_bulk());
        assert!(!ReadMode::Search.tries_bulk());
        assert_eq!(
            ReadMode::Auto.after(gone()),
            Next::Search {
                why: "the EHR does not offer Bulk Data export (Patient/$export answered 404)"
                    .into()
            }
        );
        assert!(matches!(
            ReadMode::Bulk.after(BulkOutcome::Failed("x".into())),
            Next::Fail(w) if w == "the Bulk Data export failed: x"
        ));
    }

    #[test]
    fn the_page_says_which_path_and_what_was_not_read() {
        assert_eq!(ReadPath::Search.words(), "Read by paged FHIR searches.");
        assert_eq!(
            ReadPath::Bulk { unreadable: vec![] }.words(),
            "Read by FHIR Bulk Data export."
        );
        let one = ReadPath::Bulk {
            unreadable: vec![("Encounter".into(), 1)],
        };
        assert_eq!(
            one.words(),
            "Read by FHIR Bulk Data export; 1 line of the export could not be read and is not counted (Encounter: 1)."
        );
        assert!(one.is_bulk() && !ReadPath::Search.is_bulk());
    }
}
