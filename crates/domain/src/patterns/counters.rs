//! The compact state the accumulator keeps instead of records: hashes of
//! ids, interned labels, sets of patients as bits, counts by key and by
//! month, histograms of durations, and the tallies behind a rate. Distinct
//! patients are counted from bit sets, so memory grows with the patients
//! and the keys, never with the number of records.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::UNKNOWN;
use super::accumulator::Period;

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

/// Interned labels: each distinct label kept once, and named by its index.
#[derive(Default)]
pub(super) struct Labels {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Labels {
    pub(super) fn id(&mut self, label: &str) -> u32 {
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
    pub(super) fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

/// A set of patients (their indexes) as bits: one bit per patient per key,
/// so distinct-patient counts cost a few hundred bytes per key whatever the
/// number of records.
#[derive(Default, Clone)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn insert(&mut self, p: u32) {
        let (w, b) = (p as usize / 64, 1u64 << (p % 64));
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= b;
    }
    pub(super) fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    pub(super) fn union_into(&self, seen: &mut Seen) {
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
pub(super) struct Keyed<K> {
    pub(super) values: HashMap<K, u64>,
    pub(super) patients: HashMap<K, Bits>,
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
    pub(super) fn add(&mut self, key: K, patient: u32) {
        *self.values.entry(key).or_default() += 1;
        self.patients.entry(key).or_default().insert(patient);
    }

    pub(super) fn patients_by_key(&self) -> HashMap<K, u64> {
        self.patients.iter().map(|(k, b)| (*k, b.count())).collect()
    }

    pub(super) fn distinct_patients(&self, n: usize) -> u64 {
        let mut seen = Seen::new(n);
        for b in self.patients.values() {
            b.union_into(&mut seen);
        }
        seen.count
    }

    /// (value, distinct patients) per key.
    pub(super) fn cells(&self) -> Vec<(K, u64, u64)> {
        let patients = self.patients_by_key();
        self.values
            .iter()
            .map(|(k, v)| (*k, *v, patients.get(k).copied().unwrap_or(0)))
            .collect()
    }
}

/// Records and distinct patients per month of the period.
pub(super) struct Monthly {
    values: Vec<u64>,
    patients: Vec<Bits>,
}

impl Monthly {
    pub(super) fn new(months: usize) -> Self {
        Monthly {
            values: vec![0; months],
            patients: vec![Bits::default(); months],
        }
    }
    pub(super) fn add(&mut self, month: usize, patient: u32) {
        self.values[month] += 1;
        self.patients[month].insert(patient);
    }
    pub(super) fn points(&self, period: &Period) -> Vec<(String, u64, u64)> {
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
pub(super) struct Seen {
    bits: Vec<u64>,
    pub(super) count: u64,
}

impl Seen {
    pub(super) fn new(n: usize) -> Self {
        Seen {
            bits: vec![0; n.div_ceil(64)],
            count: 0,
        }
    }
    pub(super) fn insert(&mut self, p: u32) {
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
pub(super) struct Histogram(BTreeMap<i64, u64>);

impl Histogram {
    pub(super) fn add(&mut self, v: i64) {
        *self.0.entry(v).or_default() += 1;
    }
    /// Add every value of `other` (another set of patients' durations).
    pub(super) fn add_all(&mut self, other: Histogram) {
        for (v, c) in other.0 {
            *self.0.entry(v).or_default() += c;
        }
    }
    pub(super) fn n(&self) -> u64 {
        self.0.values().sum()
    }
    pub(super) fn median(&self) -> Option<f64> {
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

/// The records behind a rate, counted one by one as in its numerator or
/// not: records and distinct patients of the numerator and the
/// denominator, and the distinct patients of the denominator's records not
/// in the numerator (the difference a reader could compute).
pub(super) struct Share {
    pub(super) num: u64,
    pub(super) den: u64,
    pub(super) num_p: Seen,
    pub(super) den_p: Seen,
    pub(super) rest_p: Seen,
}

impl Share {
    /// No records yet, among `n` patients.
    pub(super) fn new(n: usize) -> Self {
        Share {
            num: 0,
            den: 0,
            num_p: Seen::new(n),
            den_p: Seen::new(n),
            rest_p: Seen::new(n),
        }
    }

    /// A record of patient `p` in the denominator, and in the numerator
    /// when `counted`.
    pub(super) fn add(&mut self, p: u32, counted: bool) {
        self.den += 1;
        self.den_p.insert(p);
        if counted {
            self.num += 1;
            self.num_p.insert(p);
        } else {
            self.rest_p.insert(p);
        }
    }
}
