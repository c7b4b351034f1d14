//! The FHIR client against a real server: paging, `_include`, conditional
//! create, `If-Match`, retries for idempotent requests only, and redirects
//! followed on the server's own origin only.

use crate::common;

use common::proxy::{Fault, Proxy};
use passerelle::fhir::FhirError;
use serde_json::json;

#[tokio::test]
async fn search_follows_paging_links_and_returns_included_resources() {
    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let first = client
        .search("Patient", &[("_count", "5".into())])
        .await
        .unwrap();
    assert_eq!(first.raw("Patient").count(), 5);
    assert!(
        first.next.is_some(),
        "13 patients at 5 a page have a next page"
    );
    let all = client
        .search_all("Patient", &[("_count", "5".into())], 10)
        .await
        .unwrap();
    let mut ids: Vec<_> = all
        .raw("Patient")
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 13, "every patient once across the pages");

    let page = client
        .search(
            "Coverage",
            &[
                ("beneficiary", "Patient/pas-p02".into()),
                ("_include", "Coverage:payor".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(page.raw("Coverage").count(), 2);
    let orgs: Vec<_> = page
        .raw("Organization")
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        orgs.contains(&"Keystone Rx (Medicare Part D)".to_string()),
        "{orgs:?}"
    );
}

#[tokio::test]
async fn conditional_create_creates_once_and_a_stale_if_match_is_a_conflict() {
    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let task = json!({
        "resourceType": "Task", "status": "requested", "intent": "order",
        "identifier": [{"system": "http://passerelle.example.org/fhir/sid/test", "value": "t-1"}],
        "for": {"reference": "Patient/pas-p01"}
    });
    let query = "identifier=http://passerelle.example.org/fhir/sid/test|t-1";
    let first = client.create(&task, Some(query)).await.unwrap();
    assert!(first.created);
    let again = client.create(&task, Some(query)).await.unwrap();
    assert!(!again.created, "If-None-Exist matched the first one");
    assert_eq!(first.reference, again.reference);

    let id = first
        .reference
        .unwrap()
        .trim_start_matches("Task/")
        .to_string();
    let current = client.read_json("Task", &id).await.unwrap();
    let v1 = current.version.clone().unwrap();
    let mut accepted = current.resource.clone();
    accepted["status"] = json!("accepted");
    let updated = client.update(&accepted, Some(&v1)).await.unwrap();
    assert_ne!(updated.version.as_deref(), Some(v1.as_str()));

    // A second coordinator still holding version 1.
    let mut rejected = current.resource;
    rejected["status"] = json!("rejected");
    let err = client.update(&rejected, Some(&v1)).await.unwrap_err();
    assert!(
        matches!(err, FhirError::Conflict { status: 412, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("Someone else changed this record first (412)."),
        "{err}"
    );
    // Nothing was lost: the first update stands.
    let now = client.read_json("Task", &id).await.unwrap();
    assert_eq!(now.resource["status"], "accepted");
}

#[tokio::test]
async fn only_idempotent_requests_are_retried() {
    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    let client = common::fhir_client(&proxy.base);
    let unavailable = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"maintenance"}]}"#;

    proxy.fault("/Patient/pas-p01", Fault::Status(503, unavailable.into()));
    let err = client.read_json("Patient", "pas-p01").await.unwrap_err();
    assert_eq!(
        err,
        FhirError::Server {
            status: 503,
            message: "maintenance".into()
        }
    );
    assert_eq!(proxy.count(), 3, "a GET is tried three times");
    proxy.clear();
    proxy.reset_count();

    proxy.fault("/", Fault::Status(503, unavailable.into()));
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
    let err = client.transaction(&bundle).await.unwrap_err();
    assert!(matches!(err, FhirError::Server { status: 503, .. }));
    assert_eq!(proxy.count(), 1, "a transaction is never retried blindly");
    proxy.reset_count();
    let err = client
        .create(
            &json!({"resourceType": "Basic", "code": {"text": "x"}}),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FhirError::Server { status: 503, .. }));
    assert_eq!(proxy.count(), 1, "a POST is never retried");
    proxy.clear();

    // A paging link to another server is refused.
    proxy.fault(
        "/Patient?",
        Fault::Rewrite(|mut b| {
            b["link"] = json!([{"relation": "next", "url": "http://elsewhere.example.org/fhir/Patient?page=2"}]);
            b
        }),
    );
    let err = client
        .search("Patient", &[("_count", "2".into())])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("it points to another server"),
        "{err}"
    );
}

/// A server that redirects every request to `target` + its path, counting
/// the requests it gets.
async fn redirecting(
    target: Option<String>,
) -> (url::Url, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::response::IntoResponse;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base =
        url::Url::parse(&format!("http://{}/fhir/", listener.local_addr().unwrap())).unwrap();
    let (counted, own) = (hits.clone(), base.clone());
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (counted, own, target) = (counted.clone(), own.clone(), target.clone());
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            let path = uri.path().trim_start_matches("/fhir/").to_string();
            match (&target, path.as_str()) {
                (_, "Patient/here") => (
                    [("content-type", "application/fhir+json")],
                    r#"{"resourceType":"Patient","id":"here"}"#,
                )
                    .into_response(),
                (Some(t), _) => {
                    axum::response::Redirect::temporary(&format!("{t}{path}")).into_response()
                }
                (None, _) => axum::response::Redirect::temporary(&format!("{own}Patient/here"))
                    .into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

#[tokio::test]
async fn a_redirect_is_followed_on_the_servers_origin_and_never_to_another() {
    use std::sync::atomic::Ordering;
    let (other, other_hits) = redirecting(None).await;
    let (server, _) = redirecting(Some(other.to_string())).await;
    let client = common::fhir_client(&server);
    let refused = client.read_json("Patient", "p1").await;
    assert!(
        refused.is_err(),
        "a redirect off the server's origin is an error"
    );
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "nothing was sent to the other origin"
    );
    // On its own origin, the same server's redirect is followed.
    let same = common::fhir_client(&other);
    let read = same.read_json("Patient", "moved").await.unwrap();
    assert_eq!(read.resource["id"], "here");
}

/// Who a referral names as requester (SDOHCC: a PractitionerRole or an
/// Organization), from the signed-in user, against the seeded server.
#[tokio::test]
async fn the_requester_is_the_users_practitioner_role_else_the_practice() {
    use passerelle::fhir::people::{Requester, requester};
    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let practice = Some("Organization/pas-org-practice");
    let role = |r: &str| Requester {
        reference: r.to_string(),
        organization: Some("Organization/pas-org-practice".into()),
    };
    assert_eq!(
        requester(&client, Some("Practitioner/pas-prac-moreau"), None)
            .await
            .unwrap(),
        Some(role("PractitionerRole/pas-role-moreau")),
        "a practitioner is represented by their role, whose organization holds the consent"
    );
    assert_eq!(
        requester(&client, Some("PractitionerRole/pas-role-roy"), None)
            .await
            .unwrap(),
        Some(role("PractitionerRole/pas-role-roy"))
    );
    assert_eq!(
        requester(&client, Some("Practitioner/nobody-here"), practice)
            .await
            .unwrap(),
        Some(role("Organization/pas-org-practice")),
        "no role: the practice"
    );
    assert_eq!(
        requester(&client, Some("Patient/pas-p01"), practice)
            .await
            .unwrap(),
        Some(role("Organization/pas-org-practice"))
    );
    assert_eq!(
        requester(&client, Some("Practitioner/nobody-here"), None)
            .await
            .unwrap(),
        None,
        "nobody to name: the caller refuses the write"
    );
}
