//! `passerelle seed`: load the synthetic fixtures into any FHIR R4 server, or
//! remove them again.
//!
//! * The fixtures (`fixtures/visits/*.json`, transaction Bundles of PUTs with
//!   fixed ids) are embedded in the binary, so `seed` works anywhere.
//! * Loading is idempotent: every resource has a fixed id and is PUT, so a
//!   second run updates in place and the counts stay the same.
//! * Every resource is tagged in `meta.tag` ([`TAG_SYSTEM`]|[`TAG_CODE`]);
//!   `seed --remove` searches each type by that tag and deletes what it finds.
//! * Dates are written relative to an anchor day and shifted to today when
//!   loaded, so "coverage ending in 20 days" stays true whenever you run it.
//! * Every resource is validated against the R4 JSON schema before sending.

use std::path::Path;
use std::process::ExitCode;

use include_dir::{Dir, include_dir};
use serde_json::{Value, json};
use time::{Date, Duration};

use crate::config::SeedArgs;
use crate::fhir::{FhirClient, FhirError, Limits, SchemaValidator};

/// `meta.tag` system of everything Passerelle seeds.
pub const TAG_SYSTEM: &str = "http://passerelle.example.org/fhir/CodeSystem/tag";
/// `meta.tag` code of everything Passerelle seeds.
pub const TAG_CODE: &str = "fixture";

/// The day the fixtures' dates were written for.
pub const ANCHOR: Date = time::macros::date!(2026 - 11 - 22);

static FIXTURES: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/visits");

/// Resource types Passerelle seeds, in the order they are deleted
/// (referring resources before the ones they refer to).
pub const SEEDED_TYPES: &[&str] = &[
    "Task",
    "ServiceRequest",
    "Observation",
    "QuestionnaireResponse",
    "Condition",
    "ClaimResponse",
    "Claim",
    "MedicationRequest",
    "Coverage",
    "Encounter",
    "Patient",
    "PractitionerRole",
    "Practitioner",
    "Organization",
];

/// Patients generated per transaction.
const GENERATED_PER_BUNDLE: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("fixture {file} is not a transaction Bundle: {why}")]
    BadFixture { file: String, why: String },
    #[error("fixture {file}: {source}")]
    Fhir { file: String, source: FhirError },
    #[error("cannot read the fixtures folder {0}: {1}")]
    Io(String, String),
}

/// The fixture bundles, by file name: the embedded ones, or those of `dir`.
pub fn fixture_bundles(dir: Option<&Path>) -> Result<Vec<(String, Value)>, SeedError> {
    let mut out = Vec::new();
    match dir {
        None => {
            for f in FIXTURES.files() {
                let name = f.path().display().to_string();
                let value =
                    serde_json::from_slice(f.contents()).map_err(|e| SeedError::BadFixture {
                        file: name.clone(),
                        why: e.to_string(),
                    })?;
                out.push((name, value));
            }
        }
        Some(dir) => {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| SeedError::Io(dir.display().to_string(), e.to_string()))?;
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().and_then(|x| x.to_str()) != Some("json") {
                    continue;
                }
                let name = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                let text = std::fs::read(&path)
                    .map_err(|e| SeedError::Io(path.display().to_string(), e.to_string()))?;
                let value = serde_json::from_slice(&text).map_err(|e| SeedError::BadFixture {
                    file: name.clone(),
                    why: e.to_string(),
                })?;
                out.push((name, value));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Make a fixture bundle ready to send: dates shifted by `shift_days`, every
/// resource tagged, every entry a PUT to its id.
pub fn prepare(file: &str, mut bundle: Value, shift_days: i64) -> Result<Value, SeedError> {
    let bad = |why: &str| SeedError::BadFixture {
        file: file.to_string(),
        why: why.to_string(),
    };
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(bad("resourceType is not Bundle"));
    }
    bundle["type"] = json!("transaction");
    let entries = bundle
        .get_mut("entry")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("no entry"))?;
    for entry in entries {
        let resource = entry
            .get_mut("resource")
            .ok_or_else(|| bad("an entry has no resource"))?;
        let rtype = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a resource has no resourceType"))?
            .to_string();
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a resource has no id"))?
            .to_string();
        if shift_days != 0 {
            shift_dates(resource, shift_days);
        }
        tag(resource);
        entry["request"] = json!({ "method": "PUT", "url": format!("{rtype}/{id}") });
    }
    Ok(bundle)
}

