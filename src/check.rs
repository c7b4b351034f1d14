//! `passerelle check`: probe a FHIR server as an integrator would, and say
//! which Passerelle feature each missing capability disables.
//!
//! What the server declares (its CapabilityStatement) is read first; then,
//! unless `--read-only`, what matters most is tried for real: a transaction
//! with a conditional create, sent twice, must create exactly one resource,
//! which is then deleted.

use std::process::ExitCode;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::CheckArgs;
use crate::fhir::client::reference_from_location;
use crate::fhir::{FhirClient, FhirError, Limits, searches};

/// One capability and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    pub capability: String,
    pub ok: bool,
    /// Not ok, but Passerelle copes (it says how in `detail`): shown as a
    /// warning, and not counted as missing.
    pub warning: bool,
    pub detail: String,
    /// The feature that needs it.
    pub needed_by: String,
}

/// The search parameters and `_include`s Passerelle sends
/// ([`crate::fhir::searches::ALL`]), each with every feature that needs it.
type Needs = BTreeMap<(&'static str, &'static str), Vec<&'static str>>;

fn search_needs() -> (Needs, Needs) {
    let mut params = Needs::new();
    let mut includes = Needs::new();
    let need = |map: &mut Needs, key, used_by| {
        let list: &mut Vec<&str> = map.entry(key).or_default();
        if !list.contains(&used_by) {
            list.push(used_by);
        }
    };
    for search in searches::ALL {
        for param in search.params {
            need(&mut params, (search.resource_type, *param), search.used_by);
        }
        for include in search.includes {
            // `_include:iterate` ones are declared on their own source type.
            let source = include.split(':').next().unwrap_or(search.resource_type);
            need(&mut includes, (source, *include), search.used_by);
        }
    }
    (params, includes)
}

/// Resource types Passerelle writes, and what for.
pub const WRITTEN: &[(&str, &str)] = &[
    ("QuestionnaireResponse", "recording a screening"),
    ("Observation", "recording a screening"),
    ("Condition", "recording and confirming health concerns"),
    ("ServiceRequest", "referrals"),
    ("Task", "referrals, appeals and the queue"),
    ("DocumentReference", "letters"),
];

fn server_rest(cap: &Value) -> Option<&Value> {
    cap.get("rest")?
        .as_array()?
        .iter()
        .find(|r| r.get("mode").and_then(Value::as_str) == Some("server"))
}

fn resource<'a>(rest: &'a Value, t: &str) -> Option<&'a Value> {
    rest.get("resource")?
        .as_array()?
        .iter()
        .find(|r| r.get("type").and_then(Value::as_str) == Some(t))
}

fn strings<'a>(v: Option<&'a Value>, key: &'a str) -> impl Iterator<Item = &'a str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(move |x| x.get(key).and_then(Value::as_str))
}

