//! `cargo bench --bench patterns`: every measure of the patterns view over
//! a generated population, read both ways on the same server in the same
//! run: by paged searches and by FHIR Bulk Data export (hfs enforcing
//! SMART scopes, behind the development EHR launcher).
//!
//! Sizes: `PASSERELLE_BENCH_PATIENTS` (comma-separated, default
//! `10000,50000`); the status poll's cap `PASSERELLE_BENCH_POLL_MAX_S`
//! (default 1; the app's default is 10). For each size:
//!
//! * `seed_s_N`: seeding the population (4 Tasks and one denial a patient,
//!   with Claims, screenings, visits, coverages);
//! * `search_s_N`, `bulk_s_N`: from "compute" to the result by each path
//!   (the bulk path includes the export's kick-off, its wait and polls, the
//!   download, and the Task and payer searches);
//! * `search_peak_mb_N`, `bulk_peak_mb_N`: the bench process's exact peak
//!   above its resting size during each (the kernel's high-water mark,
//!   reset at the start; freed memory handed back before), where the
//!   launcher's FHIR proxy also runs;
//! * `time_ratio_N`, `peak_ratio_N`: bulk over search, same run.
//!
//! Both paths' measures are compared cell by cell before any figure is
//! printed. Prints one line: `BENCH patterns …`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::smart::{
    EnvOptions, assert_same_measures, hfs_bulk_scope, smart_env_with, system_client,
};
use passerelle::domain::patterns::{Period, ReadMode, Report};
use passerelle::fhir::FhirClient;
use passerelle::fhir::patterns::{Progress, compute_with};

/// A line of `/proc/self/status` in MB: `VmRSS` (resident now) or `VmHWM`
/// (the most resident since the last reset).
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// One computation by `mode`: (report, seconds, peak MB above rest).
async fn measured(client: &FhirClient, period: Period, mode: ReadMode) -> (Report, f64, f64) {
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
    let before = status_mb("VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let started = Instant::now();
    let report = compute_with(client, period, &Progress::default(), mode)
        .await
        .unwrap_or_else(|e| panic!("the measures compute by {mode:?}: {e}"));
    let seconds = started.elapsed().as_secs_f64();
    let peak = status_mb("VmHWM:") - before;
    (report, seconds, peak)
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("PASSERELLE_BENCH_PATIENTS")
        .unwrap_or_else(|_| "10000,50000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("PASSERELLE_BENCH_PATIENTS: numbers")
        })
        .collect();
    let poll: u64 = std::env::var("PASSERELLE_BENCH_POLL_MAX_S")
        .map(|s| s.parse().expect("PASSERELLE_BENCH_POLL_MAX_S: seconds"))
        .unwrap_or(1);
    let mut line = format!("BENCH patterns poll_max_s={poll}");
    for n in sizes {
        let started = Instant::now();
        let env = smart_env_with(EnvOptions {
            population: n,
            fixtures: Some(vec!["00-"]),
            ..Default::default()
        })
        .await;
        let seed = started.elapsed().as_secs_f64();
        eprintln!("{n} patients seeded in {seed:.0} s");
        let bulk = passerelle::fhir::bulk::BulkSettings {
            max_poll_interval: Duration::from_secs(poll),
            ..Default::default()
        };
        let client = system_client(&env, &hfs_bulk_scope(), bulk);
        let today = time::OffsetDateTime::now_utc().date();
        let period = Period {
            start: today - time::Duration::days(365),
            end: today,
        };
        let (by_search, search_s, search_mb) = measured(&client, period, ReadMode::Search).await;
        let (by_bulk, bulk_s, bulk_mb) = measured(&client, period, ReadMode::Bulk).await;
        assert!(by_bulk.read.is_bulk(), "{:?}", by_bulk.read);
        assert_same_measures(&by_search, &by_bulk);
        assert_eq!(by_bulk.counted.patients, n as u64);
        eprintln!(
            "{n}: search {search_s:.1} s +{search_mb:.1} MB, bulk {bulk_s:.1} s +{bulk_mb:.1} MB"
        );
        line.push_str(&format!(
            " patients={n} seed_s_{n}={seed:.0} search_s_{n}={search_s:.1} bulk_s_{n}={bulk_s:.1} search_peak_mb_{n}={search_mb:.1} bulk_peak_mb_{n}={bulk_mb:.1} time_ratio_{n}={:.2} peak_ratio_{n}={:.2}",
            bulk_s / search_s,
            bulk_mb / search_mb.max(0.1),
        ));
    }
    println!("{line}");
}