fn tag(resource: &mut Value) {
    let meta = resource
        .as_object_mut()
        .expect("resources are objects")
        .entry("meta")
        .or_insert_with(|| json!({}));
    let tags = meta
        .as_object_mut()
        .map(|m| m.entry("tag").or_insert_with(|| json!([])));
    if let Some(Value::Array(tags)) = tags {
        let present = tags
            .iter()
            .any(|t| t["system"] == TAG_SYSTEM && t["code"] == TAG_CODE);
        if !present {
            tags.push(json!({ "system": TAG_SYSTEM, "code": TAG_CODE, "display": "Passerelle synthetic fixture" }));
        }
    }
}

/// Shift every value that is a whole FHIR date or dateTime by `days`.
/// Free text that merely contains a date is left alone.
pub fn shift_dates(value: &mut Value, days: i64) {
    match value {
        Value::String(s) => {
            if let Some(shifted) = shift_date_str(s, days) {
                *s = shifted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shift_dates(v, days)),
        Value::Object(map) => map.iter_mut().for_each(|(_, v)| shift_dates(v, days)),
        _ => {}
    }
}

fn shift_date_str(s: &str, days: i64) -> Option<String> {
    let b = s.as_bytes();
    let is_date = b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || b[10] == b'T');
    if !is_date {
        return None;
    }
    let date = Date::parse(
        &s[..10],
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    Some(format!("{}{}", date + Duration::days(days), &s[10..]))
}

/// Days from the fixtures' anchor to `today`.
pub fn shift_for(today: Date) -> i64 {
    (today - ANCHOR).whole_days()
}

/// Counts of seeded resources per type, as the server reports them.
pub async fn count_seeded(client: &FhirClient) -> Result<Vec<(&'static str, u64)>, FhirError> {
    let tag = format!("{TAG_SYSTEM}|{TAG_CODE}");
    let searches = SEEDED_TYPES.iter().map(|t| {
        let tag = tag.clone();
        async move {
            let page = client
                .search(t, &[("_tag", tag), ("_summary", "count".into())])
                .await?;
            Ok::<_, FhirError>((*t, page.total.unwrap_or(0)))
        }
    });
    futures::future::try_join_all(searches).await
}

/// Load the fixtures (and `generate` more patients); returns the bundles sent.
pub async fn load(
    client: &FhirClient,
    schema: &SchemaValidator,
    dir: Option<&Path>,
    generate: usize,
    today: Date,
) -> Result<usize, SeedError> {
    let shift = shift_for(today);
    let mut bundles: Vec<(String, Value)> = Vec::new();
    for (file, bundle) in fixture_bundles(dir)? {
        bundles.push((file.clone(), prepare(&file, bundle, shift)?));
    }
    for (i, bundle) in crate::seed::generate::bundles(generate, GENERATED_PER_BUNDLE)
        .into_iter()
        .enumerate()
    {
        let file = format!("generated-{i}");
        bundles.push((file.clone(), prepare(&file, bundle, shift)?));
    }
    for (file, bundle) in &bundles {
        schema
            .validate_bundle(bundle)
            .map_err(|source| SeedError::Fhir {
                file: file.clone(),
                source,
            })?;
    }
    for (file, bundle) in &bundles {
        client
            .transaction(bundle)
            .await
            .map_err(|source| SeedError::Fhir {
                file: file.clone(),
                source,
            })?;
    }
    Ok(bundles.len())
}

/// Delete everything carrying the fixture tag; returns how many were deleted.
pub async fn remove(client: &FhirClient) -> Result<usize, FhirError> {
    let tag = format!("{TAG_SYSTEM}|{TAG_CODE}");
    let mut deleted = 0;
    for t in SEEDED_TYPES {
        loop {
            let page = client
                .search(
                    t,
                    &[
                        ("_tag", tag.clone()),
                        ("_count", "200".into()),
                        ("_elements", "id".into()),
                    ],
                )
                .await?;
            let ids: Vec<String> = page
                .raw(t)
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(String::from))
                .collect();
            if ids.is_empty() {
                break;
            }
            let entries: Vec<Value> = ids
                .iter()
                .map(|id| json!({ "request": { "method": "DELETE", "url": format!("{t}/{id}") } }))
                .collect();
            client
                .transaction(
                    &json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries }),
                )
                .await?;
            deleted += ids.len();
        }
    }
    Ok(deleted)
}

