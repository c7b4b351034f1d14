//! `cargo bench --bench patterns`: every measure of the patterns view over
//! a generated population, then over twice as many patients, in the same
//! run, on a real FHIR server (hfs enforcing SMART scopes, behind the
//! development EHR launcher), Passerelle in its own process.
//!
//! * `patients`, `tasks`, `denials`: the data (5,000 patients: 20,000 Tasks
//!   and 5,000 denials);
//! * `compute_s`: from "compute" to the result, a batch of 500 patients at
//!   a time (target: under 30 s);
//! * `before_mb`: the Passerelle process's resident memory just before
//!   (mostly the coordinator queue's in-memory index of open Tasks, which
//!   grows with them: see `BENCH queue`); `peak_mb`: its exact peak during
//!   the computation (the kernel's high-water mark, reset at the start);
//!   `compute_mb`: the difference, the memory the computation itself took;
//! * `alone_peak_mb`, `alone_kept_mb`: the same computation run again in
//!   the bench's own process (where the launcher's FHIR proxy also runs),
//!   with freed memory handed back before and after: its peak above the
//!   resting size, and what it keeps once done (the result held); the
//!   largest of three runs;
//! * the same at twice the data (`*_2x`), and the 2×-over-1× ratios
//!   `time_ratio`, `compute_memory_ratio` and `alone_peak_ratio` (flat
//!   means near 1) and `peak_ratio` (which includes the queue index's
//!   growth).
//!
//! Prints one line: `BENCH patterns …`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use common::smart::{Browser, EnvOptions, approve_standalone_as, smart_env_with};
use passerelle::auth::StaticToken;
use passerelle::auth::smart::ClientAuthMethod;
use passerelle::domain::patterns::Period;
use passerelle::fhir::patterns::{Progress, compute};

const PATIENTS: usize = 5_000;

/// A line of `/proc/PID/status` in MB: `VmRSS` (resident now) or `VmHWM`
/// (the most resident since start, or since the last reset).
fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The computation alone, in this process, through the development
/// launcher's FHIR proxy (the address hfs gives its paging links; the proxy
/// runs in this process too and holds one answer at a time): (peak above the
/// resting size, kept once done while the result is held), in MB. Freed
/// memory is handed back first so the resting size is honest.
async fn alone(env: &common::smart::SmartEnv, period: Period) -> (f64, f64) {
    let client = common::fhir_client(&env.launcher.fhir_base()).with_authorizer(Arc::new(
        StaticToken(env.launcher.system_token("system/*.rs")),
    ));
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
    let me = std::process::id();
    let before = status_mb(me, "VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let report = compute(&client, period, &Progress::default())
        .await
        .expect("the measures compute");
    // SAFETY: as above.
    unsafe {
        libc::malloc_trim(0);
    }
    let (peak, kept) = (status_mb(me, "VmHWM:"), status_mb(me, "VmRSS:"));
    assert!(!report.tables.is_empty());
    (peak - before, kept - before)
}

/// (compute seconds, RSS before, exact peak RSS, alone: peak and kept)
async fn run(patients: usize) -> (f64, f64, f64, (f64, f64)) {
    let env = smart_env_with(EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(900),
        population: patients,
        fixtures: Some(vec!["00-"]),
        app_binary: Some(env!("CARGO_BIN_EXE_passerelle").into()),
        ..Default::default()
    })
    .await;
    let pid = env.process.as_ref().unwrap().id().unwrap();
    let browser = Browser::default();
    let picker = browser
        .get(&format!(
            "{}/standalone/start?queue=1&iss={}",
            env.app,
            common::enc(env.launcher.fhir_base().as_str())
        ))
        .await;
    let queue = approve_standalone_as(&browser, &picker, "pas-prac-lee", "").await;
    // Let the queue's first sync finish, so it is not measured here.
    loop {
        if browser
            .get(queue.url.as_str())
            .await
            .body
            .contains("synced with the EHR at")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = queue.url.as_str().replace("/queue", "/patterns");
    let page = browser.get(&url).await;
    let today = time::OffsetDateTime::now_utc().date();
    let before = status_mb(pid, "VmRSS:");
    // Reset the process's high-water mark to its present size, so that
    // VmHWM afterwards is the exact peak of the computation (not a sample).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let started = Instant::now();
    let posted = browser
        .post_form(
            &url,
            &[
                ("csrf", &common::smart::hidden_field(&page.body, "csrf")),
                ("start", &(today - time::Duration::days(365)).to_string()),
                ("end", &today.to_string()),
            ],
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let page = browser.get(&url).await;
        if page.body.contains("id=\"export-csv\"") && !page.body.contains("id=\"progress\"") {
            break;
        }
        assert!(
            !page.body.contains("The last computation failed"),
            "{}",
            page.body
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = status_mb(pid, "VmHWM:");
    let period = Period {
        start: today - time::Duration::days(365),
        end: today,
    };
    // Three runs alone, the largest figures kept: one run's peak moves by
    // a megabyte or so with the allocator.
    let mut most = (0.0f64, f64::MIN);
    for _ in 0..3 {
        let (p, k) = alone(&env, period).await;
        most = (most.0.max(p), most.1.max(k));
    }
    (elapsed, before, peak, most)
}

#[tokio::main]
async fn main() {
    let (t1, b1, p1, (a1, k1)) = run(PATIENTS).await;
    let (t2, b2, p2, (a2, k2)) = run(2 * PATIENTS).await;
    let (c1, c2) = (p1 - b1, p2 - b2);
    println!(
        "BENCH patterns patients={PATIENTS} tasks={} denials={PATIENTS} compute_s={t1:.1} before_mb={b1:.0} peak_mb={p1:.0} compute_mb={c1:.0} alone_peak_mb={a1:.1} alone_kept_mb={k1:.1} patients_2x={} compute_s_2x={t2:.1} before_mb_2x={b2:.0} peak_mb_2x={p2:.0} compute_mb_2x={c2:.0} alone_peak_mb_2x={a2:.1} alone_kept_mb_2x={k2:.1} time_ratio={:.2} compute_memory_ratio={:.2} alone_peak_ratio={:.2} peak_ratio={:.2} target_s=30",
        4 * PATIENTS,
        2 * PATIENTS,
        t2 / t1,
        c2 / c1,
        a2 / a1,
        p2 / p1,
    );
}
