//! `cargo bench --bench queue`: the coordinators' queue over more than
//! 10,000 open Tasks, on a real FHIR server (hfs enforcing SMART scopes,
//! behind the development EHR launcher), kept by the Backend Services poller.
//!
//! * `sync_s`: the first full sync of the index (every Task, with patients,
//!   focus and insurers included);
//! * `page_p50_ms`, `page_p95_ms`: the queue's first page (open Tasks, by
//!   deadline, 50 rows, counts of every filter) as a coordinator's browser
//!   gets it, 200 times; `filtered_p50_ms`: with domain and owner filters;
//! * `fhir_requests_per_view`: FHIR requests made while serving those
//!   pages, counted by a proxy between the EHR and hfs;
//! * the baseline, in the same run: `fhir_page_p50_ms`, one FHIR search of
//!   50 open Tasks sorted by deadline (what a queue reading the server per
//!   view would pay at least), and `ratio` = page / that search;
//! * `rss_mb`, `peak_rss_mb`: resident memory of the Passerelle process
//!   (`passerelle serve`, its own process) after the page views, and its
//!   peak; `rss_before_sync_mb`, `rss_after_sync_mb` around the first sync.
//!
//! Prints one line: `BENCH queue …`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::smart::{Browser, EnvOptions, approve_standalone_as, smart_env_with};
use passerelle::auth::smart::ClientAuthMethod;

/// 11,100 generated patients: 6,343 open referrals and 3,700 open appeals.
const GENERATED: usize = 11_100;
const VIEWS: usize = 200;

/// Resident memory of process `pid`, and its peak.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:") / 1024.0, field("VmHWM:") / 1024.0)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let env = smart_env_with(EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(900),
        generate: GENERATED,
        // Passerelle in its own process, so its memory is its own.
        app_binary: Some(env!("CARGO_BIN_EXE_passerelle").into()),
        ..Default::default()
    })
    .await;
    let pid = env.process.as_ref().unwrap().id().unwrap();
    passerelle::telemetry::init("error");
    // Count every FHIR request from here on.
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());

    let browser = Browser::default();
    let (before, _) = rss_mb(pid);
    let started = Instant::now();
    let picker = browser
        .get(&format!(
            "{}/standalone/start?queue=1&iss={}",
            env.app,
            common::enc(env.launcher.fhir_base().as_str())
        ))
        .await;
    let queue = approve_standalone_as(&browser, &picker, "pas-prac-lee", "").await;
    let url = queue.url.as_str().split('?').next().unwrap().to_string();
    let open_tasks = loop {
        let page = browser.get(&url).await;
        if page.body.contains("synced with the EHR at") {
            break page
                .body
                .split("id=\"queue-total\">")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sync = started.elapsed();
    let (after, _) = rss_mb(pid);
    assert!(open_tasks >= 10_000, "{open_tasks} open tasks");

    // Warm up, then the first page, as the browser gets it.
    for _ in 0..10 {
        browser.get(&url).await;
    }
    proxy.reset_count();
    let mut pages = Vec::new();
    for _ in 0..VIEWS {
        let t = Instant::now();
        let page = browser.get(&url).await;
        pages.push(ms(t.elapsed()));
        assert_eq!(page.status, 200);
    }
    let mut filtered = Vec::new();
    for _ in 0..VIEWS {
        let t = Instant::now();
        let page = browser
            .get(&format!(
                "{url}?domain=food-insecurity&owner=unassigned&sort=priority"
            ))
            .await;
        filtered.push(ms(t.elapsed()));
        assert_eq!(page.status, 200);
    }
    let requests = proxy.count();
    let (rss, peak) = rss_mb(pid);

    // The baseline: one FHIR search of a page of open Tasks by deadline.
    let token = env.launcher.system_token("system/Task.rs");
    let http = reqwest::Client::new();
    let search = format!(
        "{}Task?status=requested,accepted,in-progress,on-hold&_sort=period&_count=50",
        env.launcher.fhir_base()
    );
    let mut fhir = Vec::new();
    for i in 0..(VIEWS / 4 + 5) {
        let t = Instant::now();
        let r = http.get(&search).bearer_auth(&token).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        if i >= 5 {
            fhir.push(ms(t.elapsed()));
        }
    }
    let (p50, p95) = (percentile(pages.clone(), 0.5), percentile(pages, 0.95));
    let fhir_p50 = percentile(fhir, 0.5);
    println!(
        "BENCH queue open_tasks={open_tasks} sync_s={:.1} page_p50_ms={p50:.1} page_p95_ms={p95:.1} filtered_p50_ms={:.1} fhir_requests_per_view={} fhir_page_p50_ms={fhir_p50:.1} ratio={:.2} rss_mb={rss:.0} peak_rss_mb={peak:.0} rss_before_sync_mb={before:.0} rss_after_sync_mb={after:.0}",
        sync.as_secs_f64(),
        percentile(filtered, 0.5),
        requests as f64 / (2 * VIEWS) as f64,
        p50 / fhir_p50,
    );
}
