//! `cargo bench --bench screening`: one full AHC HRSN screening (every item
//! answered, several domains positive, the safety total computed).
//!
//! * CPU time to score it, build its SDOHCC transaction and validate every
//!   resource against the R4 JSON schema (target ≤ 2 ms), over many runs
//!   after a warm-up (the schema validators compile once per process);
//! * FHIR round trips to record it (target: exactly 1), counted by a proxy
//!   in front of a real hfs.
//!
//! Prints one line: `BENCH screening …`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::proxy::Proxy;
use passerelle::domain::screening::{ItemResponse, Rules, score};
use passerelle::fhir::questionnaire::{self, Posted};
use passerelle::fhir::screening::{ConditionTable, RecordedItem, ScreeningRecord, transaction};

const RUNS: usize = 500;

fn answers() -> Posted {
    let pairs = [
        ("71802-3", "LA31994-9"),
        ("96778-6", "LA28580-1"),
        ("96778-6", "LA32001-2"),
        ("88122-7", "LA6729-3"),
        ("88123-5", "LA28397-0"),
        ("93030-5", "LA33-6"),
        ("96779-4", "LA32-8"),
        ("safety-questions-agreed", "true"),
        ("95618-5", "LA10082-8"),
        ("95617-7", "LA10082-8"),
        ("95616-9", "LA10082-8"),
        ("95615-1", "LA10066-1"),
        ("76513-1", "LA22683-9"),
    ];
    let mut p = Posted::new();
    for (k, v) in pairs {
        p.entry(k.to_string()).or_default().push(v.to_string());
    }
    p
}

fn one(
    form: &questionnaire::Form,
    rules: &Rules,
    conditions: &ConditionTable,
    schema: &passerelle::fhir::SchemaValidator,
    id: &str,
) -> (serde_json::Value, usize) {
    let items = questionnaire::recorded(form, &answers(), &Default::default()).unwrap();
    let responses: Vec<ItemResponse> = items.iter().map(RecordedItem::response).collect();
    let scored = score(rules, &responses, &form.ordinals());
    let bundle = transaction(
        &ScreeningRecord {
            id,
            patient: "Patient/pas-p06",
            encounter: Some("Encounter/pas-enc-06"),
            author: Some("Practitioner/pas-prac-moreau"),
            questionnaire: &form.canonical(),
            language: "fr",
            authored: "2026-11-22T10:00:00-05:00",
            items: &items,
            scored: &scored,
        },
        conditions,
    );
    schema.validate_bundle(&bundle).unwrap();
    let positive = scored.positive.len();
    (bundle, positive)
}

#[tokio::main]
async fn main() {
    passerelle::telemetry::init("error");
    let forms = questionnaire::shipped().unwrap();
    let form = &forms["ahc-hrsn-core"];
    let rules = Rules::shipped();
    let conditions = ConditionTable::shipped();
    let schema = common::schema();

    let (bundle, positive) = one(form, &rules, &conditions, &schema, "bench-warmup");
    let resources = bundle["entry"].as_array().unwrap().len();
    let mut times = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let started = Instant::now();
        let out = one(form, &rules, &conditions, &schema, &format!("bench-{i}"));
        times.push(started.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(out);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let p50 = times[times.len() / 2];
    let p99 = times[(times.len() as f64 * 0.99) as usize];

    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    let client = common::fhir_client(&proxy.base);
    proxy.reset_count();
    client.transaction(&bundle).await.unwrap();
    let round_trips = proxy.count();

    println!(
        "BENCH screening resources={resources} positive_domains={positive} runs={RUNS} cpu_us_mean={mean:.0} cpu_us_p50={p50:.0} cpu_us_p99={p99:.0} target_us=2000 p50_over_target={:.2} round_trips={round_trips}",
        p50 / 2000.0
    );
}
