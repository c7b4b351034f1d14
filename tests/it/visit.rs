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
    for expected in common::P01_VISIT_PAGE {
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
        ..Limits::default()
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

/// Records other systems wrote, in their own shapes, created here as plain
/// JSON (never through Passerelle's builders), for a patient Passerelle has
/// never screened: a US Core AHC HRSN panel with member Observations and no
/// interpretation (as US Core's Observation-AHC-HRSN-panel-example-96777-8),
/// an SDOHCC-style Hunger Vital Sign QuestionnaireResponse with `/` linkIds
/// (SDOHCC-QuestionnaireResponseHungerVitalSignExample), a bare Z59.41
/// Condition, a HITS total of 12 as valueQuantity from a CBO platform, a
/// declined transportation item and an entered-in-error utility positive.
#[tokio::test]
async fn screenings_recorded_elsewhere_show_are_not_asked_again_and_protect_the_patient() {
    use serde_json::{Value, json};
    let app = spawn_app().await;
    let client = common::fhir_client(app.fhir_base());
    let patient = client
        .create(
            &json!({ "resourceType": "Patient", "name": [{ "family": "Okafor", "given": ["Ada"] }], "birthDate": "1980-04-02" }),
            None,
        )
        .await
        .unwrap()
        .reference
        .unwrap();
    let patient_id = patient.trim_start_matches("Patient/").to_string();
    let day = (time::OffsetDateTime::now_utc().date() - time::Duration::days(20)).to_string();
    let loinc = |c: &str| json!({ "coding": [{ "system": "http://loinc.org", "code": c }] });
    let item = |question: &str, extra: Value| {
        let mut o = json!({
            "resourceType": "Observation", "status": "final",
            "category": [
                { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey" }] },
                { "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category", "code": "sdoh" }] }
            ],
            "code": loinc(question),
            "subject": { "reference": patient },
            "effectiveDateTime": day,
        });
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    let answer = |code: &str| json!({ "valueCodeableConcept": loinc(code) });
    let mut members = Vec::new();
    for (q, a) in [("71802-3", "LA31994-9"), ("96778-6", "LA9-3")] {
        let created = client.create(&item(q, answer(a)), None).await.unwrap();
        members.push(json!({ "reference": created.reference.unwrap() }));
    }
    let mut panel = item("96777-8", json!({ "hasMember": members }));
    panel["performer"] = json!([{ "display": "Riverside Health Plan" }]);
    client.create(&panel, None).await.unwrap();
    // A HITS total of 12 from a CBO platform, survey category only.
    let mut hits = item(
        "95614-4",
        json!({ "valueQuantity": { "value": 12 }, "performer": [{ "display": "Safe Harbor CBO" }] }),
    );
    hits["category"] = json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey" }] }]);
    client.create(&hits, None).await.unwrap();
    // Declined; and a positive entered in error.
    let declined = item(
        "93030-5",
        json!({ "dataAbsentReason": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "asked-declined" }] } }),
    );
    client.create(&declined, None).await.unwrap();
    let mut wrong = item("96779-4", answer("LA33-6"));
    wrong["status"] = json!("entered-in-error");
    client.create(&wrong, None).await.unwrap();
    client
        .create(
            &json!({
                "resourceType": "QuestionnaireResponse", "status": "completed",
                "questionnaire": "http://hl7.org/fhir/us/sdoh-clinicalcare/Questionnaire/SDOHCC-QuestionnaireHungerVitalSign",
                "subject": { "reference": patient }, "authored": format!("{day}T21:56:54Z"),
                "author": { "display": "Patient portal" },
                "item": [
                    { "linkId": "/88122-7", "answer": [{ "valueCoding": { "system": "http://loinc.org", "code": "LA28397-0" } }] },
                    { "linkId": "/88123-5", "answer": [{ "valueCoding": { "system": "http://loinc.org", "code": "LA28398-8" } }] }
                ]
            }),
            None,
        )
        .await
        .unwrap();
    client
        .create(
            &json!({
                "resourceType": "Condition",
                "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active" }] },
                "category": [{ "coding": [{ "system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category", "code": "health-concern" }] }],
                "code": { "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.41", "display": "Food insecurity" }] },
                "subject": { "reference": patient },
                "recordedDate": day,
                "recorder": { "display": "Dr. Lee" }
            }),
            None,
        )
        .await
        .unwrap();

    // The visit page: prior results with their source and date.
    let (status, html) = app.open(app.fhir_base().as_str(), &patient_id).await;
    assert_eq!(status, 200, "{html}");
    let row = |code: &str| {
        html.split(&format!("id=\"screening-{code}\""))
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .map(str::to_string)
    };
    let housing = row("housing-instability").expect("housing row");
    assert!(
        housing.contains("Positive")
            && housing.contains(&day)
            && housing.contains("Riverside Health Plan"),
        "{housing}"
    );
    assert!(
        row("inadequate-housing")
            .expect("quality row")
            .contains("Negative")
    );
    let food = row("food-insecurity").expect("food row");
    assert!(food.contains("Positive") && food.contains(&day), "{food}");
    let ipv = row("intimate-partner-violence").expect("IPV row");
    assert!(
        ipv.contains("Positive") && ipv.contains("Safe Harbor CBO"),
        "{ipv}"
    );
    assert!(
        row("transportation-insecurity")
            .expect("transportation row")
            .contains("Declined to answer")
    );
    assert!(
        row("utility-insecurity").is_none(),
        "entered in error: no result"
    );
    assert!(
        html.contains("Food insecurity") && html.contains("by Dr. Lee"),
        "the bare Z59.41 concern"
    );

    // Re-screening (what the screen page computes: the history, results
    // within the interval, the form's items of those domains): only stale or
    // missing domains are asked again.
    let since = time::OffsetDateTime::now_utc().date() - time::Duration::days(365);
    let recent: Vec<_> = passerelle::fhir::screening::history(&client, &patient_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.recent(since))
        .map(|s| s.domain)
        .collect();
    let items = &passerelle::domain::screening::Rules::shared().item_domains["ahc-hrsn-core"];
    let not_asked = |link: &str| recent.contains(&items[link]);
    for skipped in [
        "71802-3", "96778-6", "88122-7", "88123-5", "95614-4", "95618-5",
    ] {
        assert!(not_asked(skipped), "{skipped} asked again: {recent:?}");
    }
    for asked in ["93030-5", "96779-4", "76513-1"] {
        assert!(!not_asked(asked), "{asked} not asked: {recent:?}");
    }

    // The next referral may not contact the patient.
    let ctx = passerelle::fhir::referral::read_context(
        &client,
        &patient_id,
        &passerelle::domain::coverage::RegimeTable::shipped().payer_type_system,
        time::OffsetDateTime::now_utc().date(),
    )
    .await
    .unwrap();
    assert!(passerelle::fhir::referral::no_contact_required(
        &ctx.screenings,
        &ctx.concerns
    ));
    assert!(
        ctx.reasons.iter().any(
            |(d, r)| *d == passerelle::domain::sdoh::Domain::FoodInsecurity
                && r.starts_with("Condition/")
        ),
        "the bare Z59.41 Condition is the food referral's reason: {:?}",
        ctx.reasons
    );
}
