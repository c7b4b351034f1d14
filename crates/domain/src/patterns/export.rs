//! The report: the measures after suppression, as the patterns page shows
//! them and the exports write them. Each cell of a table or a trend, each
//! rate, median and repeated denial is a row of the CSV export; each table,
//! rate, median and trend is a group of the FHIR MeasureReport (its cells,
//! strata). A suppressed value is `None`; the distinct patients behind a
//! cell are kept for complementary suppression and never serialized.

use serde::Serialize;

use super::accumulator::Counted;

/// One count of a table or a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub label: String,
    /// None: suppressed ("< 11").
    pub value: Option<u64>,
    /// Distinct patients behind the count (never exported).
    #[serde(skip)]
    pub patients: u64,
}

/// A count broken down by one dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub id: String,
    pub title: String,
    pub definition: String,
    /// "payer", "postal area", …
    pub dimension: String,
    /// "denials", "patients", …
    pub unit: String,
    /// Sorted by value, largest first; suppressed cells last, by label (so
    /// that their order reveals nothing).
    pub cells: Vec<Cell>,
    /// The sum of the cells; None when it counts fewer than 11 patients or
    /// would reveal a suppressed cell.
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rate {
    pub id: String,
    pub title: String,
    pub definition: String,
    pub numerator: Option<u64>,
    pub denominator: Option<u64>,
    /// Rounded to one decimal.
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Median {
    pub id: String,
    pub title: String,
    pub definition: String,
    /// Rounded to two decimals.
    pub days: Option<f64>,
    pub n: Option<u64>,
}

/// The same item denied by the same payer for several patients; listed only
/// when at least 11 patients, and otherwise not listed at all. The number of
/// patients is given as a band ([`patient_band`](super::patient_band)): exact, it could be
/// subtracted from the payer's or the item's cell to recover a suppressed one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repeated {
    pub payer: String,
    pub item: String,
    /// "11-19", "20-49", "50-99" or "100 or more".
    pub patients: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    pub id: String,
    pub title: String,
    pub definition: String,
    pub unit: String,
    /// One per month "YYYY-MM" of the period, in order.
    pub points: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// First and last day, "YYYY-MM-DD".
    pub period: (String, String),
    /// RFC 3339.
    pub computed: String,
    pub tables: Vec<Table>,
    pub rates: Vec<Rate>,
    pub medians: Vec<Median>,
    pub repeated: Vec<Repeated>,
    pub trends: Vec<Trend>,
    pub counted: Counted,
    /// How the records were read (set by the reader).
    pub read: super::ReadPath,
}

impl Report {
    pub fn table(&self, id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.id == id)
    }
    pub fn rate(&self, id: &str) -> Option<&Rate> {
        self.rates.iter().find(|r| r.id == id)
    }
    pub fn median(&self, id: &str) -> Option<&Median> {
        self.medians.iter().find(|m| m.id == id)
    }
    pub fn trend(&self, id: &str) -> Option<&Trend> {
        self.trends.iter().find(|t| t.id == id)
    }
}

impl Table {
    /// The cell with this label.
    pub fn cell(&self, label: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.label == label)
    }
}
