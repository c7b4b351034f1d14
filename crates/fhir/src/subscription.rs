//! Task change notifications by the R4 Subscriptions backport (HL7 FHIR IG
//! `subscriptions-backport` 1.1.0): whether the server offers a Task topic,
//! the rest-hook Subscription Passerelle asks for, and finding the one an
//! earlier start made so a restart does not add another.

use serde_json::{Value, json};

use super::client::FhirClient;
use super::error::FhirError;

/// The R4 Subscriptions backport (HL7 FHIR IG `subscriptions-backport`
/// 1.1.0): a server that offers it says so in its CapabilityStatement.
pub const BACKPORT_SERVER: &str = "http://hl7.org/fhir/uv/subscriptions-backport/CapabilityStatement/backport-subscription-server-r4";
pub const TOPIC_EXTENSION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical";

/// The topic to subscribe to for Task changes, when the server offers the
/// backport with rest-hook: a topic it lists whose canonical names Task.
pub fn task_topic(capabilities: &Value) -> Option<String> {
    let offers_backport = capabilities["instantiates"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i.as_str().is_some_and(|s| s.starts_with(BACKPORT_SERVER)));
    if !offers_backport {
        return None;
    }
    capabilities["rest"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["resource"].as_array().into_iter().flatten())
        .filter(|r| r["type"] == "Subscription")
        .flat_map(|r| r["extension"].as_array().into_iter().flatten())
        .filter(|e| e["url"] == TOPIC_EXTENSION)
        .filter_map(|e| e["valueCanonical"].as_str())
        .find(|t| t.to_lowercase().contains("task"))
        .map(String::from)
}

/// A backport Subscription (rest-hook, id-only) to `topic`, notifying
/// `endpoint`, with the notification secret as a channel header when given.
pub fn subscription(topic: &str, endpoint: &str, bearer: Option<&str>) -> Value {
    let mut s = json!({
        "resourceType": "Subscription",
        "meta": { "profile": [crate::profiles::BACKPORT_SUBSCRIPTION] },
        "status": "requested",
        "reason": "Passerelle follow-up queue: Task changes",
        "criteria": topic,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": { "extension": [{
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content",
                "valueCode": "id-only"
            }] }
        }
    });
    if let Some(secret) = bearer {
        s["channel"]["header"] = json!([format!("Authorization: Bearer {secret}")]);
    }
    s
}

/// Of the Subscriptions a search found, the one this queue made before
/// (same endpoint and topic) and the server still runs, to be used again.
pub fn reusable_subscription<'a>(
    found: impl IntoIterator<Item = &'a Value>,
    topic: &str,
    endpoint: &str,
) -> Option<String> {
    found
        .into_iter()
        .filter(|s| s["channel"]["endpoint"] == endpoint && s["criteria"] == topic)
        .filter(|s| matches!(s["status"].as_str(), Some("requested" | "active")))
        .find_map(|s| s["id"].as_str().map(|id| format!("Subscription/{id}")))
}

/// The Subscription notifying `endpoint` of `topic`: the one a previous
/// start made, when the server still has it running (the endpoint's secret
/// is derived from the session key, so it is the same across restarts), or
/// a new one. Without this, each restart would add a Subscription and the
/// EHR would notify every one of them.
pub async fn ensure(
    client: &FhirClient,
    topic: &str,
    endpoint: &str,
    bearer: Option<&str>,
) -> Result<(Option<String>, bool), FhirError> {
    let params = [("url", endpoint.to_string())];
    match client.search("Subscription", &params).await {
        Ok(page) => {
            if let Some(id) = reusable_subscription(page.raw("Subscription"), topic, endpoint) {
                return Ok((Some(id), false));
            }
        }
        // A server that cannot search Subscriptions by endpoint: create one
        // (as before), saying so.
        Err(e) => tracing::warn!(
            kind = e.kind(),
            "existing Subscriptions could not be searched; creating one"
        ),
    }
    let created = client
        .create(&subscription(topic, endpoint, bearer), None)
        .await?;
    Ok((created.reference, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_offering_the_backport_with_a_task_topic_gets_a_rest_hook_subscription() {
        let offers = json!({
            "resourceType": "CapabilityStatement",
            "instantiates": [format!("{BACKPORT_SERVER}|1.1.0")],
            "rest": [{ "resource": [{ "type": "Subscription", "extension": [
                { "url": TOPIC_EXTENSION, "valueCanonical": "http://example.org/topic/encounter-start" },
                { "url": TOPIC_EXTENSION, "valueCanonical": "http://example.org/topic/task-updated" }
            ] }] }]
        });
        assert_eq!(
            task_topic(&offers).as_deref(),
            Some("http://example.org/topic/task-updated")
        );
        let s = subscription(
            "http://example.org/topic/task-updated",
            "https://app/hooks/fhir/x",
            None,
        );
        assert!(s["channel"].get("header").is_none());
        assert_eq!(s["channel"]["type"], "rest-hook");
        assert_eq!(s["criteria"], "http://example.org/topic/task-updated");
        assert_eq!(
            s["channel"]["_payload"]["extension"][0]["valueCode"],
            "id-only"
        );
        let v = crate::SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test");
        v.validate(&s).unwrap();
        let with_header = subscription(
            "http://example.org/topic/task-updated",
            "https://app/hooks/fhir",
            Some("s3cret"),
        );
        assert_eq!(
            with_header["channel"]["header"],
            json!(["Authorization: Bearer s3cret"])
        );
        v.validate(&with_header).unwrap();
        // Subscription resources alone (as hfs lists them) are not the backport.
        let plain = json!({ "rest": [{ "resource": [{ "type": "Subscription" }] }] });
        assert_eq!(task_topic(&plain), None);
    }

    #[test]
    fn a_running_subscription_of_ours_is_used_again_and_nothing_else() {
        let endpoint = "https://app/hooks/fhir/abc";
        let topic = "http://example.org/topic/task-updated";
        let sub = |id: &str, status: &str, endpoint: &str, topic: &str| {
            json!({ "resourceType": "Subscription", "id": id, "status": status,
                    "criteria": topic, "channel": { "type": "rest-hook", "endpoint": endpoint } })
        };
        let found = [
            sub("off", "off", endpoint, topic),
            sub("errored", "error", endpoint, topic),
            sub(
                "other-endpoint",
                "active",
                "https://app/hooks/fhir/zzz",
                topic,
            ),
            sub(
                "other-topic",
                "active",
                endpoint,
                "http://example.org/topic/x",
            ),
        ];
        assert_eq!(reusable_subscription(&found, topic, endpoint), None);
        let mut with_ours = found.to_vec();
        with_ours.push(sub("ours", "active", endpoint, topic));
        assert_eq!(
            reusable_subscription(&with_ours, topic, endpoint).as_deref(),
            Some("Subscription/ours")
        );
    }
}
