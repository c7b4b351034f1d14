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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, Month, OffsetDateTime};

/// Cells with fewer patients than this are suppressed.
pub const SMALL_CELL: u64 = 11;

/// The suppression rule in one sentence, stated in exports.
pub const SUPPRESSION_RULE: &str = "Any count that rests on 1 to 10 distinct patients is shown as \"< 11\" (a zero is shown, since it reveals nobody); when a table or monthly series has exactly one such cell, which its total would let a reader recover by subtraction, the smallest other non-zero cell is suppressed too (or the total withheld if there is none); a rate is withheld when its numerator, its denominator or their difference rests on 1 to 10 patients, a median when it rests on fewer than 11; a rate whose numerator a table also shows (positivity by domain, unmet needs) is withheld with the table's figure, and loses its denominator too when its numerator is withheld but the table shows it; the share of late appeal decisions is withheld when the expedited or the standard share it adds up is; an item denied by one payer is listed as repeated only for 11 or more patients, with their number as a band (11-19, 20-49, 50-99, 100 or more), never exact; postal areas are the first three digits of the ZIP code, and the areas of fewer than 20,000 people that HIPAA's Safe Harbor names are shown as 000.";

/// How a suppressed value is shown.
pub const SUPPRESSED: &str = "< 11";
/// The label of a cell for records without the dimension's value.
pub const UNKNOWN: &str = "unknown";
/// The label of the reason cell for denials that give no reason code.
pub const NO_REASON: &str = "no reason given";
/// An expedited appeal decided later than this after filing is late.
pub const EXPEDITED_CLOCK_HOURS: i64 = 72;
/// A standard appeal decided later than this after filing is late
/// (standard pre-service decisions, 42 CFR 422.568(b)).
pub const STANDARD_CLOCK_DAYS: i64 = 7;
/// A referral still requested (or received) this many days after it was
/// authored, at the end of the period, counts as never answered.
pub const UNANSWERED_AFTER_DAYS: i64 = 30;
/// A referral closed within this many days of the positive screen it
/// answers counts as closed in time.
pub const CLOSED_WITHIN_DAYS: i64 = 60;
/// The dimensions of the breakdowns by the patients' facts, as table ids end.
pub const DIMENSIONS: [&str; 5] = ["payer", "postal-area", "language", "age-band", "sex"];
/// Age bands, youngest first.
pub const AGE_BANDS: [&str; 4] = ["0-17", "18-39", "40-64", "65+"];

/// A period of whole days, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Date,
    pub end: Date,
}

impl Period {
    /// Whether `d` falls in the period (both ends included).
    pub fn contains(&self, d: Date) -> bool {
        self.start <= d && d <= self.end
    }

    /// The months the period touches, as "YYYY-MM", in order.
    pub fn months(&self) -> Vec<String> {
        (0..self.month_count())
            .map(|i| {
                let (y, m) = self.month_at(i);
                format!("{y:04}-{:02}", m as u8)
            })
            .collect()
    }

    fn month_count(&self) -> usize {
        if self.start > self.end {
            return 0;
        }
        (month_number(self.end) - month_number(self.start) + 1) as usize
    }

    /// The index of `d`'s month among [`Period::months`], when `d` is in the period.
    fn month_index(&self, d: Date) -> Option<usize> {
        self.contains(d)
            .then(|| (month_number(d) - month_number(self.start)) as usize)
    }

    fn month_at(&self, i: usize) -> (i32, Month) {
        let n = month_number(self.start) + i as i32;
        let year = n.div_euclid(12);
        let month = Month::try_from((n.rem_euclid(12) + 1) as u8).expect("1..=12");
        (year, month)
    }

    /// The last day of month `i` of the period, or the period's end if earlier.
    fn month_last_day(&self, i: usize) -> Date {
        let (y, m) = self.month_at(i);
        let last = Date::from_calendar_date(y, m, m.length(y)).expect("a valid day");
        last.min(self.end)
    }
}

fn month_number(d: Date) -> i32 {
    d.year() * 12 + d.month() as i32 - 1
}

/// What a patient's breakdowns use; nothing that names them.
#[derive(Debug, Clone, Default)]
pub struct PatientFacts {
    /// First 3 digits of the ZIP code.
    pub postal_area: Option<String>,
    /// BCP 47 primary language subtag.
    pub language: Option<String>,
    /// Administrative gender.
    pub sex: Option<String>,
    pub birth_date: Option<Date>,
}

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

/// A denied claim or prior authorization: a ClaimResponse, or a denial
/// entered by hand from the payer's notice, which its appeal Task records.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// ClaimResponse id, or `Task/{id}` of the appeal recording a hand-entered one.
    pub id: String,
    pub patient: String,
    pub payer: String,
    /// Coverage type label.
    pub plan_type: Option<String>,
    /// "code display" of the drug or service.
    pub item: Option<String>,
    /// Reason codes.
    pub reasons: Vec<String>,
    /// Date of the notice.
    pub date: Date,
}

/// An appeal (a Task).
#[derive(Debug, Clone, PartialEq)]
pub struct Appeal {
    pub id: String,
    pub patient: String,
    /// Id of the denial it answers (as in [`Denial::id`]).
    pub denial: Option<String>,
    pub kind: String,
    pub expedited: bool,
    pub filed: OffsetDateTime,
    /// When completed (decision known).
    pub decided: Option<OffsetDateTime>,
    /// overturned | partly-overturned | upheld
    pub outcome: Option<String>,
    /// Task status.
    pub status: String,
}

/// A referral (an SDOHCC Task fulfilling a ServiceRequest).
#[derive(Debug, Clone, PartialEq)]
pub struct Referral {
    pub id: String,
    pub patient: String,
    /// SDOHCC category code.
    pub domain: Option<String>,
    pub service: Option<String>,
    pub authored: Date,
    pub accepted: Option<Date>,
    /// Completed.
    pub closed: Option<Date>,
    /// Task status.
    pub status: String,
}

/// One domain's result of a screening.
#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub patient: String,
    pub date: Date,
    /// SDOHCC category code.
    pub domain: String,
    pub positive: bool,
}

/// A visit (an Encounter).
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub patient: String,
    pub date: Date,
}

/// A Coverage's period and whether its status is active.
#[derive(Debug, Clone, PartialEq)]
pub struct CoverageSpan {
    pub patient: String,
    pub start: Option<Date>,
    pub end: Option<Date>,
    /// Status active.
    pub active: bool,
    /// The payer's name, for the breakdowns by the patient's payer.
    pub payer: Option<String>,
}

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
/// patients is given as a band ([`patient_band`]): exact, it could be
/// subtracted from the payer's or the item's cell to recover a suppressed one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Repeated {
    pub payer: String,
    pub item: String,
    /// "11-19", "20-49", "50-99" or "100 or more".
    pub patients: &'static str,
}

/// The band of a repeated denial's patients (11 or more).
pub fn patient_band(patients: u64) -> &'static str {
    match patients {
        ..=19 => "11-19",
        20..=49 => "20-49",
        50..=99 => "50-99",
        _ => "100 or more",
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

/// Raw counts of the records given to the accumulator, whatever their date
/// and including duplicates and records the measures leave out (for progress
/// and checks; not broken down, so not suppressed).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counted {
    pub patients: u64,
    pub denials: u64,
    pub appeals: u64,
    pub referrals: u64,
    pub screens: u64,
    pub visits: u64,
    pub coverages: u64,
}

// ---------------------------------------------------------------------------
// Compact state

/// A 128-bit hash of an id: the joins keep this instead of the id's text
/// (two SipHash runs; a collision among a billion ids has odds near 1e-21).
pub fn id_key(id: &str) -> u128 {
    let mut a = DefaultHasher::new();
    id.hash(&mut a);
    let mut b = DefaultHasher::new();
    0xA5u8.hash(&mut b);
    id.hash(&mut b);
    ((a.finish() as u128) << 64) | b.finish() as u128
}

