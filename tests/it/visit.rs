//! The visit page against a real FHIR server (hfs), and every bad input the
//! foundation must answer clearly: a server not allowed, an unknown patient,
//! an unreachable server, 500 and 429, malformed and schema-invalid
//! resources, an oversize answer, a server that hangs.

use crate::common;

use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::{AppOptions, spawn_app, spawn_app_with};
use passerelle::fhir::Limits;

#[tokio::test]
async fn visit_page_shows_banner_encounter_coverage_screening_and_open_task() {
    let app = spawn_app().await;
    let (status, html) = app.open(app.fhir_base().as_str(), "pas-p01").await;
    assert_eq!(status, 200, "{html}");
    for expected in [
        "María José García",
        "MRN-P01",
        "Spanish",
        "Interpreter needed",
        "Office visit",
        "Sunrise Health Plan (Medicaid managed care)",
        "SHP-448812",
        "Sunrise Medicaid Gold",
        "Medicaid managed care: appeal within 60 days (42 CFR 438.402(c)(2)(ii))",
        "Food insecurity",
        "Referral to food pantry program",
        "in-progress",
        "MRI lumbar spine without contrast",
        "Prior authorization denied: conservative therapy of at least 6 weeks is not documented.",
        "<code>197</code> Precertification/authorization/notification/pre-treatment absent",
    ] {
        assert!(html.contains(expected), "missing {expected:?}");
    }
    // The food screening (150 days ago) is positive, housing negative.
    let food = html.split("Food insecurity</th>").nth(1).expect("food row");
    assert!(
        food.trim_start()
            .starts_with("<td><strong class=\"positive\">Positive"),
        "{food:.80}"
    );
    let housing = html
        .split("Housing instability</th>")
        .nth(1)
        .expect("housing row");
    assert!(
        housing.trim_start().starts_with("<td>Negative"),
        "{housing:.80}"
    );
}

#[tokio::test]
async fn coverage_gaps_regimes_languages_denials_appeals_and_patient_tasks_show() {
    let app = spawn_app().await;
    let base = app.fhir_base().as_str();
    // Lapsed Medicaid, nothing active.
    let (_, html) = app.open(base, "pas-p07").await;
    assert!(html.contains("No active coverage today."));
    assert!(html.contains("Medicaid lapsed on"));
    // Marketplace coverage ending within 30 days.
    let (_, html) = app.open(base, "pas-p04").await;
    assert!(
        html.contains("Coverage ends on") && html.contains("days left)."),
        "ending soon not flagged"
    );
    assert!(html.contains("ACA marketplace or employer plan: appeal within 180 days"));
    // French, Medicare A/B and Part D; a pharmacy denial quoted verbatim.
    let (_, html) = app.open(base, "pas-p02").await;
    assert!(html.contains("French"));
    assert!(html.contains("Medicare Parts A/B: appeal within 120 days"));
    assert!(html.contains("Medicare Part D: appeal within 65 days"));
    assert!(html.contains("apixaban 5 MG Oral Tablet"));
    assert!(html.contains("Drug not on formulary. Formulary alternative: warfarin."));
    // Uninsured.
    let (_, html) = app.open(base, "pas-p06").await;
    assert!(html.contains("No active coverage today."));
    // An appeal due in 3 days stands out; a far one does not.
    let (_, html) = app.open(base, "pas-p11").await;
    assert!(html.contains("Quantity limit exception for insulin glargine"));
    assert!(
        html.contains("in-progress · due in 3 days"),
        "the filing deadline shows"
    );
    // An open appeal Task.
    let (_, html) = app.open(base, "pas-p05").await;
    assert!(!html.contains("· due in"), "165 days away: no warning");
    assert!(html.contains("Step therapy exception for adalimumab (Northwind PPO)"));
    // Medicaid fee-for-service: no regime guessed; a task for the patient.
    let (_, html) = app.open(base, "pas-p13").await;
    assert!(html.contains("Appeal rules: see the plan's denial notice"));
    assert!(html.contains("Call RideWell to schedule rides to your appointments"));
    // Nothing to flag.
    let (_, html) = app.open(base, "pas-p12").await;
    assert!(!html.contains("class=\"alert\""));
}