/// What a CapabilityStatement declares, row by row.
pub fn assess_capabilities(cap: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    // A server may answer `/metadata` with something else: Medplum's FHIR
    // router (`@medplum/fhir-router` 5.2.13) has no `metadata` route and
    // takes it for a search of a resource type called "metadata", answering
    // an empty searchset Bundle. Say so, rather than let every declared row
    // below read as if the server had declared nothing.
    let kind = cap
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("no resource");
    if kind != "CapabilityStatement" {
        rows.push(Row {
            capability: CAPABILITY_STATEMENT.into(),
            ok: false,
            detail: format!(
                "GET metadata answered with {kind}: nothing is declared, so the rows below say \"not declared\"; the write probe still measures"
            ),
            needed_by: "knowing what the server supports before a visit needs it".into(),
            ..Row::default()
        });
    }
    let version = cap
        .get("fhirVersion")
        .and_then(Value::as_str)
        .unwrap_or("not stated");
    rows.push(Row {
        capability: "FHIR version 4.0.x (R4)".into(),
        ok: version.starts_with("4.0."),
        detail: format!("server says {version}"),
        needed_by: "everything".into(),
        ..Row::default()
    });
    let empty = json!({});
    let rest = server_rest(cap).unwrap_or(&empty);
    let (params, includes) = search_needs();
    for ((t, param), features) in &params {
        let declared = resource(rest, t)
            .is_some_and(|r| strings(r.get("searchParam"), "name").any(|n| n == *param));
        rows.push(Row {
            capability: format!("search {t}?{param}"),
            ok: declared,
            detail: if declared {
                "declared".into()
            } else {
                "not declared (with Prefer: handling=strict the search fails; without, it may return too much)".into()
            },
            needed_by: features.join("; "),
            ..Row::default()
        });
    }
    for ((t, include), features) in &includes {
        let declared = resource(rest, t)
            .and_then(|r| r.get("searchInclude"))
            .and_then(Value::as_array)
            .is_some_and(|l| {
                l.iter()
                    .any(|i| i.as_str() == Some(include) || i.as_str() == Some("*"))
            });
        rows.push(Row {
            capability: format!("_include={include}"),
            ok: declared,
            detail: if declared {
                "declared".into()
            } else {
                "not declared (names fall back to reference text)".into()
            },
            needed_by: features.join("; "),
            ..Row::default()
        });
    }
    let transaction = strings(rest.get("interaction"), "code").any(|c| c == "transaction");
    rows.push(Row {
        capability: "transaction".into(),
        ok: transaction,
        detail: if transaction {
            "declared".into()
        } else {
            "not declared".into()
        },
        needed_by: "recording a screening in one transaction; seeding".into(),
        ..Row::default()
    });
    for (t, feature) in WRITTEN {
        let r = resource(rest, t);
        let create =
            r.is_some_and(|r| strings(r.get("interaction"), "code").any(|c| c == "create"));
        let conditional = r
            .and_then(|r| r.get("conditionalCreate"))
            .and_then(Value::as_bool)
            == Some(true);
        rows.push(Row {
            capability: format!("create {t} (conditional)"),
            ok: create && conditional,
            detail: match (create, conditional) {
                (true, true) => "declared".into(),
                (true, false) => "create declared, conditional create not".into(),
                _ => "create not declared".into(),
            },
            needed_by: feature.to_string(),
            ..Row::default()
        });
    }
    let task = resource(rest, "Task");
    let versioned = task
        .and_then(|r| r.get("versioning"))
        .and_then(Value::as_str)
        .is_some_and(|v| v == "versioned-update");
    let update = task.is_some_and(|r| strings(r.get("interaction"), "code").any(|c| c == "update"));
    rows.push(Row {
        capability: IF_MATCH.into(),
        ok: update && versioned,
        detail: format!(
            "update {}, versioning {}",
            if update { "declared" } else { "not declared" },
            task.and_then(|r| r.get("versioning"))
                .and_then(Value::as_str)
                .unwrap_or("not stated")
        ),
        needed_by: IF_MATCH_NEEDED_BY.into(),
        ..Row::default()
    });
    rows
}

const IF_MATCH: &str = "update with If-Match";
/// The row that says `/metadata` answered with no CapabilityStatement.
pub const CAPABILITY_STATEMENT: &str = "CapabilityStatement at /metadata";
const IF_MATCH_NEEDED_BY: &str = "Task status changes without overwriting someone else's";