#[derive(Default)]
struct Labels {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Labels {
    fn id(&mut self, label: &str) -> u32 {
        let label = label.trim();
        let label = if label.is_empty() { UNKNOWN } else { label };
        if let Some(&i) = self.index.get(label) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(label.to_owned());
        self.index.insert(label.to_owned(), i);
        i
    }
    fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

// Per-patient flags, set as appeals and referrals stream in; they give the
// distinct patients behind the rates and medians without keeping records.
const F_OUTCOME: u32 = 1 << 0;
const F_OVERTURNED: u32 = 1 << 1;
const F_UPHELD: u32 = 1 << 2;
const F_TIMED: u32 = 1 << 3;
const F_LATE: u32 = 1 << 4;
const F_ON_TIME: u32 = 1 << 5;
const F_EXP_TIMED: u32 = 1 << 6;
const F_EXP_LATE: u32 = 1 << 7;
const F_EXP_ON_TIME: u32 = 1 << 8;
const F_STD_TIMED: u32 = 1 << 9;
const F_STD_LATE: u32 = 1 << 10;
const F_STD_ON_TIME: u32 = 1 << 11;
const F_ACCEPTED: u32 = 1 << 12;
const F_CLOSED: u32 = 1 << 13;

#[derive(Default, Clone)]
struct PatientState {
    postal: Option<u32>,
    language: Option<u32>,
    sex: Option<u32>,
    birth: Option<Date>,
    /// The payer of the coverage active on the period's last day (the one
    /// that began last, when several are), with its start.
    payer: Option<(u32, Option<Date>)>,
    denials: u32,
    referrals: u32,
    positives: u32,
    flags: u32,
}

/// A set of patients (their indexes) as bits: one bit per patient per key,
/// so distinct-patient counts cost a few hundred bytes per key whatever the
/// number of records.
#[derive(Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, p: u32) {
        let (w, b) = (p as usize / 64, 1u64 << (p % 64));
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= b;
    }
    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    fn union_into(&self, seen: &mut Seen) {
        for (i, w) in self.0.iter().enumerate() {
            let mut w = *w;
            while w != 0 {
                let b = w.trailing_zeros();
                seen.insert((i * 64) as u32 + b);
                w &= w - 1;
            }
        }
    }
}

/// Records and distinct patients per key.
struct Keyed<K> {
    values: HashMap<K, u64>,
    patients: HashMap<K, Bits>,
}

