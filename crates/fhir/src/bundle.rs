//! Building idempotent transaction Bundles: every resource Passerelle
//! writes carries an identifier derived from the write's own id, gets a
//! stable `urn:uuid` from it (so entries can reference each other), and is
//! created with `ifNoneExist` on that identifier, so sending the same
//! transaction again creates nothing twice.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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

#[cfg(test)]
mod tests {
    use super::*;

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
