//! `passerelle check`: probe a FHIR server as an integrator would, and say
//! which Passerelle feature each missing capability disables.
//!
//! What the server declares (its CapabilityStatement) is read first; then,
//! unless `--read-only`, what matters most is tried for real: a transaction
//! with a conditional create, sent twice, must create exactly one resource,
//! which is then deleted.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::config::CheckArgs;
use crate::fhir::{FhirClient, FhirError, Limits};

/// One capability and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub capability: String,
    pub ok: bool,
    pub detail: String,
    /// The feature that needs it.
    pub needed_by: &'static str,
}

/// (resource type, search parameter, the feature that needs it)
pub const SEARCH_PARAMS: &[(&str, &str, &str)] = &[
    ("Patient", "name", "patient picker in open-server mode"),
    ("Encounter", "subject", "latest encounter on the visit page"),
    (
        "Coverage",
        "beneficiary",
        "coverage cards and appeal regimes",
    ),
    ("Observation", "subject", "screening history"),
    ("Observation", "category", "screening history"),
    ("Condition", "subject", "health concerns"),
    ("Condition", "category", "health concerns"),
    ("ServiceRequest", "subject", "open referrals"),
    ("ServiceRequest", "status", "open referrals"),
    (
        "Task",
        "patient",
        "open referrals, appeals and patient tasks",
    ),
    (
        "Task",
        "status",
        "open referrals, appeals and the coordinator queue",
    ),
    ("Task", "owner", "the coordinator queue"),
    ("Task", "code", "the coordinator queue"),
    ("ClaimResponse", "patient", "denials on the visit page"),
];

/// (resource type, include, feature)
pub const INCLUDES: &[(&str, &str, &str)] = &[
    (
        "Coverage",
        "Coverage:payor",
        "payer names on coverage cards",
    ),
    (
        "ClaimResponse",
        "ClaimResponse:request",
        "the denied service or drug",
    ),
];

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
            needed_by: "knowing what the server supports before a visit needs it",
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
        needed_by: "everything",
    });
    let empty = json!({});
    let rest = server_rest(cap).unwrap_or(&empty);
    for (t, param, feature) in SEARCH_PARAMS {
        let declared = resource(rest, t)
            .is_some_and(|r| strings(r.get("searchParam"), "name").any(|n| n == *param));
        rows.push(Row {
            capability: format!("search {t}?{param}"),
            ok: declared,
            detail: if declared {
                "declared".into()
            } else {
                "not declared".into()
            },
            needed_by: feature,
        });
    }
    for (t, include, feature) in INCLUDES {
        let r = resource(rest, t);
        let declared = r
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
            needed_by: feature,
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
        needed_by: "recording a screening in one transaction; seeding",
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
            needed_by: feature,
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
        needed_by: IF_MATCH_NEEDED_BY,
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
            needed_by,
        },
        (Err(e), _) | (_, Err(e)) => Row {
            capability: "write (transaction)".into(),
            ok: false,
            detail: e.to_string(),
            needed_by,
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
        needed_by: "sending a screening again after a timeout without duplicates",
    };
    let if_match = Row {
        capability: IF_MATCH.into(),
        ok: if_match.is_ok(),
        detail: if_match.unwrap_or_else(|e| e),
        needed_by: IF_MATCH_NEEDED_BY,
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

/// Rows as the terminal shows them.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:<42} {}{}\n",
            if r.ok { "ok" } else { "MISSING" },
            r.capability,
            r.detail,
            if r.ok {
                String::new()
            } else {
                format!(" -> disables: {}", r.needed_by)
            }
        ));
    }
    out
}

/// Declared capabilities and, unless read-only, the write probe.
pub async fn probe(client: &FhirClient, read_only: bool) -> Result<Vec<Row>, FhirError> {
    let cap = client.capabilities().await?;
    let mut rows = assess_capabilities(&cap);
    if !read_only {
        // What the server does beats what it declares.
        rows.retain(|r| r.capability != IF_MATCH);
        rows.extend(probe_writes(client).await);
    }
    Ok(rows)
}

/// `passerelle check`.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let limits = Limits {
        timeout: args.fhir.timeout(),
        max_response_bytes: args.fhir.fhir_max_response_bytes,
    };
    let client = FhirClient::new(FhirClient::http_client(), args.fhir_base.clone(), limits);
    println!("Probing {}", client.base());
    let rows = probe(&client, args.read_only).await?;
    print!("{}", render(&rows));
    let missing = rows.iter().filter(|r| !r.ok).count();
    println!("{} of {} capabilities ok", rows.len() - missing, rows.len());
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