impl<K> Default for Keyed<K> {
    fn default() -> Self {
        Keyed {
            values: HashMap::new(),
            patients: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Copy> Keyed<K> {
    fn add(&mut self, key: K, patient: u32) {
        *self.values.entry(key).or_default() += 1;
        self.patients.entry(key).or_default().insert(patient);
    }

    fn patients_by_key(&self) -> HashMap<K, u64> {
        self.patients.iter().map(|(k, b)| (*k, b.count())).collect()
    }

    fn distinct_patients(&self, n: usize) -> u64 {
        let mut seen = Seen::new(n);
        for b in self.patients.values() {
            b.union_into(&mut seen);
        }
        seen.count
    }

    /// (value, distinct patients) per key.
    fn cells(&self) -> Vec<(K, u64, u64)> {
        let patients = self.patients_by_key();
        self.values
            .iter()
            .map(|(k, v)| (*k, *v, patients.get(k).copied().unwrap_or(0)))
            .collect()
    }
}

/// Records and distinct patients per month of the period.
struct Monthly {
    values: Vec<u64>,
    patients: Vec<Bits>,
}

impl Monthly {
    fn new(months: usize) -> Self {
        Monthly {
            values: vec![0; months],
            patients: vec![Bits::default(); months],
        }
    }
    fn add(&mut self, month: usize, patient: u32) {
        self.values[month] += 1;
        self.patients[month].insert(patient);
    }
    fn points(&self, period: &Period) -> Vec<(String, u64, u64)> {
        let patients: Vec<u64> = self.patients.iter().map(Bits::count).collect();
        period
            .months()
            .into_iter()
            .zip(self.values.iter().zip(patients))
            .map(|(label, (v, p))| (label, *v, p))
            .collect()
    }
}

/// A set of patient indexes, one bit each.
struct Seen {
    bits: Vec<u64>,
    count: u64,
}

impl Seen {
    fn new(n: usize) -> Self {
        Seen {
            bits: vec![0; n.div_ceil(64)],
            count: 0,
        }
    }
    fn insert(&mut self, p: u32) {
        let (w, b) = (p as usize / 64, 1u64 << (p % 64));
        if self.bits[w] & b == 0 {
            self.bits[w] |= b;
            self.count += 1;
        }
    }
}

/// A histogram of durations (minutes or days): exact medians in memory
/// bounded by the distinct durations.
#[derive(Debug, Clone, Default)]
struct Histogram(BTreeMap<i64, u64>);

impl Histogram {
    fn add(&mut self, v: i64) {
        *self.0.entry(v).or_default() += 1;
    }
    fn n(&self) -> u64 {
        self.0.values().sum()
    }
    fn median(&self) -> Option<f64> {
        let n = self.n();
        if n == 0 {
            return None;
        }
        let (lo, hi) = ((n - 1) / 2, n / 2);
        let (mut lo_v, mut hi_v) = (None, None);
        let mut seen = 0;
        for (v, c) in &self.0 {
            let next = seen + c;
            if lo_v.is_none() && lo < next {
                lo_v = Some(*v);
            }
            if hi < next {
                hi_v = Some(*v);
                break;
            }
            seen = next;
        }
        Some((lo_v? + hi_v?) as f64 / 2.0)
    }
}

#[derive(Clone, Copy)]
struct ReferralJoin {
    patient: u32,
    domain: u32,
    authored: Date,
    closed: Option<Date>,
}

#[derive(Clone, Copy)]
struct Span {
    patient: u32,
    start: Option<Date>,
    end: Option<Date>,
    active: bool,
}

impl Span {
    fn covers(&self, d: Date) -> bool {
        self.start.is_none_or(|s| s <= d) && self.end.is_none_or(|e| d <= e)
    }
}

/// Task statuses whose records no measure counts.
fn left_out(status: &str) -> bool {
    matches!(status, "entered-in-error" | "draft")
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// The accumulator

/// Takes records as they stream in and folds them into compact counts.
pub struct Accumulator {
    period: Period,
    counted: Counted,
    labels: Labels,
    patient_index: HashMap<u128, u32>,
    patients: Vec<PatientState>,

    // Denials in the period: id → patient, for the join with appeals.
    denials: HashMap<u128, u32>,
    // Denial ids that some appeal answers (whenever filed).
    appealed: HashSet<u128>,
    by_payer: Keyed<u32>,
    by_plan: Keyed<u32>,
    by_item: Keyed<u32>,
    by_reason: Keyed<u32>,
    by_payer_item: Keyed<(u32, u32)>,
    denials_monthly: Monthly,

    appeals: HashSet<u128>,
    outcomes: u64,
    overturned: u64,
    timed: [u64; 3],
    late: [u64; 3],
    decision_minutes: Histogram,

    referrals: HashSet<u128>,
    by_domain: Keyed<u32>,
    by_service: Keyed<u32>,
    unanswered: Keyed<u32>,
    accept_days: Histogram,
    close_days: Histogram,
    referral_joins: Vec<ReferralJoin>,

    // Positive screens up to the period's end: (patient, domain, date).
    positives: Vec<(u32, u32, Date)>,
    screened_by_domain: Keyed<u32>,
    positive_by_domain: Keyed<u32>,
    negative_by_domain: Keyed<u32>,
    positives_monthly: Monthly,
    screened_days: Vec<(u32, Date)>,

    visits: Vec<(u32, Date)>,
    spans: Vec<Span>,
}

impl Accumulator {
    pub fn new(period: Period) -> Self {
        let months = period.month_count();
        Accumulator {
            period,
            counted: Counted::default(),
            labels: Labels::default(),
            patient_index: HashMap::new(),
            patients: Vec::new(),
            denials: HashMap::new(),
            appealed: HashSet::new(),
            by_payer: Keyed::default(),
            by_plan: Keyed::default(),
            by_item: Keyed::default(),
            by_reason: Keyed::default(),
            by_payer_item: Keyed::default(),
            denials_monthly: Monthly::new(months),
            appeals: HashSet::new(),
            outcomes: 0,
            overturned: 0,
            timed: [0; 3],
            late: [0; 3],
            decision_minutes: Histogram::default(),
            referrals: HashSet::new(),
            by_domain: Keyed::default(),
            by_service: Keyed::default(),
            unanswered: Keyed::default(),
            accept_days: Histogram::default(),
            close_days: Histogram::default(),
            referral_joins: Vec::new(),
            positives: Vec::new(),
            screened_by_domain: Keyed::default(),
            positive_by_domain: Keyed::default(),
            negative_by_domain: Keyed::default(),
            positives_monthly: Monthly::new(months),
            screened_days: Vec::new(),
            visits: Vec::new(),
            spans: Vec::new(),
        }
    }

    fn pid(&mut self, id: &str) -> u32 {
        let next = self.patients.len() as u32;
        let p = *self.patient_index.entry(id_key(id)).or_insert(next);
        if p == next {
            self.patients.push(PatientState::default());
        }
        p
    }

    fn label(&mut self, value: Option<&str>) -> u32 {
        self.labels.id(value.unwrap_or(UNKNOWN))
    }

    /// A patient's facts; before or after their other records. Given twice,
    /// the later facts win.
    pub fn patient(&mut self, id: &str, facts: PatientFacts) {
        self.counted.patients += 1;
        let p = self.pid(id);
        let postal = facts.postal_area.as_deref().map(|s| self.labels.id(s));
        let language = facts.language.as_deref().map(|s| self.labels.id(&norm(s)));
        let sex = facts.sex.as_deref().map(|s| self.labels.id(&norm(s)));
        let st = &mut self.patients[p as usize];
        st.postal = postal;
        st.language = language;
        st.sex = sex;
        st.birth = facts.birth_date;
    }

    /// A denial noticed in the period (others are ignored); an id seen twice
    /// counts once.
    pub fn denial(&mut self, d: Denial) {
        self.counted.denials += 1;
        let Some(month) = self.period.month_index(d.date) else {
            return;
        };
        let key = id_key(&d.id);
        if self.denials.contains_key(&key) {
            return;
        }
        let p = self.pid(&d.patient);
        self.denials.insert(key, p);
        self.patients[p as usize].denials += 1;
        let payer = self.labels.id(&d.payer);
        let plan = self.label(d.plan_type.as_deref());
        self.by_payer.add(payer, p);
        self.by_plan.add(plan, p);
        let item = self.label(d.item.as_deref());
        self.by_item.add(item, p);
        if d.item.as_deref().is_some_and(|i| !i.trim().is_empty()) {
            self.by_payer_item.add((payer, item), p);
        }
        let mut reasons: Vec<u32> = d.reasons.iter().map(|r| self.labels.id(r)).collect();
        reasons.sort_unstable();
        reasons.dedup();
        if reasons.is_empty() {
            reasons.push(self.labels.id(NO_REASON));
        }
        for r in reasons {
            self.by_reason.add(r, p);
        }
        self.denials_monthly.add(month, p);
    }

    /// An appeal. Its link to a denial is kept whenever it was filed (so a
    /// denial late in the period appealed after it counts as appealed); the
    /// appeal itself is counted when filed in the period. Draft and
    /// entered-in-error appeals are left out; an id seen twice counts once.
    pub fn appeal(&mut self, a: Appeal) {
        self.counted.appeals += 1;
        if left_out(&norm(&a.status)) {
            return;
        }
        if let Some(denial) = &a.denial {
            self.appealed.insert(id_key(denial));
        }
        if !self.period.contains(a.filed.date()) || !self.appeals.insert(id_key(&a.id)) {
            return;
        }
        let p = self.pid(&a.patient);
        let mut flags = 0;
        match a.outcome.as_deref().map(norm).as_deref() {
            Some("overturned" | "partly-overturned") => {
                self.outcomes += 1;
                self.overturned += 1;
                flags |= F_OUTCOME | F_OVERTURNED;
            }
            Some("upheld") => {
                self.outcomes += 1;
                flags |= F_OUTCOME | F_UPHELD;
            }
            _ => {}
        }
        if let Some(decided) = a.decided {
            let took = decided - a.filed;
            if !took.is_negative() {
                let expedited = a.expedited || norm(&a.kind) == "expedited-appeal";
                let (clock, which, f_timed, f_late, f_on_time) = if expedited {
                    (
                        Duration::hours(EXPEDITED_CLOCK_HOURS),
                        1,
                        F_EXP_TIMED,
                        F_EXP_LATE,
                        F_EXP_ON_TIME,
                    )
                } else {
                    (
                        Duration::days(STANDARD_CLOCK_DAYS),
                        2,
                        F_STD_TIMED,
                        F_STD_LATE,
                        F_STD_ON_TIME,
                    )
                };
                self.decision_minutes.add(took.whole_minutes());
                self.timed[0] += 1;
                self.timed[which] += 1;
                flags |= F_TIMED | f_timed;
                if took > clock {
                    self.late[0] += 1;
                    self.late[which] += 1;
                    flags |= F_LATE | f_late;
                } else {
                    flags |= F_ON_TIME | f_on_time;
                }
            }
        }
        self.patients[p as usize].flags |= flags;
    }

    /// A referral authored in the period (others are ignored). Draft and
    /// entered-in-error referrals are left out; an id seen twice counts once.
    pub fn referral(&mut self, r: Referral) {
        self.counted.referrals += 1;
        let status = norm(&r.status);
        if left_out(&status) || !self.period.contains(r.authored) {
            return;
        }
        if !self.referrals.insert(id_key(&r.id)) {
            return;
        }
        let p = self.pid(&r.patient);
        self.patients[p as usize].referrals += 1;
        let domain = self.label(r.domain.as_deref());
        let service = self.label(r.service.as_deref());
        self.by_domain.add(domain, p);
        self.by_service.add(service, p);
        let waited = (self.period.end - r.authored).whole_days();
        let unanswered = matches!(status.as_str(), "rejected" | "cancelled")
            || (matches!(status.as_str(), "requested" | "received")
                && r.accepted.is_none()
                && waited > UNANSWERED_AFTER_DAYS);
        if unanswered {
            self.unanswered.add(domain, p);
        }
        let mut flags = 0;
        if let Some(days) = r.accepted.map(|a| (a - r.authored).whole_days())
            && days >= 0
        {
            self.accept_days.add(days);
            flags |= F_ACCEPTED;
        }
        if let Some(days) = r.closed.map(|c| (c - r.authored).whole_days())
            && days >= 0
        {
            self.close_days.add(days);
            flags |= F_CLOSED;
        }
        self.patients[p as usize].flags |= flags;
        if r.domain.as_deref().is_some_and(|d| !d.trim().is_empty()) {
            self.referral_joins.push(ReferralJoin {
                patient: p,
                domain,
                authored: r.authored,
                closed: r.closed,
            });
        }
    }

    /// A screening result in one domain, of any date: a positive screen up
    /// to the period's end is kept for the join with referrals; a screen is
    /// counted when in the period; later ones are ignored.
    pub fn screen(&mut self, s: Screen) {
        self.counted.screens += 1;
        if s.date > self.period.end {
            return;
        }
        let p = self.pid(&s.patient);
        let domain = self.labels.id(&s.domain);
        if s.positive {
            self.positives.push((p, domain, s.date));
        }
        let Some(month) = self.period.month_index(s.date) else {
            return;
        };
        self.screened_by_domain.add(domain, p);
        if s.positive {
            self.positive_by_domain.add(domain, p);
            self.positives_monthly.add(month, p);
            self.patients[p as usize].positives += 1;
        } else {
            self.negative_by_domain.add(domain, p);
        }
        self.screened_days.push((p, s.date));
    }

    /// A visit in the period (others are ignored); two visits of a patient
    /// on one day count as one.
    pub fn visit(&mut self, v: Visit) {
        self.counted.visits += 1;
        if self.period.contains(v.date) {
            let p = self.pid(&v.patient);
            self.visits.push((p, v.date));
        }
    }

    /// A coverage period; those starting after the day following the
    /// period's end can affect no measure and are ignored.
    pub fn coverage(&mut self, c: CoverageSpan) {
        self.counted.coverages += 1;
        let horizon = self.period.end.next_day().unwrap_or(self.period.end);
        if c.start.is_some_and(|s| s > horizon) {
            return;
        }
        let p = self.pid(&c.patient);
        let covers_end = c.start.is_none_or(|s| s <= self.period.end)
            && c.end.is_none_or(|e| self.period.end <= e);
        if c.active
            && covers_end
            && let Some(payer) = c.payer.as_deref()
        {
            let payer = self.labels.id(payer);
            let st = &mut self.patients[p as usize];
            if st.payer.is_none_or(|(_, start)| c.start > start) {
                st.payer = Some((payer, c.start));
            }
        }
        self.spans.push(Span {
            patient: p,
            start: c.start,
            end: c.end,
            active: c.active,
        });
    }

    /// Every measure, suppressed by [`SUPPRESSION_RULE`].
    pub fn finish(self, computed: OffsetDateTime) -> Report {
        self.finish_raw().suppress(computed)
    }

    /// Every measure's counts before suppression: what the computations of
    /// disjoint sets of patients add up ([`Raw::merge`]).
    pub fn finish_raw(mut self) -> Raw {
        let n = self.patients.len();
        let period = self.period;
        let mut tables = Vec::new();
        let mut rates = Vec::new();
        let mut medians = Vec::new();
        let mut trends = Vec::new();

        // --- joins that need every record --------------------------------
        self.positives.sort_unstable();
        self.positives.dedup();
        let mut referred: Vec<(u32, u32)> = self
            .referral_joins
            .iter()
            .map(|r| (r.patient, r.domain))
            .collect();
        referred.sort_unstable();
        referred.dedup();

        // Referrals closed within 60 days of the positive screen they answer.
        let (mut in_time, mut linked) = (0u64, 0u64);
        let (mut in_time_p, mut linked_p, mut late_p) = (Seen::new(n), Seen::new(n), Seen::new(n));
        for r in &self.referral_joins {
            let lo = self
                .positives
                .partition_point(|&(p, d, _)| (p, d) < (r.patient, r.domain));
            let hi = self
                .positives
                .partition_point(|&(p, d, _)| (p, d) <= (r.patient, r.domain));
            let dates = &self.positives[lo..hi];
            let upto = dates.partition_point(|&(_, _, date)| date <= r.authored);
            let Some(&(_, _, screened)) = upto.checked_sub(1).map(|i| &dates[i]) else {
                continue;
            };
            linked += 1;
            linked_p.insert(r.patient);
            let closed_in_time = r.closed.is_some_and(|c| {
                let days = (c - screened).whole_days();
                (0..=CLOSED_WITHIN_DAYS).contains(&days)
            });
            if closed_in_time {
                in_time += 1;
                in_time_p.insert(r.patient);
            } else {
                late_p.insert(r.patient);
            }
        }

        // Unmet needs: a positive screen in the period, no referral in that
        // domain authored in the period.
        let mut unmet_by_domain: HashMap<u32, u64> = HashMap::new();
        let mut unmet_patients = Seen::new(n);
        let mut positive_patients = Seen::new(n);
        let mut unmet_count = vec![0u32; n];
        let mut i = 0;
        while i < self.positives.len() {
            let (p, d, _) = self.positives[i];
            let mut j = i;
            let mut in_period = false;
            while j < self.positives.len() && (self.positives[j].0, self.positives[j].1) == (p, d) {
                in_period |= period.contains(self.positives[j].2);
                j += 1;
            }
            if in_period {
                positive_patients.insert(p);
                if referred.binary_search(&(p, d)).is_err() {
                    *unmet_by_domain.entry(d).or_default() += 1;
                    unmet_patients.insert(p);
                    unmet_count[p as usize] += 1;
                }
            }
            i = j;
        }

        // Visits screened: any screening of the patient on the visit's day.
        self.visits.sort_unstable();
        self.visits.dedup();
        self.screened_days.sort_unstable();
        self.screened_days.dedup();
        let (mut screened_visits, mut visit_p, mut screened_p, mut unscreened_p) =
            (0u64, Seen::new(n), Seen::new(n), Seen::new(n));
        for v in &self.visits {
            visit_p.insert(v.0);
            if self.screened_days.binary_search(v).is_ok() {
                screened_visits += 1;
                screened_p.insert(v.0);
            } else {
                unscreened_p.insert(v.0);
            }
        }

        // Appeal rate: denials in the period that an appeal answers.
        let (mut appealed, mut denied_p, mut appealed_p, mut unappealed_p) =
            (0u64, Seen::new(n), Seen::new(n), Seen::new(n));
        for (key, &p) in &self.denials {
            denied_p.insert(p);
            if self.appealed.contains(key) {
                appealed += 1;
                appealed_p.insert(p);
            } else {
                unappealed_p.insert(p);
            }
        }

        // Coverage: lapses and gaps, patient by patient.
        self.spans.sort_unstable_by_key(|s| s.patient);
        let months = period.month_count();
        let mut lapses = Monthly::new(months);
        let mut gaps = Monthly::new(months);
        let month_ends: Vec<Date> = (0..months).map(|m| period.month_last_day(m)).collect();
        for spans in self.spans.chunk_by(|a, b| a.patient == b.patient) {
            let p = spans[0].patient;
            let mut lapse_days: Vec<Date> = Vec::new();
            for (i, s) in spans.iter().enumerate() {
                let Some(end) = s.end else { continue };
                if !period.contains(end) {
                    continue;
                }
                let Some(next) = end.next_day() else { continue };
                let covered = spans
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && o.active && o.covers(next));
                if !covered {
                    lapse_days.push(end);
                }
            }
            lapse_days.sort_unstable();
            lapse_days.dedup();
            for d in lapse_days {
                if let Some(m) = period.month_index(d) {
                    lapses.add(m, p);
                }
            }
            for (m, &day) in month_ends.iter().enumerate() {
                let on_record = spans
                    .iter()
                    .any(|s| s.start.or(s.end).is_none_or(|d| d <= day));
                let covered = spans.iter().any(|s| s.active && s.covers(day));
                if on_record && !covered {
                    gaps.add(m, p);
                }
            }
        }

        // --- tables ------------------------------------------------------
        let labels = &self.labels;
        let keyed = |id: &str,
                     title: &str,
                     definition: &str,
                     dimension: &str,
                     unit: &str,
                     k: &Keyed<u32>| {
            let cells = k
                .cells()
                .into_iter()
                .map(|(key, v, p)| (labels.name(key).to_owned(), v, p))
                .collect();
            raw_table(
                id,
                title,
                definition,
                dimension,
                unit,
                cells,
                k.distinct_patients(n),
            )
        };
        tables.push(keyed(
            "denials-by-payer",
            "Denials by payer",
            "Claims and prior authorizations denied with a notice dated in the period (claim responses, and denials entered by hand from the notice in the appeal form), by the payer that denied them.",
            "payer",
            "denials",
            &self.by_payer,
        ));
        tables.push(keyed(
            "denials-by-plan-type",
            "Denials by plan type",
            "Denials noticed in the period, by the type of the patient's coverage (unknown when the coverage gives none).",
            "plan type",
            "denials",
            &self.by_plan,
        ));
        tables.push(keyed(
            "denials-by-item",
            "Denials by drug or service",
            "Denials noticed in the period, by the code and name of the drug or service denied.",
            "drug or service",
            "denials",
            &self.by_item,
        ));
        tables.push(keyed(
            "denials-by-reason",
            "Denials by reason",
            "Denials noticed in the period, by the payer's reason code (CARC, RARC or X12 886); a denial with several reasons counts once under each, so the total counts denial-reason pairs.",
            "reason",
            "denials",
            &self.by_reason,
        ));
        tables.push(keyed(
            "referrals-by-domain",
            "Referrals by domain",
            "Referrals to community services authored in the period, by social need (SDOH domain).",
            "domain",
            "referrals",
            &self.by_domain,
        ));
        tables.push(keyed(
            "referrals-by-service",
            "Referrals by service",
            "Referrals authored in the period, by the service referred to.",
            "service",
            "referrals",
            &self.by_service,
        ));
        tables.push(keyed(
            "referrals-unanswered-by-domain",
            "Referrals rejected or never answered, by domain",
            "Referrals authored in the period that the service rejected, that were cancelled, or that were still waiting for an answer more than 30 days after they were sent, at the end of the period.",
            "domain",
            "referrals",
            &self.unanswered,
        ));
        tables.push(keyed(
            "positive-screens-by-domain",
            "Positive screens by domain",
            "Screening results in the period that found a social need, by domain.",
            "domain",
            "positive screens",
            &self.positive_by_domain,
        ));
        {
            let cells = unmet_by_domain
                .iter()
                .map(|(d, v)| (labels.name(*d).to_owned(), *v, *v))
                .collect();
            tables.push(raw_table(
                "unmet-needs-by-domain",
                "Unmet needs by domain",
                "Patients who screened positive in a domain in the period with no referral in that domain authored in the period.",
                "domain",
                "patients",
                cells,
                unmet_patients.count,
            ));
        }

        // Breakdowns by the patients' facts.
        let measures: [(&str, &str, &str, &str); 4] = [
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
        let dims: [(&str, &str, &str); DIMENSIONS.len()] = [
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
        for (mi, (mid, mtitle, unit, mdef)) in measures.iter().enumerate() {
            for (did, dname, ddef) in dims {
                // Denials by payer are by the payer that denied them (above).
                if *mid == "denials" && did == "payer" {
                    continue;
                }
                let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
                if did == "age-band" {
                    for band in AGE_BANDS {
                        groups.insert(band.to_owned(), (0, 0));
                    }
                }
                let mut total_p = 0;
                for (p, st) in self.patients.iter().enumerate() {
                    let v = match mi {
                        0 => st.denials,
                        1 => st.referrals,
                        2 => st.positives,
                        _ => (unmet_count[p] > 0) as u32,
                    } as u64;
                    if v == 0 {
                        continue;
                    }
                    total_p += 1;
                    let label = match did {
                        "postal-area" => st.postal.map(|l| labels.name(l)).unwrap_or(UNKNOWN),
                        "language" => st.language.map(|l| labels.name(l)).unwrap_or(UNKNOWN),
                        "sex" => st.sex.map(|l| labels.name(l)).unwrap_or(UNKNOWN),
                        "payer" => st.payer.map(|(l, _)| labels.name(l)).unwrap_or(UNKNOWN),
                        _ => st.birth.map(|b| age_band(b, period.end)).unwrap_or(UNKNOWN),
                    };
                    let g = groups.entry(label.to_owned()).or_default();
                    g.0 += v;
                    g.1 += 1;
                }
                let cells = groups.into_iter().map(|(l, (v, p))| (l, v, p)).collect();
                tables.push(raw_table(
                    &format!("{mid}-by-{did}"),
                    &format!("{mtitle} by {dname}"),
                    &format!("{mdef}, {ddef} (unknown when not recorded)."),
                    dname,
                    unit,
                    cells,
                    total_p,
                ));
            }
        }

        // --- rates -------------------------------------------------------
        let count = |flag: u32| self.patients.iter().filter(|s| s.flags & flag != 0).count() as u64;
        rates.push(RawRate::new(
            "appeal-rate",
            "Appeal rate",
            "Share of denials noticed in the period that an appeal answers (whenever it was filed).",
            (appealed, appealed_p.count),
            (self.denials.len() as u64, denied_p.count),
            unappealed_p.count,
        ));
        rates.push(RawRate::new(
            "overturn-rate",
            "Overturn rate",
            "Share of appeals filed in the period and decided whose denial was overturned in full or in part.",
            (self.overturned, count(F_OVERTURNED)),
            (self.outcomes, count(F_OUTCOME)),
            count(F_UPHELD),
        ));
        rates.push(RawRate::new(
            "late-decisions",
            "Appeal decisions later than the clock",
            "Share of appeals filed in the period and decided whose decision came later than the clock: 72 hours from filing for an expedited appeal, 7 days for a standard one (the clock for standard pre-service decisions, 42 CFR 422.568(b)).",
            (self.late[0], count(F_LATE)),
            (self.timed[0], count(F_TIMED)),
            count(F_ON_TIME),
        )
        .shown_with(ShownWith::SumOf(&["late-decisions-expedited", "late-decisions-standard"])));
        rates.push(RawRate::new(
            "late-decisions-expedited",
            "Expedited appeal decisions later than 72 hours",
            "Share of expedited appeals filed in the period and decided whose decision came more than 72 hours after filing.",
            (self.late[1], count(F_EXP_LATE)),
            (self.timed[1], count(F_EXP_TIMED)),
            count(F_EXP_ON_TIME),
        ));
        rates.push(RawRate::new(
            "late-decisions-standard",
            "Standard appeal decisions later than 7 days",
            "Share of standard appeals filed in the period and decided whose decision came more than 7 days after filing (the clock for standard pre-service decisions, 42 CFR 422.568(b), used here for every kind of appeal).",
            (self.late[2], count(F_STD_LATE)),
            (self.timed[2], count(F_STD_TIMED)),
            count(F_STD_ON_TIME),
        ));
        rates.push(RawRate::new(
            "referrals-closed-within-60-days",
            "Referrals closed within 60 days of a positive screen",
            "Of the referrals authored in the period whose patient screened positive in the referral's domain on or before the day it was authored, the share completed within 60 days of the latest such screen.",
            (in_time, in_time_p.count),
            (linked, linked_p.count),
            late_p.count,
        ));
        rates.push(RawRate::new(
            "visits-screened",
            "Visits with a screening",
            "Share of visits in the period (one per patient and day) on whose day the patient had a screening for social needs.",
            (screened_visits, screened_p.count),
            (self.visits.len() as u64, visit_p.count),
            unscreened_p.count,
        ));
        rates.push(RawRate::new(
            "unmet-needs",
            "Patients with an unmet need",
            "Of the patients who screened positive in the period, the share with a positive domain for which no referral in that domain was authored in the period.",
            (unmet_patients.count, unmet_patients.count),
            (positive_patients.count, positive_patients.count),
            positive_patients.count - unmet_patients.count,
        )
        .shown_with(ShownWith::Totals(
            DIMENSIONS.iter().map(|d| format!("unmet-needs-by-{d}")).collect(),
        )));
        let mut domains: Vec<(String, u32)> = self
            .screened_by_domain
            .values
            .keys()
            .map(|&d| (labels.name(d).to_owned(), d))
            .collect();
        domains.sort();
        let screened_p = self.screened_by_domain.patients_by_key();
        let positive_p = self.positive_by_domain.patients_by_key();
        let negative_p = self.negative_by_domain.patients_by_key();
        let of = |m: &HashMap<u32, u64>, d: u32| m.get(&d).copied().unwrap_or(0);
        for (name, d) in domains {
            let pos = self.positive_by_domain.values.get(&d).copied().unwrap_or(0);
            let all = self.screened_by_domain.values[&d];
            rates.push(RawRate::new(
                &format!("positivity-{name}"),
                &format!("Screening positivity: {name}"),
                &format!("Share of screening results in the domain {name} in the period that found the need."),
                (pos, of(&positive_p, d)),
                (all, of(&screened_p, d)),
                of(&negative_p, d),
            )
            .shown_with(ShownWith::Cell {
                table: "positive-screens-by-domain",
                label: name.clone(),
            }));
        }

        // --- medians -----------------------------------------------------
        medians.push(RawMedian::new(
            "time-to-decision",
            "Time to appeal decision",
            "Median days from filing to decision of the appeals filed in the period and decided.",
            self.decision_minutes.clone(),
            1440.0,
            count(F_TIMED),
        ));
        medians.push(RawMedian::new(
            "time-to-accept",
            "Time for a service to accept a referral",
            "Median days from authoring to acceptance of the referrals authored in the period and accepted.",
            self.accept_days.clone(),
            1.0,
            count(F_ACCEPTED),
        ));
        medians.push(RawMedian::new(
            "time-to-close",
            "Time to close a referral",
            "Median days from authoring to completion of the referrals authored in the period and completed.",
            self.close_days.clone(),
            1.0,
            count(F_CLOSED),
        ));

        // --- repeated denials ----------------------------------------------
        let repeated: BTreeMap<(String, String), u64> = self
            .by_payer_item
            .patients_by_key()
            .into_iter()
            .map(|((payer, item), p)| {
                (
                    (labels.name(payer).to_owned(), labels.name(item).to_owned()),
                    p,
                )
            })
            .collect();

        // --- trends --------------------------------------------------------
        trends.push(RawTrend::new(
            "denials-by-month",
            "Denials by month",
            "Denials by the month of their notice.",
            "denials",
            self.denials_monthly.points(&period),
        ));
        trends.push(RawTrend::new(
            "coverage-lapses-by-month",
            "Coverage lapses by month",
            "Coverages ending in the month with no other active coverage of the patient on the next day (one lapse per patient and day; a coverage no longer active without an end date cannot be placed in a month and is not counted).",
            "lapses",
            lapses.points(&period),
        ));
        trends.push(RawTrend::new(
            "coverage-gaps-by-month",
            "Patients without coverage, by month",
            "Patients with a coverage on record that began on or before the last day of the month (or of the period) but none active on that day.",
            "patients",
            gaps.points(&period),
        ));
        trends.push(RawTrend::new(
            "positive-screens-by-month",
            "Positive screens by month",
            "Screening results that found a social need, by the month of the screening.",
            "positive screens",
            self.positives_monthly.points(&period),
        ));

        Raw {
            period: Some(period),
            tables,
            rates,
            medians,
            trends,
            repeated,
            counted: self.counted,
        }
    }
}

// ---------------------------------------------------------------------------
// Counts before suppression, added up over batches of patients

/// The measures' counts before any suppression. The computations of
/// disjoint sets of patients add up ([`Raw::merge`]): every count and every
/// number of distinct patients is a sum over patients. Suppression is
/// applied once, to the whole ([`Raw::suppress`]).
#[derive(Debug, Clone, Default)]
pub struct Raw {
    period: Option<Period>,
    tables: Vec<RawTable>,
    rates: Vec<RawRate>,
    medians: Vec<RawMedian>,
    trends: Vec<RawTrend>,
    /// (payer, item) → distinct patients.
    repeated: BTreeMap<(String, String), u64>,
    counted: Counted,
}

#[derive(Debug, Clone)]
struct RawTable {
    id: String,
    title: String,
    definition: String,
    dimension: String,
    unit: String,
    /// (label, value, distinct patients)
    cells: Vec<(String, u64, u64)>,
    total_patients: u64,
}

fn raw_table(
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
struct RawRate {
    id: String,
    title: String,
    definition: String,
    num: (u64, u64),
    den: (u64, u64),
    rest_patients: u64,
    /// Another figure that would give back what this rate withholds.
    shown_with: ShownWith,
}

/// What else shows a rate's figures, so that suppression withholds them
/// together.
#[derive(Debug, Clone, Default)]
enum ShownWith {
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
    fn shown_with(mut self, link: ShownWith) -> Self {
        self.shown_with = link;
        self
    }

    fn new(
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
}

#[derive(Debug, Clone)]
struct RawMedian {
    id: String,
    title: String,
    definition: String,
    values: Histogram,
    /// What a value is divided by to give days.
    per_day: f64,
    patients: u64,
}

impl RawMedian {
    fn new(
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
struct RawTrend {
    id: String,
    title: String,
    definition: String,
    unit: String,
    points: Vec<(String, u64, u64)>,
}

impl RawTrend {
    fn new(
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

/// Add `more` cells into `into`, by label (new labels at the end).
fn add_cells(into: &mut Vec<(String, u64, u64)>, more: Vec<(String, u64, u64)>) {
    for (label, v, p) in more {
        match into.iter_mut().find(|c| c.0 == label) {
            Some(c) => {
                c.1 += v;
                c.2 += p;
            }
            None => into.push((label, v, p)),
        }
    }
}

impl Raw {
    /// Add the counts of another set of patients, disjoint from these.
    pub fn merge(&mut self, other: Raw) {
        self.period = self.period.or(other.period);
        for t in other.tables {
            match self.tables.iter_mut().find(|x| x.id == t.id) {
                Some(x) => {
                    add_cells(&mut x.cells, t.cells);
                    x.total_patients += t.total_patients;
                }
                None => self.tables.push(t),
            }
        }
        for r in other.rates {
            match self.rates.iter_mut().find(|x| x.id == r.id) {
                Some(x) => {
                    x.num = (x.num.0 + r.num.0, x.num.1 + r.num.1);
                    x.den = (x.den.0 + r.den.0, x.den.1 + r.den.1);
                    x.rest_patients += r.rest_patients;
                }
                None => self.rates.push(r),
            }
        }
        for m in other.medians {
            match self.medians.iter_mut().find(|x| x.id == m.id) {
                Some(x) => {
                    for (v, c) in m.values.0 {
                        *x.values.0.entry(v).or_default() += c;
                    }
                    x.patients += m.patients;
                }
                None => self.medians.push(m),
            }
        }
        for t in other.trends {
            match self.trends.iter_mut().find(|x| x.id == t.id) {
                Some(x) => add_cells(&mut x.points, t.points),
                None => self.trends.push(t),
            }
        }
        for (k, p) in other.repeated {
            *self.repeated.entry(k).or_default() += p;
        }
        let (a, b) = (&mut self.counted, other.counted);
        a.patients += b.patients;
        a.denials += b.denials;
        a.appeals += b.appeals;
        a.referrals += b.referrals;
        a.screens += b.screens;
        a.visits += b.visits;
        a.coverages += b.coverages;
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

    /// The report: every count suppressed by [`SUPPRESSION_RULE`].
    pub fn suppress(mut self, computed: OffsetDateTime) -> Report {
        // Positivity rates by domain in the domains' order, whichever batch
        // saw a domain first.
        let (mut fixed, mut by_domain): (Vec<RawRate>, Vec<RawRate>) = self
            .rates
            .into_iter()
            .partition(|r| !r.id.starts_with("positivity-"));
        by_domain.sort_by(|a, b| a.id.cmp(&b.id));
        let at = fixed
            .iter()
            .position(|r| r.id == "unmet-needs")
            .map_or(fixed.len(), |i| i + 1);
        fixed.splice(at..at, by_domain);
        self.rates = fixed;
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
        let links: Vec<ShownWith> = self.rates.iter().map(|r| r.shown_with.clone()).collect();
        let mut rates: Vec<Rate> = self
            .rates
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

        // --- rates that other figures would reveal --------------------------
        // A rate whose numerator a table also shows: withheld with the
        // table's figure; and with its numerator withheld while the table
        // shows it, the denominator goes too (it would give the difference).
        // A rate that adds up others: withheld when one of them is.
        let table = |id: &str| tables.iter().find(|t| t.id == id);
        let withheld: Vec<String> = rates
            .iter()
            .filter(|r| r.numerator.is_none() || r.denominator.is_none())
            .map(|r| r.id.clone())
            .collect();
        for (r, link) in rates.iter_mut().zip(&links) {
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

        // --- repeated denials ----------------------------------------------
        let mut repeated: Vec<Repeated> = self
            .repeated
            .into_iter()
            .filter(|(_, p)| *p >= SMALL_CELL)
            .map(|((payer, item), p)| Repeated {
                payer,
                item,
                patients: patient_band(p),
            })
            .collect();
        // By band, largest first, then by name: no order within a band that
        // would rank the exact counts.
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

        let period = self.period.map(|p| (iso_date(p.start), iso_date(p.end)));
        Report {
            period: period.unwrap_or_default(),
            computed: computed.format(&Rfc3339).unwrap_or_default(),
            tables,
            rates,
            medians,
            repeated,
            trends,
            counted: self.counted,
        }
    }
}

fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

// ---------------------------------------------------------------------------
// Suppression

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
    use time::macros::{date, datetime};

    const YEAR: Period = Period {
        start: date!(2025 - 01 - 01),
        end: date!(2025 - 12 - 31),
    };
    const NOW: OffsetDateTime = datetime!(2026-01-05 09:00 UTC);

    fn acc() -> Accumulator {
        Accumulator::new(YEAR)
    }

    fn denial(id: &str, patient: &str, payer: &str, item: &str, date: Date) -> Denial {
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
    fn deny_many(a: &mut Accumulator, prefix: &str, n: usize, payer: &str, item: &str) {
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

    fn appeal(id: &str, patient: &str, denial: Option<&str>, filed: OffsetDateTime) -> Appeal {
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

    fn referral(id: &str, patient: &str, domain: &str, authored: Date, status: &str) -> Referral {
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

    fn screen(patient: &str, date: Date, domain: &str, positive: bool) -> Screen {
        Screen {
            patient: patient.into(),
            date,
            domain: domain.into(),
            positive,
        }
    }

    fn span(patient: &str, start: Option<Date>, end: Option<Date>, active: bool) -> CoverageSpan {
        CoverageSpan {
            patient: patient.into(),
            start,
            end,
            active,
            payer: Some("Sunrise".into()),
        }
    }

    fn values(t: &Table) -> Vec<(&str, Option<u64>)> {
        t.cells
            .iter()
            .map(|c| (c.label.as_str(), c.value))
            .collect()
    }

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
    fn periods_include_both_ends_and_list_their_months() {
        assert!(YEAR.contains(date!(2025 - 01 - 01)));
        assert!(YEAR.contains(date!(2025 - 12 - 31)));
        assert!(!YEAR.contains(date!(2024 - 12 - 31)));
        assert!(!YEAR.contains(date!(2026 - 01 - 01)));
        let p = Period {
            start: date!(2024 - 11 - 20),
            end: date!(2025 - 02 - 03),
        };
        assert_eq!(p.months(), ["2024-11", "2024-12", "2025-01", "2025-02"]);
        assert_eq!(p.month_last_day(0), date!(2024 - 11 - 30));
        assert_eq!(p.month_last_day(3), date!(2025 - 02 - 03));
        let empty = Period {
            start: date!(2025 - 02 - 01),
            end: date!(2025 - 01 - 01),
        };
        assert!(empty.months().is_empty());
    }

    #[test]
    fn denials_on_the_period_boundaries_count_and_those_outside_do_not() {
        let mut a = acc();
        for i in 0..11 {
            let p = format!("p{i}");
            a.denial(denial(
                &format!("first{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 01 - 01),
            ));
            a.denial(denial(
                &format!("last{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 12 - 31),
            ));
            a.denial(denial(
                &format!("before{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2024 - 12 - 31),
            ));
            a.denial(denial(
                &format!("after{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2026 - 01 - 01),
            ));
            // The same id again counts once.
            a.denial(denial(
                &format!("last{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 12 - 31),
            ));
        }
        let r = a.finish(NOW);
        let t = r.table("denials-by-payer").unwrap();
        assert_eq!(values(t), [("Sunrise", Some(22))]);
        assert_eq!(t.total, Some(22));
        assert_eq!(r.counted.denials, 55);
        let months = r.trend("denials-by-month").unwrap();
        assert_eq!(months.points.len(), 12);
        assert_eq!(months.points[0].label, "2025-01");
        assert_eq!(months.points[0].value, Some(11));
        assert_eq!(months.points[11].value, Some(11));
        assert_eq!(months.points[5].value, Some(0));
        assert_eq!(r.period, ("2025-01-01".into(), "2025-12-31".into()));
        assert_eq!(r.computed, "2026-01-05T09:00:00Z");
    }

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
    fn denials_by_plan_item_and_reason() {
        let mut a = acc();
        for i in 0..11 {
            let mut d = denial(
                &format!("d{i}"),
                &format!("p{i}"),
                "Sunrise",
                "72148 MRI lumbar spine",
                date!(2025 - 04 - 01),
            );
            d.reasons = vec!["197".into(), "N54".into(), "197".into()];
            a.denial(d);
            let mut d = denial(
                &format!("e{i}"),
                &format!("p{i}"),
                "Sunrise",
                "72148 MRI lumbar spine",
                date!(2025 - 04 - 02),
            );
            d.plan_type = None;
            d.item = None;
            d.reasons = vec![];
            a.denial(d);
        }
        let r = a.finish(NOW);
        assert_eq!(
            values(r.table("denials-by-plan-type").unwrap()),
            [("Medicaid HMO", Some(11)), ("unknown", Some(11))]
        );
        assert_eq!(
            values(r.table("denials-by-item").unwrap()),
            [("72148 MRI lumbar spine", Some(11)), ("unknown", Some(11))]
        );
        let reasons = r.table("denials-by-reason").unwrap();
        assert_eq!(
            values(reasons),
            [
                ("197", Some(11)),
                ("N54", Some(11)),
                ("no reason given", Some(11))
            ]
        );
        assert_eq!(reasons.total, Some(33));
    }

    #[test]
    fn appeals_join_their_denials_in_any_order() {
        let mut a = acc();
        for i in 0..22 {
            let p = format!("p{i}");
            let filed = datetime!(2025-06-01 10:00 UTC);
            if i < 6 {
                // The appeal arrives before its denial.
                a.appeal(appeal(&format!("a{i}"), &p, Some(&format!("d{i}")), filed));
            }
            a.denial(denial(
                &format!("d{i}"),
                &p,
                "Sunrise",
                "MRI",
                date!(2025 - 05 - 20),
            ));
            if (6..10).contains(&i) {
                a.appeal(appeal(&format!("a{i}"), &p, Some(&format!("d{i}")), filed));
            }
            if (10..11).contains(&i) {
                // Filed after the period: the denial was still appealed.
                a.appeal(appeal(
                    &format!("a{i}"),
                    &p,
                    Some(&format!("d{i}")),
                    datetime!(2026-01-03 10:00 UTC),
                ));
            }
        }
        // Answering a denial outside the period, or none: no effect.
        a.appeal(appeal(
            "x1",
            "q",
            Some("old"),
            datetime!(2025-02-01 10:00 UTC),
        ));
        a.denial(denial("old", "q", "Sunrise", "MRI", date!(2024 - 12 - 01)));
        a.appeal(appeal("x2", "q", None, datetime!(2025-02-01 10:00 UTC)));
        // A draft appeal is not one.
        let mut draft = appeal("x3", "p11", Some("d11"), datetime!(2025-06-01 10:00 UTC));
        draft.status = "draft".into();
        a.appeal(draft);
        let r = a.finish(NOW);
        let rate = r.rate("appeal-rate").unwrap();
        assert_eq!(
            (rate.numerator, rate.denominator, rate.percent),
            (Some(11), Some(22), Some(50.0))
        );
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

    fn decided(
        id: &str,
        patient: &str,
        expedited: bool,
        hours: i64,
        minutes: i64,
        outcome: &str,
    ) -> Appeal {
        let filed = datetime!(2025-03-01 08:00 UTC);
        let mut a = appeal(id, patient, None, filed);
        a.expedited = expedited;
        a.decided = Some(filed + Duration::hours(hours) + Duration::minutes(minutes));
        a.outcome = Some(outcome.into());
        a.status = "completed".into();
        a
    }

    #[test]
    fn overturn_rate_counts_partly_overturned_and_decided_appeals_only() {
        let mut a = acc();
        for i in 0..6 {
            a.appeal(decided(
                &format!("o{i}"),
                &format!("o{i}"),
                false,
                24,
                0,
                "overturned",
            ));
        }
        for i in 0..5 {
            a.appeal(decided(
                &format!("q{i}"),
                &format!("q{i}"),
                false,
                24,
                0,
                "partly-overturned",
            ));
        }
        for i in 0..11 {
            a.appeal(decided(
                &format!("u{i}"),
                &format!("u{i}"),
                false,
                24,
                0,
                "upheld",
            ));
        }
        for i in 0..5 {
            a.appeal(appeal(
                &format!("w{i}"),
                &format!("w{i}"),
                None,
                datetime!(2025-03-01 08:00 UTC),
            ));
        }
        // Filed before the period.
        let mut early = decided("early2", "u1", false, 24, 0, "overturned");
        early.filed = datetime!(2024-12-31 23:00 UTC);
        a.appeal(early);
        let r = a.finish(NOW);
        let o = r.rate("overturn-rate").unwrap();
        assert_eq!(
            (o.numerator, o.denominator, o.percent),
            (Some(11), Some(22), Some(50.0))
        );
    }

    #[test]
    fn decisions_later_than_72_hours_or_7_days_are_late() {
        let mut a = acc();
        for i in 0..11 {
            a.appeal(decided(
                &format!("e-on{i}"),
                &format!("e-on{i}"),
                true,
                72,
                0,
                "upheld",
            ));
            a.appeal(decided(
                &format!("e-late{i}"),
                &format!("e-late{i}"),
                true,
                72,
                1,
                "upheld",
            ));
            a.appeal(decided(
                &format!("s-on{i}"),
                &format!("s-on{i}"),
                false,
                7 * 24,
                0,
                "upheld",
            ));
            a.appeal(decided(
                &format!("s-late{i}"),
                &format!("s-late{i}"),
                false,
                7 * 24 + 1,
                0,
                "upheld",
            ));
            a.appeal(decided(
                &format!("s-slow{i}"),
                &format!("s-slow{i}"),
                false,
                30 * 24,
                0,
                "upheld",
            ));
        }
        // An expedited kind is expedited.
        let mut k = decided("kind", "kind", false, 80, 0, "upheld");
        k.kind = "expedited-appeal".into();
        a.appeal(k);
        let r = a.finish(NOW);
        let e = r.rate("late-decisions-expedited").unwrap();
        assert_eq!((e.numerator, e.denominator), (Some(12), Some(23)));
        let s = r.rate("late-decisions-standard").unwrap();
        assert_eq!((s.numerator, s.denominator), (Some(22), Some(33)));
        let all = r.rate("late-decisions").unwrap();
        assert_eq!((all.numerator, all.denominator), (Some(34), Some(56)));
        assert!(all.definition.contains("42 CFR 422.568(b)"));
        // Median of 56: sorted 72h×11, 72h01×11, 80h, 168h×11, 169h×11, 720h×11;
        // positions 27 and 28 (from 0) are both 168 h → 7 days.
        let m = r.median("time-to-decision").unwrap();
        assert_eq!((m.days, m.n), (Some(7.0), Some(56)));
    }

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

    #[test]
    fn unmet_needs_are_positive_screens_without_a_referral_in_their_domain() {
        let mut a = acc();
        for i in 0..11 {
            let p = format!("met{i}");
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some("627".into()),
                    ..Default::default()
                },
            );
            a.screen(screen(&p, date!(2025 - 04 - 01), "food-insecurity", true));
            a.referral(referral(
                &format!("r{i}"),
                &p,
                "food-insecurity",
                date!(2025 - 06 - 01),
                "requested",
            ));
        }
        for i in 0..11 {
            let p = format!("unmet{i}");
            a.screen(screen(&p, date!(2025 - 04 - 01), "food-insecurity", true));
            a.screen(screen(
                &p,
                date!(2025 - 04 - 01),
                "housing-instability",
                true,
            ));
            // A referral in another domain, and one before the period, do not meet it.
            a.referral(referral(
                &format!("h{i}"),
                &p,
                "housing-instability",
                date!(2025 - 06 - 01),
                "requested",
            ));
            a.referral(referral(
                &format!("o{i}"),
                &p,
                "food-insecurity",
                date!(2024 - 06 - 01),
                "requested",
            ));
            // Facts after the records.
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some("606".into()),
                    ..Default::default()
                },
            );
        }
        for i in 0..5 {
            // Positive only before the period: not a need of this period.
            a.screen(screen(
                &format!("old{i}"),
                date!(2024 - 04 - 01),
                "food-insecurity",
                true,
            ));
        }
        let r = a.finish(NOW);
        let u = r.rate("unmet-needs").unwrap();
        assert_eq!(
            (u.numerator, u.denominator, u.percent),
            (Some(11), Some(22), Some(50.0))
        );
        assert_eq!(
            values(r.table("unmet-needs-by-domain").unwrap()),
            [("food-insecurity", Some(11))]
        );
        assert_eq!(
            values(r.table("unmet-needs-by-postal-area").unwrap()),
            [("606", Some(11))]
        );
        assert_eq!(
            values(r.table("positive-screens-by-postal-area").unwrap()),
            [("606", Some(22)), ("627", Some(11))]
        );
        assert_eq!(
            values(r.table("positive-screens-by-domain").unwrap()),
            [
                ("food-insecurity", Some(22)),
                ("housing-instability", Some(11))
            ]
        );
    }

    #[test]
    fn positivity_by_domain_and_positive_screens_by_month() {
        let mut a = acc();
        for i in 0..44 {
            let p = format!("p{i}");
            a.screen(screen(&p, date!(2025 - 02 - 03), "food-insecurity", i < 11));
            a.screen(screen(
                &p,
                date!(2025 - 02 - 03),
                "housing-instability",
                i < 3,
            ));
        }
        let r = a.finish(NOW);
        // Food's 11 is withheld in the table to protect housing's 3 (the
        // total 14 would give it back), so its rate goes with it.
        let f = r.rate("positivity-food-insecurity").unwrap();
        assert_eq!(
            (f.numerator, f.denominator, f.percent),
            (None, Some(44), None)
        );
        let h = r.rate("positivity-housing-instability").unwrap();
        assert_eq!(
            (h.numerator, h.denominator, h.percent),
            (None, Some(44), None)
        );
        let m = r.trend("positive-screens-by-month").unwrap();
        assert_eq!(m.points[1].label, "2025-02");
        assert_eq!(m.points[1].value, Some(14));
    }

    #[test]
    fn a_visit_is_screened_when_the_patient_has_a_screening_that_day() {
        let mut a = acc();
        for i in 0..22 {
            let p = format!("p{i}");
            a.visit(Visit {
                patient: p.clone(),
                date: date!(2025 - 05 - 05),
            });
            a.visit(Visit {
                patient: p.clone(),
                date: date!(2025 - 05 - 05),
            });
            let day = if i < 11 {
                date!(2025 - 05 - 05)
            } else {
                date!(2025 - 05 - 06)
            };
            a.screen(screen(&p, day, "food-insecurity", false));
            a.visit(Visit {
                patient: p,
                date: date!(2026 - 05 - 05),
            });
        }
        let r = a.finish(NOW);
        let v = r.rate("visits-screened").unwrap();
        assert_eq!(
            (v.numerator, v.denominator, v.percent),
            (Some(11), Some(22), Some(50.0))
        );
        assert_eq!(r.counted.visits, 66);
    }

    #[test]
    fn repeated_denials_are_listed_from_eleven_patients() {
        let mut a = acc();
        deny_many(
            &mut a,
            "a",
            11,
            "Sunrise",
            "1364445 apixaban 5 MG Oral Tablet",
        );
        deny_many(&mut a, "b", 10, "Sunrise", "72148 MRI lumbar spine");
        // One patient denied twelve times is one patient.
        for i in 0..12 {
            a.denial(denial(
                &format!("s{i}"),
                "solo",
                "Harbor",
                "E0601 CPAP",
                date!(2025 - 07 - 01),
            ));
        }
        // The same item by another payer is another pair.
        deny_many(
            &mut a,
            "c",
            6,
            "Harbor",
            "1364445 apixaban 5 MG Oral Tablet",
        );
        let r = a.finish(NOW);
        assert_eq!(
            r.repeated,
            [Repeated {
                payer: "Sunrise".into(),
                item: "1364445 apixaban 5 MG Oral Tablet".into(),
                patients: "11-19"
            }]
        );
        assert_eq!(
            [11, 19, 20, 49, 50, 99, 100, 5000].map(patient_band),
            [
                "11-19",
                "11-19",
                "20-49",
                "20-49",
                "50-99",
                "50-99",
                "100 or more",
                "100 or more"
            ]
        );
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

    #[test]
    fn lapses_are_coverages_ending_without_another_active_one_the_next_day() {
        let mut a = acc();
        for i in 0..11 {
            // Lapsed at the end of March.
            let p = format!("lapse{i}");
            a.coverage(span(
                &p,
                Some(date!(2024 - 01 - 01)),
                Some(date!(2025 - 03 - 31)),
                true,
            ));
            // A cancelled coverage does not cover the gap.
            a.coverage(span(&p, Some(date!(2025 - 04 - 01)), None, false));
            // Continued: another active coverage from the next day.
            let p = format!("cont{i}");
            a.coverage(span(
                &p,
                Some(date!(2024 - 01 - 01)),
                Some(date!(2025 - 03 - 31)),
                true,
            ));
            a.coverage(span(&p, Some(date!(2025 - 04 - 01)), None, true));
            // Not active (so never covering), ended in June.
            let p = format!("ended{i}");
            a.coverage(span(
                &p,
                Some(date!(2025 - 06 - 01)),
                Some(date!(2025 - 06 - 15)),
                false,
            ));
            // Ended after the period: not a lapse in it.
            let p = format!("future{i}");
            a.coverage(span(&p, None, Some(date!(2026 - 03 - 31)), true));
        }
        // Two coverages of one patient ending the same day: one lapse.
        for i in 0..11 {
            let p = format!("twice{i}");
            a.coverage(span(&p, None, Some(date!(2025 - 09 - 30)), true));
            a.coverage(span(&p, None, Some(date!(2025 - 09 - 30)), true));
        }
        let r = a.finish(NOW);
        let lapses: Vec<_> = r
            .trend("coverage-lapses-by-month")
            .unwrap()
            .points
            .iter()
            .map(|c| c.value)
            .collect();
        let mut want = vec![Some(0); 12];
        want[2] = Some(11);
        want[5] = Some(11);
        want[8] = Some(11);
        assert_eq!(lapses, want);
        let gaps: Vec<_> = r
            .trend("coverage-gaps-by-month")
            .unwrap()
            .points
            .iter()
            .map(|c| c.value)
            .collect();
        // January–February: none; March's last day is still covered; from
        // April the "lapse" patients; from June (30th) the "ended" ones; from
        // September (30th is covered) October on, the "twice" ones.
        assert_eq!(
            gaps,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(11),
                Some(11),
                Some(22),
                Some(22),
                Some(22),
                Some(22),
                Some(33),
                Some(33),
                Some(33)
            ]
        );
        assert_eq!(r.counted.coverages, 88);
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

    #[test]
    fn a_hundred_thousand_records_stream_through() {
        let mut a = Accumulator::new(YEAR);
        let domains = [
            "food-insecurity",
            "housing-instability",
            "transportation-insecurity",
        ];
        let n = 10_000;
        for i in 0..n {
            let p = format!("patient-{i}");
            let day = YEAR.start + Duration::days((i % 365) as i64);
            a.denial(denial(
                &format!("d{i}"),
                &p,
                ["A", "B", "C"][i % 3],
                ["X", "Y"][i % 2],
                day,
            ));
            let mut ap = appeal(
                &format!("a{i}"),
                &p,
                Some(&format!("d{i}")),
                datetime!(2025-06-01 10:00 UTC),
            );
            ap.decided = Some(datetime!(2025-06-03 10:00 UTC));
            ap.outcome = Some(if i % 4 == 0 { "overturned" } else { "upheld" }.into());
            a.appeal(ap);
            let mut r = referral(&format!("r{i}"), &p, domains[i % 3], day, "completed");
            r.accepted = Some(day + Duration::days(2));
            r.closed = Some(day + Duration::days(20));
            a.referral(r);
            a.screen(screen(&p, day, domains[i % 3], true));
            a.screen(screen(&p, day, domains[(i + 1) % 3], i % 5 == 0));
            a.visit(Visit {
                patient: p.clone(),
                date: day,
            });
            a.visit(Visit {
                patient: p.clone(),
                date: day + Duration::days(100),
            });
            a.coverage(span(&p, None, Some(day), true));
            a.coverage(span(&p, Some(day + Duration::days(1)), None, i % 10 != 0));
            a.patient(
                &p,
                PatientFacts {
                    postal_area: Some(["627", "606", "618"][i % 3].into()),
                    language: Some(["en", "es"][i % 2].into()),
                    sex: Some(["female", "male"][i % 2].into()),
                    birth_date: Some(date!(1960 - 01 - 01) + Duration::days((i * 7) as i64)),
                },
            );
        }
        let r = a.finish(NOW);
        let n = n as u64;
        assert_eq!(
            r.counted,
            Counted {
                patients: n,
                denials: n,
                appeals: n,
                referrals: n,
                screens: 2 * n,
                visits: 2 * n,
                coverages: 2 * n
            }
        );
        assert_eq!(r.table("denials-by-payer").unwrap().total, Some(n));
        assert_eq!(r.rate("appeal-rate").unwrap().percent, Some(100.0));
        assert_eq!(r.rate("overturn-rate").unwrap().percent, Some(25.0));
        assert_eq!(
            r.rate("referrals-closed-within-60-days").unwrap().percent,
            Some(100.0)
        );
        assert_eq!(r.median("time-to-decision").unwrap().days, Some(2.0));
        assert_eq!(r.median("time-to-close").unwrap().days, Some(20.0));
        assert_eq!(r.repeated.len(), 6);
        serde_json::to_string(&r).unwrap();
    }
}