/// Try a conditional create in a transaction twice (must create one
/// resource), then delete it.
pub async fn probe_writes(client: &FhirClient) -> Vec<Row> {
    let marker = format!("check-{}", uuid_like());
    let identifier = format!(
        "{}|{marker}",
        crate::domain::visit::PASSERELLE_CANONICAL.to_owned() + "/sid/check"
    );
    let basic = json!({
        "resourceType": "Basic",
        "meta": { "tag": [{ "system": crate::seed::TAG_SYSTEM, "code": "check" }] },
        "identifier": [{ "system": format!("{}/sid/check", crate::domain::visit::PASSERELLE_CANONICAL), "value": marker }],
        "code": { "text": "Passerelle write probe; safe to delete" }
    });
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{ "fullUrl": "urn:uuid:6f1c1f2e-0000-4000-8000-000000000001", "resource": basic,
                    "request": { "method": "POST", "url": "Basic", "ifNoneExist": format!("identifier={identifier}") } }]
    });
    let needed_by = "every write (screening, referral, appeal, letter)";
    let first = client.transaction(&bundle).await;
    let second = match &first {
        Ok(_) => client.transaction(&bundle).await,
        Err(e) => Err(e.clone()),
    };
    let found = client
        .search("Basic", &[("identifier", identifier.clone())])
        .await;
    let ids: Vec<String> = found
        .as_ref()
        .map(|p| {
            p.raw("Basic")
                .filter_map(|r| r.get("id").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let if_match = match ids.first() {
        Some(id) => stale_update_refused(client, id).await,
        None => Err("there was no probe resource to update".to_string()),
    };
    for id in &ids {
        let _ = client.delete("Basic", id).await;
    }
    let write = match (&first, &second) {
        (Ok(_), Ok(_)) => Row {
            capability: "write (transaction)".into(),
            ok: true,
            detail: "created and deleted a tagged Basic resource".into(),
            needed_by: needed_by.into(),
            ..Row::default()
        },
        (Err(e), _) | (_, Err(e)) => Row {
            capability: "write (transaction)".into(),
            ok: false,
            detail: e.to_string(),
            needed_by: needed_by.into(),
            ..Row::default()
        },
    };
    let idempotent = Row {
        capability: "ifNoneExist in a transaction".into(),
        ok: first.is_ok() && ids.len() == 1,
        detail: match (&found, ids.len()) {
            (Err(e), _) => format!("could not search Basic by identifier: {e}"),
            (Ok(_), 1) => "sent twice, created once".into(),
            (Ok(_), n) => format!("sent twice, found {n}"),
        },
        needed_by: "sending a screening again after a timeout without duplicates".into(),
        ..Row::default()
    };
    let if_match = Row {
        capability: IF_MATCH.into(),
        ok: if_match.is_ok(),
        detail: if_match.unwrap_or_else(|e| e),
        needed_by: IF_MATCH_NEEDED_BY.into(),
        ..Row::default()
    };
    vec![write, idempotent, if_match]
}

/// Update the probe resource with its current version (accepted), then with
/// the same, now stale, version: the server must refuse the second.
async fn stale_update_refused(client: &FhirClient, id: &str) -> Result<String, String> {
    let current = client
        .read_json("Basic", id)
        .await
        .map_err(|e| e.to_string())?;
    let version = current
        .version
        .ok_or("the server gave no version (ETag or meta.versionId)")?;
    let mut resource = current.resource;
    resource["code"]["text"] = json!("Passerelle write probe (updated); safe to delete");
    client
        .update(&resource, Some(&version))
        .await
        .map_err(|e| format!("an update with the current version failed: {e}"))?;
    match client.update(&resource, Some(&version)).await {
        Err(FhirError::Conflict { status, .. }) => {
            Ok(format!("a stale update was refused ({status})"))
        }
        Ok(_) => Err("a stale update was accepted: concurrent changes would be overwritten".into()),
        Err(e) => Err(format!("a stale update failed otherwise: {e}")),
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", nanos, std::process::id())
}

/// Whether `Prefer: handling=strict` (FHIR R4 search.html#errors) is
/// honoured: every search Passerelle sends asks for it, so that a parameter
/// the server does not know fails the search instead of being dropped
/// (which would widen the result to other patients' resources).
pub async fn probe_strict(client: &FhirClient) -> Row {
    let unknown = [
        ("passerelle-check-unknown", "1".to_string()),
        ("_count", "1".into()),
    ];
    let (ok, detail) = match client.search("Observation", &unknown).await {
        Err(FhirError::Refused { status, .. }) => (
            true,
            format!("an unknown search parameter was refused ({status})"),
        ),
        Err(e) => (false, format!("the probe search failed otherwise: {e}")),
        Ok(_) => (
            false,
            "an unknown search parameter was ignored: a parameter the server does not support \
             widens a search silently, so every 'search' row above must be ok"
                .into(),
        ),
    };
    Row {
        capability: "Prefer: handling=strict".into(),
        ok,
        warning: !ok,
        detail,
        needed_by: "every search (no silently wider results)".into(),
    }
}

/// Each `_sort` Passerelle asks for, tried (a CapabilityStatement cannot
/// declare sort support). Refused under strict handling, the search that
/// sends it fails.
pub async fn probe_sorts(client: &FhirClient) -> Vec<Row> {
    let mut sorts: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for s in searches::ALL {
        if let Some(sort) = s.sort {
            sorts
                .entry((s.resource_type, sort))
                .or_default()
                .push(s.used_by);
        }
    }
    let mut rows = Vec::new();
    for ((t, sort), used_by) in sorts {
        let q = [("_sort", sort.to_string()), ("_count", "1".into())];
        let result = client.search(t, &q).await;
        rows.push(Row {
            capability: format!("search {t}?_sort={sort}"),
            ok: result.is_ok(),
            detail: match result {
                Ok(_) => "accepted".into(),
                Err(e) => format!("refused: {e}"),
            },
            needed_by: used_by.join("; "),
            ..Row::default()
        });
    }
    rows
}

/// The identifier system of the probes' resources.
fn check_system() -> String {
    format!("{}/sid/check", crate::domain::visit::PASSERELLE_CANONICAL)
}

fn check_tag() -> Value {
    json!({ "tag": [{ "system": crate::seed::TAG_SYSTEM, "code": "check" }] })
}

/// A transaction the size of the largest Passerelle sends
/// ([`crate::fhir::transactions::largest`]: a full screening with every
/// domain positive): an obviously tagged test patient ("Passerelle-Check
/// Test", identifier `…/sid/check`) and as many Observations as make up
/// that size, every entry a conditional create (`ifNoneExist`), as the
/// outbox sends them. A server that refuses it (many cap a Bundle's
/// entries) could not record such a screening: the row is missing, naming
/// the size and the server's answer. Then (b) a transaction with one
/// failing entry (a stale `ifMatch`) to see whether the server applies
/// transactions as a whole (FHIR R4 http.html#transaction: "must fail or
/// succeed as a single atomic unit"). Everything created is deleted.
pub async fn probe_screening_sized(client: &FhirClient) -> Vec<Row> {
    let marker = format!("check-{}", uuid_like());
    let system = check_system();
    let patient_id_value = format!("{marker}/patient");
    let patient_urn = crate::fhir::bundle::urn(&patient_id_value);
    let mut entries = vec![crate::fhir::bundle::conditional_create(
        &system,
        &patient_id_value,
        json!({
            "resourceType": "Patient", "meta": check_tag(),
            "identifier": [{ "system": system, "value": patient_id_value }],
            "name": [{ "family": "Passerelle-Check", "given": ["Test"] }]
        }),
    )];
    let largest = crate::fhir::transactions::largest();
    for i in 1..largest.entries {
        let value = format!("{marker}/obs/{i}");
        entries.push(crate::fhir::bundle::conditional_create(
            &system,
            &value,
            json!({
                "resourceType": "Observation", "meta": check_tag(), "status": "final",
                "identifier": [{ "system": system, "value": value }],
                "code": { "text": format!("Passerelle check probe {i}; safe to delete") },
                "subject": { "reference": patient_urn },
                "valueBoolean": true
            }),
        ));
    }
    let n = entries.len();
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries });
    let sent = client.transaction(&bundle).await;
    let created: Vec<String> = sent
        .as_ref()
        .map(|r| {
            r["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .zip(bundle["entry"].as_array().into_iter().flatten())
                .filter_map(|(answer, asked)| {
                    let t = asked["resource"]["resourceType"].as_str()?;
                    reference_from_location(answer["response"]["location"].as_str()?, t)
                })
                .collect()
        })
        .unwrap_or_default();
    let full = Row {
        capability: format!("transaction of {n} entries (ifNoneExist)"),
        ok: sent.is_ok() && created.len() == n,
        detail: match &sent {
            Ok(_) if created.len() == n => format!(
                "{n} entries recorded for a tagged test patient (Passerelle-Check Test), then deleted"
            ),
            Ok(_) => format!(
                "answered, but {} of {n} entries gave a location",
                created.len()
            ),
            Err(e) => format!(
                "the server refused a transaction of {n} entries, the largest Passerelle sends ({}): {e}",
                largest.what
            ),
        },
        needed_by: format!("recording a screening of up to {n} entries in one transaction"),
        ..Row::default()
    };
    let patient = created.iter().find(|r| r.starts_with("Patient/")).cloned();
    let atomic = match &patient {
        Some(p) => probe_atomic(client, &marker, p).await,
        None => Row {
            capability: ATOMIC.into(),
            ok: false,
            warning: true,
            detail: "not tried: the full-size transaction did not create its test patient".into(),
            needed_by: ATOMIC_NEEDED_BY.into(),
        },
    };
    // Observations first: they refer to the patient.
    for reference in created.iter().rev() {
        if let Some((t, id)) = reference.split_once('/') {
            let _ = client.delete(t, id).await;
        }
    }
    vec![full, atomic]
}

const ATOMIC: &str = "transaction atomicity";
const ATOMIC_NEEDED_BY: &str = "a refused screening leaving nothing half-recorded";

/// (b): a transaction whose second entry must fail (an `ifMatch` on a
/// version the patient does not have); then a search for its first entry.
async fn probe_atomic(client: &FhirClient, marker: &str, patient: &str) -> Row {
    let system = check_system();
    let value = format!("{marker}/atomic");
    let pid = patient.trim_start_matches("Patient/");
    let bundle = json!({ "resourceType": "Bundle", "type": "transaction", "entry": [
        crate::fhir::bundle::conditional_create(&system, &value, json!({
            "resourceType": "Basic", "meta": check_tag(),
            "identifier": [{ "system": system, "value": value }],
            "code": { "text": "Passerelle atomicity probe; safe to delete" }
        })),
        { "resource": { "resourceType": "Patient", "id": pid, "meta": check_tag(),
                        "name": [{ "family": "Passerelle-Check", "given": ["Changed"] }] },
          "request": { "method": "PUT", "url": patient, "ifMatch": "W/\"999999\"" } }
    ]});
    let answer = client.post_bundle(&bundle).await;
    let kept = client
        .search("Basic", &[("identifier", format!("{system}|{value}"))])
        .await;
    let kept_ids: Vec<String> = kept
        .as_ref()
        .map(|p| {
            p.raw("Basic")
                .filter_map(|r| r["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for id in &kept_ids {
        let _ = client.delete("Basic", id).await;
    }
    let outcome = match &answer {
        Err(e) => format!("the transaction was refused ({e})"),
        Ok(r) => match crate::fhir::bundle::check_transaction_response(&bundle, r) {
            Err(e) => format!("answered 2xx with a failed entry ({e})"),
            Ok(()) => "the stale ifMatch was accepted".into(),
        },
    };
    let (ok, detail) = match (&kept, kept_ids.len()) {
        (Err(e), _) => (
            false,
            format!("{outcome}; could not search for its other entry: {e}"),
        ),
        (Ok(_), 0) if matches!(&answer, Ok(r) if crate::fhir::bundle::check_transaction_response(&bundle, r).is_ok()) => {
            (
                false,
                format!("{outcome}: the probe could not make an entry fail"),
            )
        }
        (Ok(_), 0) => (true, format!("{outcome}; nothing of it was kept")),
        (Ok(_), _) => (
            false,
            format!(
                "NOT atomic: {outcome}, and its other entry was kept. Passerelle reads every \
                 answer entry by entry and keeps such a write as failed (not recorded); its \
                 creates are conditional on identifiers, so sending it again adds nothing twice"
            ),
        ),
    };
    Row {
        capability: ATOMIC.into(),
        ok,
        warning: !ok,
        detail,
        needed_by: ATOMIC_NEEDED_BY.into(),
    }
}

/// Rows as the terminal shows them.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let (label, consequence) = match (r.ok, r.warning) {
            (true, _) => ("ok", String::new()),
            (false, true) => ("WARNING", String::new()),
            (false, false) => ("MISSING", format!(" -> disables: {}", r.needed_by)),
        };
        out.push_str(&format!(
            "{label:<8} {:<42} {}{consequence}\n",
            r.capability, r.detail
        ));
    }
    out
}

/// Declared capabilities, what the server does with Passerelle's searches
/// (`Prefer: handling=strict`, `_sort`), and, unless read-only, the write
/// probes.
pub async fn probe(client: &FhirClient, read_only: bool) -> Result<Vec<Row>, FhirError> {
    let cap = client.capabilities().await?;
    let mut rows = assess_capabilities(&cap);
    rows.push(probe_strict(client).await);
    rows.extend(probe_sorts(client).await);
    if !read_only {
        // What the server does beats what it declares.
        rows.retain(|r| r.capability != IF_MATCH);
        rows.extend(probe_writes(client).await);
        rows.extend(probe_screening_sized(client).await);
    }
    Ok(rows)
}

/// `passerelle check`.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits {
        timeout: args.fhir.timeout(),
        max_response_bytes: args.fhir.fhir_max_response_bytes,
        ..Limits::default()
    };
    let client = FhirClient::new(FhirClient::http_client(), args.fhir_base.clone(), limits);
    println!("Probing {}", client.base());
    let rows = probe(&client, args.read_only).await?;
    print!("{}", render(&rows));
    let missing = rows.iter().filter(|r| !r.ok && !r.warning).count();
    let warnings = rows.iter().filter(|r| !r.ok && r.warning).count();
    let ok = rows.len() - missing - warnings;
    println!(
        "{ok} of {} capabilities ok, {warnings} warnings, {missing} missing",
        rows.len()
    );
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_capability_statement_reports_each_gap_and_its_feature() {
        let cap = json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": [{"mode": "server", "resource": [
            {"type": "Task", "interaction": [{"code": "update"}], "versioning": "versioned",
             "searchParam": [{"name": "patient", "type": "reference"}]}
        ]}]});
        let rows = assess_capabilities(&cap);
        let row = |c: &str| rows.iter().find(|r| r.capability == c).unwrap().clone();
        assert!(row("FHIR version 4.0.x (R4)").ok);
        assert!(row("search Task?patient").ok);
        assert!(!row("search Task?status").ok);
        assert!(!row("transaction").ok);
        assert_eq!(
            row("transaction").needed_by,
            "recording a screening in one transaction; seeding"
        );
        let t = row(IF_MATCH);
        assert!(!t.ok);
        assert_eq!(t.detail, "update declared, versioning versioned");
        assert!(render(&rows).contains("MISSING  search Task?status"));
        // The searches come from fhir::searches::ALL, each row naming every
        // feature that sends it.
        let concerns = row("search Condition?clinical-status");
        assert!(!concerns.ok);
        assert_eq!(concerns.needed_by, "letter: active problems in letters");
        assert!(
            row("search Coverage?beneficiary")
                .needed_by
                .contains("letter: the active coverage")
        );
        assert!(!row("_include=ClaimResponse:insurer").ok);
    }

    #[test]
    fn a_warning_is_shown_as_such_and_a_missing_row_names_what_it_disables() {
        let rows = [
            Row {
                capability: "transaction atomicity".into(),
                ok: false,
                warning: true,
                detail: "NOT atomic".into(),
                needed_by: "x".into(),
            },
            Row {
                capability: "search Task?code".into(),
                detail: "not declared".into(),
                needed_by: "patterns".into(),
                ..Row::default()
            },
        ];
        let text = render(&rows);
        assert!(text.contains("WARNING  transaction atomicity"), "{text}");
        assert!(!text.contains("disables: x"), "{text}");
        assert!(text.contains("-> disables: patterns"), "{text}");
    }

    #[test]
    fn metadata_answered_with_a_bundle_is_said_once_first() {
        // What Medplum's bare FHIR router answers to GET metadata.
        let rows = assess_capabilities(
            &json!({"resourceType": "Bundle", "type": "searchset", "total": 0}),
        );
        assert_eq!(rows[0].capability, CAPABILITY_STATEMENT);
        assert!(!rows[0].ok);
        assert!(
            rows[0]
                .detail
                .starts_with("GET metadata answered with Bundle")
        );
        let real = assess_capabilities(&json!({"resourceType": "CapabilityStatement"}));
        assert!(real.iter().all(|r| r.capability != CAPABILITY_STATEMENT));
    }

    #[test]
    fn a_non_r4_server_is_flagged() {
        let rows = assess_capabilities(
            &json!({"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"}),
        );
        assert!(!rows[0].ok);
        assert_eq!(rows[0].detail, "server says 5.0.0");
    }
}
