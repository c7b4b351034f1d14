//! Decoding FHIR JSON into fhir-sdk's R4B models, one resource at a time.
//!
//! R4B models read R4 JSON for every resource Passerelle uses. Two traps of
//! the models are handled here: a concrete type accepts any `resourceType`
//! (so we check it first), and errors must not leak values into logs (so an
//! error names the JSON path only).

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a resource could not be decoded: the JSON path at fault, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected resourceType {expected}")]
    WrongType { expected: String },
    #[error("invalid at `{path}`")]
    Invalid { path: String },
}

/// Decode `value` as a `resource_type` resource.
pub fn decode<T: DeserializeOwned>(value: Value, resource_type: &str) -> Result<T, DecodeError> {
    if value.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(DecodeError::WrongType {
            expected: resource_type.to_string(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        DecodeError::Invalid {
            path: if path == "." { "(root)".into() } else { path },
        }
    })
}

/// The human-readable message of an OperationOutcome body, if it is one:
/// the issues' `details.text` or `diagnostics`, joined, at most 500 characters.
pub fn operation_outcome_message(body: &[u8]) -> Option<String> {
    outcome_message(serde_json::from_slice(body).ok()?)
}

/// [`operation_outcome_message`] of a parsed OperationOutcome (such as a
/// transaction entry's `response.outcome`).
pub fn outcome_message(value: Value) -> Option<String> {
    use fhir_sdk::r4b::resources::OperationOutcome;
    let outcome: OperationOutcome = decode(value, "OperationOutcome").ok()?;
    let parts: Vec<String> = outcome
        .issue
        .iter()
        .flatten()
        .filter_map(|i| {
            i.details
                .as_ref()
                .and_then(|d| d.text.clone())
                .or_else(|| i.diagnostics.clone())
        })
        .collect();
    if parts.is_empty() {
        return None;
    }
    let mut msg = parts.join("; ");
    if msg.chars().count() > 500 {
        msg = msg.chars().take(499).collect::<String>() + "…";
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhir_sdk::r4b::resources::Patient;
    use serde_json::json;

    #[test]
    fn wrong_type_is_refused_even_though_the_model_would_accept_it() {
        let err = decode::<Patient>(json!({"resourceType": "Observation"}), "Patient").unwrap_err();
        assert_eq!(
            err,
            DecodeError::WrongType {
                expected: "Patient".into()
            }
        );
    }

    #[test]
    fn errors_name_the_path_not_the_value() {
        let err = decode::<Patient>(
            json!({"resourceType": "Patient", "birthDate": "Jeanne-1970", "name": [{"family": "Martin"}]}),
            "Patient",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("birthDate"), "{text}");
        assert!(!text.contains("Jeanne"), "{text}");
    }

    #[test]
    fn operation_outcome_text_is_extracted() {
        let body = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "Unknown search parameter 'foo'"},
            {"severity": "error", "code": "invalid", "details": {"text": "Bad date"}}
        ]});
        assert_eq!(
            operation_outcome_message(body.to_string().as_bytes()).as_deref(),
            Some("Unknown search parameter 'foo'; Bad date")
        );
        assert_eq!(operation_outcome_message(b"<html>"), None);
    }
}
