//! `cargo bench --bench context`: loading a visit's context from a real FHIR
//! server (hfs) through a proxy that adds 50 ms to every request.
//!
//! * one round trip: a Patient read through the proxy (the unit);
//! * the visit context loaded as Passerelle does (concurrently), its wall
//!   time and request count;
//! * the baseline, in the same run: the same requests one after another;
//! * the visit page's own latency (no added delay) at 50 concurrent clients.
//!
//! Prints one line: `BENCH context …`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use passerelle::domain::coverage::RegimeTable;
use passerelle::fhir::context::{Fetch, load_visit_with};
use passerelle::fhir::{FhirClient, Limits};

const ADDED_LATENCY: Duration = Duration::from_millis(50);
const RUNS: usize = 15;
const CLIENTS: usize = 50;
const PAGES_PER_CLIENT: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    passerelle::telemetry::init("error");
    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    proxy.set_delay(ADDED_LATENCY);
    let client = FhirClient::new(
        FhirClient::http_client(),
        proxy.base.clone(),
        Limits::default(),
    );
    let regimes = RegimeTable::shipped();
    let today = time::OffsetDateTime::now_utc().date();
    let patients = ["pas-p01", "pas-p02", "pas-p05", "pas-p08"];

    // Warm the connection pool and hfs's caches.
    for p in patients {
        load_visit_with(&client, p, None, &regimes, today, Fetch::Concurrent)
            .await
            .unwrap();
    }

    let mut rtt = Vec::new();
    for i in 0..RUNS {
        let started = Instant::now();
        client
            .read_json("Patient", patients[i % patients.len()])
            .await
            .unwrap();
        rtt.push(ms(started.elapsed()));
    }

    let run = |fetch: Fetch| {
        let client = client.clone();
        let regimes = regimes.clone();
        let proxy = &proxy;
        async move {
            let mut walls = Vec::new();
            let mut requests = Vec::new();
            for i in 0..RUNS {
                proxy.reset_count();
                let started = Instant::now();
                let ctx = load_visit_with(
                    &client,
                    patients[i % patients.len()],
                    None,
                    &regimes,
                    today,
                    fetch,
                )
                .await
                .unwrap();
                walls.push(ms(started.elapsed()));
                requests.push(proxy.count());
                assert!(ctx.coverage.is_ok() && ctx.referrals.is_ok() && ctx.denials.is_ok());
            }
            (median(walls), requests.iter().max().copied().unwrap_or(0))
        }
    };
    let (concurrent, requests) = run(Fetch::Concurrent).await;
    let (sequential, sequential_requests) = run(Fetch::Sequential).await;
    assert_eq!(
        requests, sequential_requests,
        "the baseline sends the same requests"
    );
    let one_rtt = median(rtt);

    // The visit page itself, straight to hfs, 50 clients at once.
    let (address, _shutdown) = common::start_app(hfs.base(), common::AppOptions::default()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let iss = common::enc(hfs.base().as_str());
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let http = http.clone();
            let url = format!(
                "{address}/launch/open?iss={iss}&patient={}",
                patients[c % patients.len()]
            );
            tokio::spawn(async move {
                let mut lat = Vec::new();
                for _ in 0..PAGES_PER_CLIENT {
                    let t = Instant::now();
                    let r = http.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    lat.push(ms(t.elapsed()));
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());

    println!(
        "BENCH context added_latency_ms={} one_rtt_ms={:.1} concurrent_ms={:.1} sequential_ms={:.1} requests={} \
         wall_over_rtt={:.2} speedup_vs_sequential={:.2} page_clients={} page_p50_ms={:.1} page_p99_ms={:.1} page_per_s={:.0}",
        ADDED_LATENCY.as_millis(),
        one_rtt,
        concurrent,
        sequential,
        requests,
        concurrent / one_rtt,
        sequential / concurrent,
        CLIENTS,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.len() as f64 / elapsed.as_secs_f64(),
    );
}