/// Wait until the server answers `/metadata`, up to `limit`.
async fn wait_for(client: &FhirClient, limit: std::time::Duration) -> Result<(), FhirError> {
    let started = std::time::Instant::now();
    loop {
        match client.capabilities().await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && started.elapsed() < limit => {
                tracing::info!(kind = e.kind(), "waiting for the FHIR server");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `passerelle seed`.
pub async fn run(args: SeedArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits {
        timeout: args.fhir.timeout().max(std::time::Duration::from_secs(60)),
        max_response_bytes: args.fhir.fhir_max_response_bytes,
        ..Limits::default()
    };
    let client = FhirClient::new(FhirClient::http_client(), args.fhir_base.clone(), limits);
    wait_for(&client, std::time::Duration::from_secs(args.wait_secs)).await?;
    if args.remove {
        let n = remove(&client).await?;
        println!(
            "removed {n} resources tagged {TAG_SYSTEM}|{TAG_CODE} from {}",
            client.base()
        );
    } else {
        let schema = SchemaValidator::load(&args.fhir.definitions_dir())?;
        let today = time::OffsetDateTime::now_utc().date();
        let sent = load(
            &client,
            &schema,
            args.fixtures_dir.as_deref(),
            args.generate,
            today,
        )
        .await?;
        println!("sent {sent} transaction bundles to {}", client.base());
    }
    for (t, n) in count_seeded(&client).await? {
        println!("{t:<22} {n}");
    }
    Ok(ExitCode::SUCCESS)
}

pub mod generate;
pub mod population;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_dates_shift_and_free_text_does_not() {
        let mut v = json!({
            "birthDate": "1960-02-29",
            "period": {"start": "2026-11-22T09:30:00-05:00", "end": "2026-12-12"},
            "text": "denied on 2026-10-01",
            "year": "2026",
            "id": "2026-11-22x"
        });
        shift_dates(&mut v, 1);
        assert_eq!(v["birthDate"], "1960-03-01");
        assert_eq!(v["period"]["start"], "2026-11-23T09:30:00-05:00");
        assert_eq!(v["period"]["end"], "2026-12-13");
        assert_eq!(v["text"], "denied on 2026-10-01");
        assert_eq!(v["year"], "2026");
        assert_eq!(v["id"], "2026-11-22x");
    }

    #[test]
    fn embedded_fixtures_are_transaction_bundles_with_tagged_puts() {
        let bundles = fixture_bundles(None).unwrap();
        assert!(bundles.len() >= 2);
        for (file, b) in bundles {
            let b = prepare(&file, b, 0).unwrap();
            for e in b["entry"].as_array().unwrap() {
                assert_eq!(e["request"]["method"], "PUT", "{file}");
                let tags = e["resource"]["meta"]["tag"].as_array().unwrap();
                assert_eq!(
                    tags.iter().filter(|t| t["code"] == TAG_CODE).count(),
                    1,
                    "{file}"
                );
            }
        }
    }

    #[test]
    fn a_bundle_without_ids_is_refused_clearly() {
        let err = prepare(
            "x.json",
            json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient"}}]}),
            0,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fixture x.json is not a transaction Bundle: a resource has no id"
        );
    }
}
