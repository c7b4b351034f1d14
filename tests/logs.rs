//! The logs of whole visits, including failures, at debug level, contain no
//! patient data: no name, birth date, identifier, member id or payer text.
//! (One test in this binary: it owns the process's log subscriber.)

mod common;

use common::proxy::{Fault, Proxy};
use common::{AppOptions, TestApp};

#[tokio::test]
async fn logs_of_visits_and_failures_hold_no_patient_data() {
    let captured = common::capture_logs();

    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    let (address, shutdown) = common::start_app(
        hfs.base(),
        AppOptions {
            extra_open_servers: vec![proxy.base.clone()],
            ..Default::default()
        },
    )
    .await;
    let app = TestApp::from_parts(address, hfs, shutdown);
    let iss = proxy.base.to_string();

    for patient in ["pas-p01", "pas-p02", "pas-p05"] {
        let (status, _) = app.open(&iss, patient).await;
        assert_eq!(status, 200);
    }
    proxy.fault("/Task?", Fault::Rewrite(|mut b| {
        b["entry"].as_array_mut().unwrap().push(serde_json::json!({"resource": {"resourceType": "Task", "id": "x", "status": "García-1984", "intent": "order"}}));
        b
    }));
    proxy.fault("/Coverage?", Fault::Status(500, r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"row for SHP-448812 locked"}]}"#.into()));
    let (status, _) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 200);
    proxy.clear();
    proxy.fault(
        "/Patient/",
        Fault::Body(r#"{"resourceType":"Patient","birthDate":"María 1984"}"#.into()),
    );
    let (status, _) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 502);

    let logs = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("FHIR request"), "debug logs were captured");
    assert!(
        logs.contains("skipped a search entry"),
        "the bad entry was logged"
    );
    for secret in [
        "García",
        "Garcia",
        "María",
        "Dupont",
        "Nguyen",
        "1984-06-12",
        "1949-02-03",
        "MRN-P01",
        "SHP-448812",
        "1EG4-TE5-MK72",
        "apixaban",
        "conservative therapy",
        "pas-p01",
        "pas-p02",
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret:?}");
    }
}