#[tokio::test]
async fn patient_picker_lists_the_fixtures_and_health_check_answers() {
    let app = spawn_app().await;
    let (status, html) = app
        .get(&format!(
            "/launch/open?iss={}",
            common::enc(app.fhir_base().as_str())
        ))
        .await;
    assert_eq!(status, 200);
    assert!(html.contains("Choose a patient"));
    assert!(html.contains("Jean Dupont"));
    assert!(html.contains("patient=pas-p02"));
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn a_server_not_on_the_list_is_refused_before_any_request() {
    let app = spawn_app().await;
    let stranger = Proxy::start(app.fhir_base()).await;
    let (status, html) = app.open(stranger.base.as_str(), "pas-p01").await;
    assert_eq!(status, 403);
    assert!(html.contains("not on Passerelle's list"), "{html}");
    assert_eq!(
        stranger.count(),
        0,
        "nothing may be sent to a server that is not allowed"
    );
    // Not a URL at all, and no iss.
    let (status, _) = app.open("javascript:alert(1)", "pas-p01").await;
    assert_eq!(status, 403);
    let (status, html) = app.get("/launch/open?patient=pas-p01").await;
    assert_eq!(status, 400);
    assert!(html.contains("did not say which FHIR server"));
}

#[tokio::test]
async fn unknown_patient_and_invalid_ids_get_clear_pages() {
    let app = spawn_app().await;
    let (status, html) = app.open(app.fhir_base().as_str(), "no-such-patient").await;
    assert_eq!(status, 404);
    assert!(
        html.contains("Patient no-such-patient was not found on the FHIR server."),
        "{html}"
    );
    let (status, html) = app.open(app.fhir_base().as_str(), "../metadata").await;
    assert_eq!(status, 400);
    assert!(html.contains("not a valid FHIR id"));
}

#[tokio::test]
async fn an_unreachable_server_gets_a_clear_page() {
    let closed = passerelle_dev::hfs::free_port().unwrap();
    let dead: url::Url = format!("http://127.0.0.1:{closed}/fhir/").parse().unwrap();
    let app = spawn_app_with(AppOptions {
        extra_open_servers: vec![dead.clone()],
        ..Default::default()
    })
    .await;
    let (status, html) = app.open(dead.as_str(), "pas-p01").await;
    assert_eq!(status, 502);
    assert!(html.contains("could not be reached"), "{html}");
}

/// The app with a fault-injecting proxy (listed as open) in front of hfs.
async fn app_behind_proxy(limits: Limits) -> (common::TestApp, Proxy) {
    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    let (address, shutdown) = common::start_app(
        hfs.base(),
        AppOptions {
            extra_open_servers: vec![proxy.base.clone()],
            limits,
            ..AppOptions::default()
        },
    )
    .await;
    let app = common::TestApp::from_parts(address, hfs, shutdown);
    (app, proxy)
}

#[tokio::test]
async fn server_errors_rate_limits_and_timeouts_get_clear_pages() {
    let (app, proxy) = app_behind_proxy(Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    })
    .await;
    let iss = proxy.base.to_string();
    let outcome = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception","diagnostics":"database is locked"}]}"#;

    // 500 on the Patient read: the page cannot be built.
    proxy.fault("/Patient/", Fault::Status(500, outcome.into()));
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 502);
    assert!(
        html.contains("The FHIR server failed (500): database is locked"),
        "{html}"
    );
    proxy.clear();

    // 500 on one search only: the rest of the page still shows.
    proxy.fault("/Coverage?", Fault::Status(500, outcome.into()));
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Coverage could not be loaded. The FHIR server failed (500)"),
        "{html}"
    );
    assert!(html.contains("María José García") && html.contains("Referral to food pantry program"));
    proxy.clear();

    // 429, retried, then explained.
    proxy.fault("/Patient/", Fault::Status(429, String::new()));
    proxy.reset_count();
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 503);
    assert!(html.contains("asked us to slow down (429)"), "{html}");
    proxy.clear();

    // A server that never answers.
    proxy.fault("/Patient/", Fault::Hang);
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 504);
    assert!(html.contains("did not answer within 1 s"), "{html}");
    proxy.clear();
}

#[tokio::test]
async fn malformed_schema_invalid_and_oversize_answers_get_clear_pages() {
    let (app, proxy) = app_behind_proxy(Limits {
        timeout: Duration::from_secs(5),
        max_response_bytes: 1024 * 1024,
    })
    .await;
    let iss = proxy.base.to_string();

    proxy.fault(
        "/Patient/",
        Fault::Body("{\"resourceType\": \"Patient\", ".into()),
    );
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 502);
    assert!(
        html.contains("not valid FHIR R4 (malformed JSON at line 1"),
        "{html}"
    );
    proxy.clear();

    proxy.fault(
        "/Patient/",
        Fault::Body(
            r#"{"resourceType":"Patient","id":"pas-p01","birthDate":"last spring"}"#.into(),
        ),
    );
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 502);
    assert!(
        html.contains("Patient pas-p01 that is not valid FHIR R4 (invalid at `birthDate`)"),
        "{html}"
    );
    assert!(!html.contains("last spring"), "the bad value is not echoed");
    proxy.clear();

    proxy.fault(
        "/Patient/",
        Fault::Body(r#"{"resourceType":"Observation","id":"x","status":"final","code":{}}"#.into()),
    );
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 502);
    assert!(html.contains("resourceType does not match"), "{html}");
    proxy.clear();

    // One bad Task in the search: the others and the rest of the page show.
    proxy.fault(
        "/Task?",
        Fault::Rewrite(|mut bundle| {
            let extra = serde_json::json!({"resource": {"resourceType": "Task", "id": "broken", "status": "not-a-status", "intent": "order"}});
            bundle["entry"].as_array_mut().unwrap().push(extra);
            bundle
        }),
    );
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("1 Task could not be read and was left out."),
        "{html}"
    );
    assert!(html.contains("Referral to food pantry program"));
    proxy.clear();

    proxy.fault("/Patient/", Fault::Huge(2 * 1024 * 1024));
    let (status, html) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 502);
    assert!(html.contains("sent more than 1048576 bytes"), "{html}");
    proxy.clear();

    // After all that, the same page works again.
    let (status, _) = app.open(&iss, "pas-p01").await;
    assert_eq!(status, 200);
}
