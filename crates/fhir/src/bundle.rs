//! Building idempotent transaction Bundles: every resource Passerelle
//! writes carries an identifier derived from the write's own id, gets a
//! stable `urn:uuid` from it (so entries can reference each other), and is
//! created with `ifNoneExist` on that identifier, so sending the same
//! transaction again creates nothing twice.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::decode::outcome_message;
use crate::error::FhirError;

/// A stable `urn:uuid` for an identifier value (SHA-256, version-5 style).
pub fn urn(value: &str) -> String {
    let h = Sha256::digest(value.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-5{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// A transaction entry creating `resource` unless one with identifier
/// `system|id_value` exists.
pub fn conditional_create(system: &str, id_value: &str, resource: Value) -> Value {
    let rtype = resource["resourceType"]
        .as_str()
        .expect("resourceType set")
        .to_string();
    json!({
        "fullUrl": urn(id_value),
        "resource": resource,
        "request": { "method": "POST", "url": rtype, "ifNoneExist": format!("identifier={system}|{id_value}") }
    })
}

/// Read the answer to a transaction (or batch) instead of trusting its 2xx:
/// FHIR R4 http.html#transaction-response says the response Bundle has
/// `type` `transaction-response` (`batch-response` for a batch) and one
/// entry per request entry, in the same order, each with a
/// `response.status` that starts with the HTTP status code. A server that
/// answers 200 with an entry at 412, or with fewer entries, did not record
/// what was sent, whatever the outer status says.
///
/// The failure names the entry (`Bundle.entry[i]`, its resource type, the
/// status line and the `response.outcome` diagnostics): an
/// [`FhirError::EntryFailed`] (transient for 429 and 5xx) or, for a response
/// that is not shaped as one, [`FhirError::Invalid`].
pub fn check_transaction_response(request: &Value, response: &Value) -> Result<(), FhirError> {
    let invalid = |detail: String| FhirError::Invalid {
        what: "a transaction response".into(),
        detail,
    };
    let expected = match request.get("type").and_then(Value::as_str) {
        Some("batch") => "batch-response",
        _ => "transaction-response",
    };
    if response.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(invalid("expected a Bundle".into()));
    }
    let answered = response.get("type").and_then(Value::as_str);
    if answered != Some(expected) {
        return Err(invalid(format!(
            "its type is {}, not {expected}",
            answered.unwrap_or("missing")
        )));
    }
    let sent = entries(request);
    let got = entries(response);
    if sent.len() != got.len() {
        return Err(invalid(format!(
            "{} entries answer the {} sent",
            got.len(),
            sent.len()
        )));
    }
    for (index, (asked, answer)) in sent.iter().zip(got).enumerate() {
        check_entry(index, asked, answer)?;
    }
    Ok(())
}

fn entries(bundle: &Value) -> &[Value] {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// One response entry: its `response.status` must be 2xx.
fn check_entry(index: usize, asked: &Value, answer: &Value) -> Result<(), FhirError> {
    let resource_type = entry_type(asked);
    let status_line = answer
        .pointer("/response/status")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default();
    let Some(status) = status_line
        .split_whitespace()
        .next()
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return Err(FhirError::Invalid {
            what: "a transaction response".into(),
            detail: format!("Bundle.entry[{index}] ({resource_type}) has no response.status"),
        });
    };
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(FhirError::EntryFailed {
        index,
        resource_type,
        status,
        status_line: status_line.chars().take(80).collect(),
        message: answer
            .pointer("/response/outcome")
            .cloned()
            .and_then(outcome_message),
    })
}

/// The resource type a request entry is about: its resource's, else the
/// first segment of `request.url` (a DELETE or a conditional URL).
fn entry_type(entry: &Value) -> String {
    entry
        .pointer("/resource/resourceType")
        .and_then(Value::as_str)
        .or_else(|| {
            entry
                .pointer("/request/url")
                .and_then(Value::as_str)
                .and_then(|u| u.split(['/', '?']).next())
        })
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> Value {
        let entries: Vec<Value> = (0..n)
            .map(|i| {
                conditional_create(
                    "http://x/sid",
                    &format!("v{i}"),
                    json!({"resourceType": if i == 1 { "Observation" } else { "Condition" }}),
                )
            })
            .collect();
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    }

    fn answer(statuses: &[Value]) -> Value {
        let entries: Vec<Value> = statuses.iter().map(|s| json!({"response": s})).collect();
        json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})
    }

    #[test]
    fn a_transaction_answered_entry_by_entry_in_2xx_is_recorded() {
        let ok = answer(&[
            json!({"status": "201 Created"}),
            json!({"status": "200 OK"}),
            json!({"status": "200"}),
        ]);
        assert_eq!(check_transaction_response(&request(3), &ok), Ok(()));
        let empty = json!({"resourceType": "Bundle", "type": "transaction"});
        let none = json!({"resourceType": "Bundle", "type": "transaction-response"});
        assert_eq!(check_transaction_response(&empty, &none), Ok(()));
    }

    #[test]
    fn a_failed_entry_is_named_with_its_status_and_diagnostics() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "conflict", "diagnostics": "version 2 is not current"}]});
        let bad = answer(&[
            json!({"status": "201 Created"}),
            json!({"status": "412 Precondition Failed", "outcome": outcome}),
        ]);
        let err = check_transaction_response(&request(2), &bad).unwrap_err();
        assert_eq!(
            err,
            FhirError::EntryFailed {
                index: 1,
                resource_type: "Observation".into(),
                status: 412,
                status_line: "412 Precondition Failed".into(),
                message: Some("version 2 is not current".into()),
            }
        );
        assert!(!err.is_transient(), "a 4xx entry will not succeed later");
        assert_eq!(
            err.to_string(),
            "The FHIR server did not record Bundle.entry[1] (Observation): 412 Precondition Failed (version 2 is not current)"
        );
        let busy = answer(&[json!({"status": "503"}), json!({"status": "201"})]);
        let err = check_transaction_response(&request(2), &busy).unwrap_err();
        assert!(err.is_transient(), "a 5xx entry may succeed later: {err}");
        assert!(err.to_string().contains("Bundle.entry[0] (Condition): 503"));
    }

    #[test]
    fn a_response_that_is_not_a_transaction_response_is_refused() {
        let message = |response: Value| {
            check_transaction_response(&request(2), &response)
                .unwrap_err()
                .to_string()
        };
        let mut batch = answer(&[json!({"status": "201"}), json!({"status": "201"})]);
        batch["type"] = json!("batch-response");
        assert!(message(batch).contains("its type is batch-response, not transaction-response"));
        assert!(
            message(answer(&[json!({"status": "201"})])).contains("1 entries answer the 2 sent")
        );
        assert!(
            message(answer(&[json!({"status": "201"}), json!({})]))
                .contains("Bundle.entry[1] (Observation) has no response.status")
        );
        assert!(message(json!({"resourceType": "OperationOutcome"})).contains("expected a Bundle"));
        let delete = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "DELETE", "url": "Task?identifier=x|y"}}]});
        let refused = json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"response": {"status": "404 Not Found"}}]});
        assert!(
            check_transaction_response(&delete, &refused)
                .unwrap_err()
                .to_string()
                .contains("Bundle.entry[0] (Task): 404")
        );
    }

    #[test]
    fn urns_are_stable_valid_uuids_and_entries_are_conditional() {
        let a = urn("scr-1/obs/q1");
        assert_eq!(a, urn("scr-1/obs/q1"));
        assert_ne!(a, urn("scr-1/obs/q2"));
        let uuid = a.trim_start_matches("urn:uuid:");
        assert_eq!(uuid.len(), 36);
        assert_eq!(
            uuid.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        let e = conditional_create("http://x/sid", "v1", json!({"resourceType": "Task"}));
        assert_eq!(e["request"]["ifNoneExist"], "identifier=http://x/sid|v1");
        assert_eq!(e["request"]["url"], "Task");
        assert_eq!(e["fullUrl"], urn("v1"));
    }
}
