//! Acting on barriers against a real FHIR server (hfs enforcing SMART
//! scopes, through the development EHR launcher): a referral and an appeal
//! created from the visit page, read back and taken through their
//! lifecycle; a stale update refused with the user's change kept; letters
//! drafted from the chart, stored and printable; nothing recorded twice.

use crate::common;

use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::smart::{Browser, Page, at, change, entries, follow, hidden_field, smart_env};
use passerelle::auth::smart::ClientAuthMethod;
use passerelle::fhir::appeal::APPEAL_ID_SYSTEM;
use passerelle::fhir::referral::REFERRAL_ID_SYSTEM;
use passerelle::fhir::{FhirClient, FhirError, Limits};

const HOUR: Duration = Duration::from_secs(3600);

async fn ehr_launch(env: &common::smart::SmartEnv, browser: &Browser, patient: &str) -> Page {
    let visit = common::smart::ehr_launch(env, browser, patient).await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    visit
}

#[tokio::test]
async fn a_referral_is_recorded_once_with_consent_and_taken_through_its_lifecycle() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    // James Wilson screened positive for food insecurity.
    let visit = ehr_launch(&env, &browser, "pas-p08").await;
    let refer = follow(&env, &browser, &visit, "refer-food-insecurity").await;
    assert_eq!(refer.status, 200, "{}", refer.body);
    let html = common::unescape(&refer.body);
    assert!(html.contains("Services for food insecurity"), "{html}");
    assert!(html.contains("Eastside Community Food Pantry"));
    let mut form = common::smart::referral_form(&html, "food-insecurity");
    // The user says the patient agreed: a Consent is recorded.
    form.push(("consent", "yes".to_string()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post_form(&at(&visit, "/refer"), &form).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.url.as_str().contains("/visit?done="));
    let page = common::unescape(&done.body);
    assert!(page.contains("class=\"flash sent\""), "{page}");
    assert!(page.contains("Referral to "));
    // Posted again (a double click, a reload): nothing new.
    let again = browser.post_form(&at(&visit, "/refer"), &form).await;
    assert_eq!(again.status, 200);

    let id = format!("{}-referral", form[1].1);
    let srs = env
        .fhir_json(&format!(
            "ServiceRequest?identifier={REFERRAL_ID_SYSTEM}|{id}/service-request"
        ))
        .await;
    let srs = entries(&srs);
    assert_eq!(srs.len(), 1, "recorded once");
    let sr = &srs[0];
    assert_eq!(sr["category"][1]["coding"][0]["code"], "food-insecurity");
    assert_eq!(sr["code"]["coding"][0]["code"], "467771000124109");
    // The signed-in practitioner is represented by their PractitionerRole
    // (SDOHCC requester: PractitionerRole or Organization).
    assert_eq!(
        sr["requester"]["reference"],
        "PractitionerRole/pas-role-moreau"
    );
    // The performer resolves to the service's HealthcareService on the
    // server, provided by the Organization that owns the Task.
    let performer = sr["performer"][0]["reference"].as_str().unwrap();
    assert!(performer.starts_with("HealthcareService/"), "{sr}");
    let hcs = env.fhir_json(performer).await;
    assert_eq!(hcs["identifier"][0]["value"], form[3].1, "the HSDS id");
    assert!(
        hcs["location"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Location/")
    );
    assert!(
        sr["reasonReference"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Condition/"),
        "{sr}"
    );
    let consent_ref = sr["supportingInfo"][0]["reference"].as_str().unwrap();
    let consent = env.fhir_json(consent_ref).await;
    assert_eq!(consent["resourceType"], "Consent");
    assert_eq!(consent["provision"]["type"], "permit");
    assert_eq!(
        consent["organization"][0]["reference"], "Organization/pas-org-practice",
        "the practitioner role's organization holds the consent"
    );
    assert!(consent["sourceAttachment"]["data"].is_string());
    let tasks = entries(
        &env.fhir_json(&format!("Task?identifier={REFERRAL_ID_SYSTEM}|{id}/task"))
            .await,
    );
    assert_eq!(tasks.len(), 1);
    let task_id = tasks[0]["id"].as_str().unwrap().to_string();
    assert_eq!(tasks[0]["status"], "requested");
    assert_eq!(
        tasks[0]["owner"]["reference"],
        hcs["providedBy"]["reference"]
    );
    assert_eq!(
        tasks[0]["requester"]["reference"],
        "PractitionerRole/pas-role-moreau"
    );
    assert_eq!(
        tasks[0]["focus"]["reference"],
        format!("ServiceRequest/{}", sr["id"].as_str().unwrap())
    );
    assert!(
        page.contains(&format!("/task/{task_id}\"")),
        "the visit page links the referral to its task"
    );

    // The lifecycle, as the service reports it.
    let task_url = at(&visit, &format!("/task/{task_id}"));
    let mut shown = browser.get(&task_url).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let org = env
        .fhir_json(tasks[0]["owner"]["reference"].as_str().unwrap())
        .await;
    assert!(
        common::unescape(&shown.body).contains(&format!(
            "id=\"on-behalf\">On {}'s behalf",
            org["name"].as_str().unwrap()
        )),
        "the service's moves are labelled as recorded on its behalf: {}",
        shown.body
    );
    let refused = change(&browser, &task_url, &shown, "requester:accepted", "", "").await;
    assert_eq!(refused.status, 422);
    assert!(
        refused
            .body
            .contains("Only the performer may move a referral Task to accepted."),
        "{}",
        refused.body
    );
    let refused = change(&browser, &task_url, &shown, "performer:received", "", "").await;
    assert!(
        refused
            .body
            .contains("SDOHCC referral Tasks do not use the status received.")
    );
    for (to, reason, note) in [
        ("performer:accepted", "", "Pantry called the patient"),
        ("performer:in-progress", "", ""),
    ] {
        let next = change(&browser, &task_url, &shown, to, reason, note).await;
        assert_eq!(next.status, 200, "{}", next.body);
        shown = next;
    }
    let no_reason = change(&browser, &task_url, &shown, "performer:on-hold", "", "").await;
    assert_eq!(no_reason.status, 422);
    assert!(
        no_reason
            .body
            .contains("Moving a referral Task to on-hold needs a reason (statusReason).")
    );
    shown = change(
        &browser,
        &task_url,
        &shown,
        "performer:on-hold",
        "Waiting for proof of address",
        "",
    )
    .await;
    assert!(shown.body.contains("Waiting for proof of address"));
    shown = change(&browser, &task_url, &shown, "performer:in-progress", "", "").await;
    shown = change(&browser, &task_url, &shown, "performer:completed", "", "").await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains("id=\"task-status\">completed<"));
    assert!(
        !shown.body.contains("id=\"on-behalf\""),
        "nothing left to record on the service's behalf"
    );
    let t = env.fhir_json(&format!("Task/{task_id}")).await;
    assert_eq!(t["status"], "completed");
    // Each of the service's moves made at the practice says so, before the
    // user's own note.
    let notes = common::smart::note_texts(&t);
    assert_eq!(notes[1], "Pantry called the patient");
    assert!(
        notes[0].starts_with("Status set to accepted by the practice, on behalf of "),
        "{notes:?}"
    );
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.contains("by the practice, on behalf of"))
            .count(),
        5,
        "accepted, in-progress, on-hold, in-progress, completed"
    );
    assert!(t.get("statusReason").is_none());
    assert_eq!(t["meta"]["versionId"], "6", "one version per change");
}

/// Without the consent box ticked, a referral records no Consent and cites
/// none; a Task for the patient is created `ready` and follows SDOHCC Task
/// For Patient's state machine, not the referral's.
#[tokio::test]
async fn without_consent_no_consent_is_recorded_and_a_patient_task_follows_its_own_machine() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p08").await;
    let refer = follow(&env, &browser, &visit, "refer-food-insecurity").await;
    let html = common::unescape(&refer.body);
    assert!(html.contains("name=\"consent\" value=\"yes\""), "{html}");
    let id = hidden_field(&html, "referral_id");
    let post = |action: &'static str| {
        let (csrf, id, service) = (
            hidden_field(&html, "csrf"),
            id.clone(),
            hidden_field(&html, "service"),
        );
        let (browser, url) = (&browser, at(&visit, "/refer"));
        async move {
            browser
                .post_form(
                    &url,
                    &[
                        ("csrf", csrf.as_str()),
                        ("referral_id", id.as_str()),
                        ("domain", "food-insecurity"),
                        ("service", service.as_str()),
                        ("action", action),
                    ],
                )
                .await
        }
    };
    let done = post("refer").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let sr = &entries(
        &env.fhir_json(&format!(
            "ServiceRequest?identifier={REFERRAL_ID_SYSTEM}|{id}-referral/service-request"
        ))
        .await,
    )[0];
    assert!(sr.get("supportingInfo").is_none(), "{sr}");
    let consents = env
        .fhir_json(&format!(
            "Consent?identifier={REFERRAL_ID_SYSTEM}|{id}-referral/consent"
        ))
        .await;
    assert!(entries(&consents).is_empty(), "{consents}");

    // The patient will call: a Task for the patient, ready.
    let done = post("patient-task").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let t = &entries(
        &env.fhir_json(&format!(
            "Task?identifier={REFERRAL_ID_SYSTEM}|{id}-call/make-contact"
        ))
        .await,
    )[0];
    assert_eq!(t["status"], "ready");
    assert_eq!(
        t["requester"]["reference"],
        "PractitionerRole/pas-role-moreau"
    );
    let contact = t["input"][0]["valueReference"]["reference"]
        .as_str()
        .unwrap();
    assert_eq!(
        env.fhir_json(contact).await["resourceType"],
        "HealthcareService"
    );
    let task_url = at(&visit, &format!("/task/{}", t["id"].as_str().unwrap()));
    let shown = browser.get(&task_url).await;
    assert!(
        common::unescape(&shown.body).contains("On the patient's behalf"),
        "{}",
        shown.body
    );
    for (to, reason, status, words) in [
        (
            "requester:completed",
            "",
            422,
            "Only the patient may move a Task for the patient to completed.",
        ),
        (
            "performer:accepted",
            "",
            422,
            "SDOHCC Tasks for the patient do not use the status accepted.",
        ),
        (
            "performer:cancelled",
            "",
            422,
            "Cancelling a Task for the patient needs a reason (statusReason).",
        ),
    ] {
        let refused = change(&browser, &task_url, &shown, to, reason, "").await;
        assert_eq!(refused.status, status, "{to}: {}", refused.body);
        assert!(refused.body.contains(words), "{to}: {}", refused.body);
    }
    let started = change(&browser, &task_url, &shown, "performer:in-progress", "", "").await;
    assert_eq!(started.status, 200, "{}", started.body);
    // The page shown before is stale now: refused, nothing overwritten.
    let stale = change(&browser, &task_url, &shown, "performer:completed", "", "").await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    let done = change(&browser, &task_url, &started, "performer:completed", "", "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let after = env
        .fhir_json(&format!("Task/{}", t["id"].as_str().unwrap()))
        .await;
    assert_eq!(after["status"], "completed");
    assert_eq!(
        after["note"][0]["text"],
        "Status set to in-progress by the practice, on behalf of the patient."
    );
    let closed = change(&browser, &task_url, &done, "performer:in-progress", "", "").await;
    assert_eq!(closed.status, 422);
    assert!(
        closed
            .body
            .contains("A Task for the patient cannot go from completed to in-progress.")
    );
}

#[tokio::test]
async fn a_stale_task_update_is_refused_clearly_and_the_users_change_is_kept() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let (first, second) = (Browser::default(), Browser::default());
    // Samuel Okafor's referral to a food pantry, accepted by the pantry.
    let visit1 = ehr_launch(&env, &first, "pas-p10").await;
    let visit2 = ehr_launch(&env, &second, "pas-p10").await;
    let task_id = "pas-task-10";
    let before = env.fhir_json(&format!("Task/{task_id}")).await;
    assert_eq!(before["status"], "accepted", "{before}");
    let url1 = at(&visit1, &format!("/task/{task_id}"));
    let url2 = at(&visit2, &format!("/task/{task_id}"));
    let (seen1, seen2) = (first.get(&url1).await, second.get(&url2).await);
    assert_eq!(seen2.status, 200, "{}", seen2.body);
    let ok = change(&first, &url1, &seen1, "performer:in-progress", "", "").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let stale = change(
        &second,
        &url2,
        &seen2,
        "requester:cancelled",
        "Patient found another pantry",
        "Called on Monday",
    )
    .await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    let body = common::unescape(&stale.body);
    assert!(
        body.contains("Someone changed this task while you had it open (it is now in-progress)"),
        "{body}"
    );
    // Nothing is lost: the second user's words are on the page to apply again…
    assert!(body.contains("value=\"Patient found another pantry\""));
    assert!(body.contains(">Called on Monday</textarea>"));
    // …and the first user's change stands.
    let after = env.fhir_json(&format!("Task/{task_id}")).await;
    assert_eq!(after["status"], "in-progress");
    assert_eq!(
        after["note"].as_array().map(Vec::len),
        Some(1),
        "only the note that the practice recorded the service's move: {after}"
    );
    // Applied again on the current version, it goes through.
    let again = change(
        &second,
        &url2,
        &stale,
        "requester:cancelled",
        "Patient found another pantry",
        "Called on Monday",
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    let after = env.fhir_json(&format!("Task/{task_id}")).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(
        after["statusReason"]["text"],
        "Patient found another pantry"
    );
}

/// Normalise whitespace, as text extracted from a PDF wraps lines.
fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn an_appeal_of_a_fixture_denial_gets_its_deadline_lifecycle_and_a_letter() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    // Jean Dupont: Part D denied apixaban (not on formulary).
    let visit = ehr_launch(&env, &browser, "pas-p02").await;
    let form = follow(&env, &browser, &visit, "appeal-pas-cr-02").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let html = common::unescape(&form.body);
    assert!(
        html.contains("<option value=\"formulary-exception\" selected>"),
        "the denial's words suggest the kind"
    );
    let cr = env.fhir_json("ClaimResponse/pas-cr-02").await;
    let disposition = cr["disposition"].as_str().unwrap().to_string();
    assert!(html.contains(&disposition), "the payer's words, verbatim");
    let appeal_id = hidden_field(&html, "appeal_id");
    let coverage = "pas-cov-02b";
    let done = browser
        .post_form(
            &at(&visit, "/appeal"),
            &[
                ("csrf", &hidden_field(&html, "csrf")),
                ("appeal_id", &appeal_id),
                ("denial", "pas-cr-02"),
                ("kind", "formulary-exception"),
                ("expedited", "1"),
                ("coverage", coverage),
                ("notice", &hidden_value(&html, "notice")),
                ("deadline", ""),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body
            .contains("Formulary exception request started; file by"),
        "{}",
        done.body
    );
    let tasks = entries(
        &env.fhir_json(&format!(
            "Task?identifier={APPEAL_ID_SYSTEM}|{appeal_id}/task"
        ))
        .await,
    );
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    let notice = time::Date::parse(
        &cr["created"].as_str().unwrap()[..10],
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap();
    assert_eq!(
        t["restriction"]["period"]["end"],
        (notice + time::Duration::days(65)).to_string(),
        "Part D: 65 days from the notice"
    );
    assert_eq!(t["priority"], "stat");
    assert_eq!(t["code"]["coding"][0]["code"], "formulary-exception");
    assert_eq!(t["focus"]["reference"], "ClaimResponse/pas-cr-02");
    assert_eq!(
        t["insurance"][0]["reference"],
        format!("Coverage/{coverage}")
    );
    let task_id = t["id"].as_str().unwrap().to_string();

    // The appeal letter, drafted from the chart.
    let task_url = at(&visit, &format!("/task/{task_id}"));
    let task_page = browser.get(&task_url).await;
    let draft = follow(&env, &browser, &task_page, "draft-appeal-letter").await;
    assert_eq!(draft.status, 200, "{}", draft.body);
    let letter_html = common::unescape(&draft.body);
    let text = letter_html
        .split("id=\"letter-text\">")
        .nth(1)
        .unwrap()
        .split("</textarea>")
        .next()
        .unwrap()
        .to_string();
    for expected in ["KRX-20931", "I48.91", disposition.as_str(), "warfarin"] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    let stored = browser
        .post_form(
            &at(&visit, "/letter"),
            &[
                ("csrf", &hidden_field(&letter_html, "csrf")),
                ("letter_id", &hidden_field(&letter_html, "letter_id")),
                ("kind", "appeal"),
                ("task", &task_id),
                ("lang", "en"),
                ("title", &hidden_value(&letter_html, "title")),
                ("text", &text),
                ("with_gaps", "1"),
            ],
        )
        .await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert!(stored.url.as_str().ends_with(&format!("/task/{task_id}")));
    let pdf_link = common::unescape(&stored.body)
        .split("/letter/")
        .nth(1)
        .expect("the task lists its letter")
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let pdf = reqwest_bytes(&browser, &at(&visit, &format!("/letter/{pdf_link}"))).await;
    assert!(pdf.starts_with(b"%PDF-"));
    let extracted = words(&pdftotext(&pdf));
    for expected in ["KRX-20931", "I48.91", words(&disposition).as_str()] {
        assert!(
            extracted.contains(expected),
            "{expected} in the PDF:\n{extracted}"
        );
    }

    // The lifecycle, ending with the payer's decision.
    let mut shown = browser.get(&task_url).await;
    for to in ["performer:accepted", "performer:in-progress"] {
        shown = change(&browser, &task_url, &shown, to, "", "").await;
        assert_eq!(shown.status, 200, "{}", shown.body);
    }
    let closed = browser
        .post_form(
            &task_url,
            &[
                ("csrf", &hidden_field(&shown.body, "csrf")),
                ("version", &hidden_field(&shown.body, "version")),
                ("to", "performer:completed"),
                ("outcome", "overturned"),
            ],
        )
        .await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    let t = env.fhir_json(&format!("Task/{task_id}")).await;
    assert_eq!(t["status"], "completed");
    assert_eq!(
        t["output"][0]["valueCodeableConcept"]["coding"][0]["code"],
        "overturned"
    );
}

#[tokio::test]
async fn a_denial_entered_by_hand_is_checked_field_by_field_then_appealed() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    // Thomas Lee: commercial PPO, no denial on file.
    let visit = ehr_launch(&env, &browser, "pas-p12").await;
    let form = follow(&env, &browser, &visit, "hand-denial").await;
    let html = common::unescape(&form.body);
    let csrf = hidden_field(&html, "csrf");
    let appeal_id = hidden_field(&html, "appeal_id");
    let text = "Not medically necessary:  the records do not show\nfailure of conservative care.";
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("appeal_id", appeal_id.as_str()),
        ("denial", ""),
        ("kind", "internal-appeal"),
        ("coverage", "pas-cov-12"),
        ("payer", "Cascade Marketplace Health"),
        ("notice", "2999-01-01"),
        ("service", "MRI lumbar spine without contrast"),
        ("service_system", "cpt"),
        ("service_code", "72148"),
        ("reason_system", "rarc"),
        ("reason_code", "50"),
        ("text", text),
    ];
    let bad = browser.post_form(&at(&visit, "/appeal"), &fields).await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let bad_html = common::unescape(&bad.body);
    assert!(
        bad_html.contains("Notice date: it is in the future."),
        "{bad_html}"
    );
    assert!(bad_html.contains("Reason code: \"50\" is not a RARC"));
    assert!(
        bad_html.contains(&format!(">{text}</textarea>")),
        "what was typed is kept"
    );
    let today = time::OffsetDateTime::now_utc().date() - time::Duration::days(3);
    let notice = today.to_string();
    fields[6] = ("notice", notice.as_str());
    fields[10] = ("reason_system", "carc");
    let ok = browser.post_form(&at(&visit, "/appeal"), &fields).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let t = entries(
        &env.fhir_json(&format!(
            "Task?identifier={APPEAL_ID_SYSTEM}|{appeal_id}/task"
        ))
        .await,
    );
    assert_eq!(t.len(), 1, "{}", ok.body);
    let input = |code: &str| {
        t[0]["input"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"]["coding"][0]["code"] == code)
            .cloned()
            .unwrap_or_else(|| panic!("no input {code}"))
    };
    assert_eq!(input("denial-text")["valueString"], text, "verbatim");
    assert_eq!(
        input("denial-reason")["valueCodeableConcept"]["coding"][0]["system"],
        "https://x12.org/codes/claim-adjustment-reason-codes"
    );
    assert_eq!(t[0]["priority"], "routine");
    assert_eq!(
        t[0]["restriction"]["period"]["end"],
        (today + time::Duration::days(180)).to_string(),
        "commercial plan: 180 days"
    );
    assert!(t[0].get("focus").is_none(), "no ClaimResponse to point at");
}

#[tokio::test]
async fn a_referral_or_appeal_sent_again_after_a_timeout_is_recorded_once() {
    use passerelle::domain::appeal::{AppealKind, plan};
    use passerelle::domain::directory::Directory;
    use passerelle::domain::sdoh::Domain;
    use passerelle::fhir::appeal::{AppealRecord, DenialInputs};
    use passerelle::fhir::referral::ReferralRecord;

    let hfs = common::seeded_hfs().await;
    let proxy = Proxy::start(hfs.base()).await;
    let short = FhirClient::new(
        FhirClient::http_client(),
        proxy.base.clone(),
        Limits {
            timeout: Duration::from_secs(2),
            ..Limits::default()
        },
    );
    let direct = common::fhir_client(hfs.base());
    let directory = Directory::shipped();
    let service = &directory.services[0];
    let referral = passerelle::fhir::referral::transaction(&ReferralRecord {
        id: "ref-timeout",
        patient: "Patient/pas-p06",
        encounter: None,
        requester: "Organization/pas-org-practice",
        domain: Domain::FoodInsecurity,
        service,
        reasons: &[],
        screenings: &[],
        concerns: &[],
        authored: "2026-11-22T10:00:00Z",
        priority: "routine",
        code: passerelle::fhir::referral::default_code(Domain::FoodInsecurity),
        consent: Some(passerelle::fhir::referral::Consented {
            organization: "Organization/pas-org-practice",
        }),
    });
    let p = plan(
        AppealKind::InternalAppeal,
        false,
        time::macros::date!(2026 - 11 - 01),
        None,
        Some(time::macros::date!(2026 - 12 - 31)),
        time::OffsetDateTime::now_utc(),
    );
    let appeal = passerelle::fhir::appeal::transaction(&AppealRecord {
        id: "app-timeout",
        patient: "Patient/pas-p06",
        encounter: None,
        requester: None,
        coverage: None,
        focus: None,
        plan: &p,
        denial: DenialInputs {
            text: Some("Denied."),
            ..Default::default()
        },
        authored: "2026-11-22T10:00:00Z",
    });
    for (n, bundle) in [&referral, &appeal].into_iter().enumerate() {
        proxy.fault("/", Fault::ForwardThenHang);
        let err = short.transaction(bundle).await.unwrap_err();
        assert!(matches!(err, FhirError::Timeout { .. }), "{err:?}");
        proxy.clear();
        // The server finished with it, its answer lost; then it is sent again.
        proxy
            .wait_answered(2 * n + 1, Duration::from_secs(60))
            .await;
        short.transaction(bundle).await.unwrap();
    }
    let count = |t: &'static str, system: &'static str, value: &'static str| {
        let direct = direct.clone();
        async move {
            direct
                .search(t, &[("identifier", format!("{system}|{value}"))])
                .await
                .unwrap()
                .raw(t)
                .count()
        }
    };
    assert_eq!(
        count(
            "ServiceRequest",
            REFERRAL_ID_SYSTEM,
            "ref-timeout/service-request"
        )
        .await,
        1
    );
    assert_eq!(
        count("Task", REFERRAL_ID_SYSTEM, "ref-timeout/task").await,
        1
    );
    assert_eq!(
        count("Consent", REFERRAL_ID_SYSTEM, "ref-timeout/consent").await,
        1
    );
    assert_eq!(count("Task", APPEAL_ID_SYSTEM, "app-timeout/task").await, 1);
}

/// The value attribute of the input `name` (any type).
fn hidden_value(html: &str, name: &str) -> String {
    html.split(&format!("name=\"{name}\""))
        .nth(1)
        .and_then(|rest| rest.split("value=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .unwrap_or_default()
        .to_string()
}

async fn reqwest_bytes(browser: &Browser, url: &str) -> Vec<u8> {
    let page = browser.get(url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["content-type"], "application/pdf");
    page.bytes.clone()
}

/// Text of a PDF, by poppler's pdftotext (installed by ./scripts/setup.sh).
fn pdftotext(pdf: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("pdftotext")
        .args(["-", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pdftotext (poppler-utils) is installed by ./scripts/setup.sh");
    child.stdin.take().unwrap().write_all(pdf).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pdftotext could not read the PDF");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_medicine_cost_barrier_finds_the_programs_for_the_drug_and_a_patient_task_in_french() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    // Jean Dupont: medical-cost burden, on apixaban, French-speaking.
    let visit = ehr_launch(&env, &browser, "pas-p02").await;
    let help = follow(&env, &browser, &visit, "refer-medical-cost-burden").await;
    assert_eq!(help.status, 200, "{}", help.body);
    let html = common::unescape(&help.body);
    assert!(
        html.contains("Help paying for apixaban 5 MG Oral Tablet"),
        "{html}"
    );
    assert!(html.contains("Anticoagulant Patient Assistance"), "{html}");
    assert!(
        !html.contains("Insulin Patient Assistance"),
        "programs for other drugs are left out"
    );
    assert!(
        html.contains("id=\"formulary-exception\""),
        "a formulary exception is suggested"
    );

    // The patient prefers to call: a Task for the patient, in French.
    let id = hidden_field(&html, "referral_id");
    let done = browser
        .post_form(
            &at(&visit, "/refer"),
            &[
                ("csrf", &hidden_field(&html, "csrf")),
                ("referral_id", &id),
                ("domain", "medical-cost-burden"),
                ("service", &hidden_field(&html, "service")),
                ("action", "patient-task"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let tasks = entries(
        &env.fhir_json(&format!(
            "Task?identifier={REFERRAL_ID_SYSTEM}|{id}-call/make-contact"
        ))
        .await,
    );
    assert_eq!(tasks.len(), 1);
    let t = &tasks[0];
    assert_eq!(t["code"]["coding"][0]["code"], "make-contact");
    assert_eq!(t["owner"]["reference"], "Patient/pas-p02");
    assert_eq!(t["language"], "fr");
    let description = t["description"].as_str().unwrap();
    assert!(description.starts_with("Contactez "), "{description}");
    let page = common::unescape(&done.body);
    let section = page.split("id=\"h-ptasks\"").nth(1).unwrap();
    assert!(
        section.contains(description),
        "the visit page lists it under Patient tasks"
    );

    // Material to read, from the same card: another write, its own Task,
    // focused on the service's information.
    let second = id.clone();
    let done = browser
        .post_form(
            &at(&visit, "/refer"),
            &[
                ("csrf", &hidden_field(&html, "csrf")),
                ("referral_id", &second),
                ("domain", "medical-cost-burden"),
                ("service", &hidden_field(&html, "service")),
                ("action", "patient-material"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let t = &entries(
        &env.fhir_json(&format!(
            "Task?identifier={REFERRAL_ID_SYSTEM}|{second}-read/review-material"
        ))
        .await,
    )[0];
    assert_eq!(t["code"]["coding"][0]["code"], "review-material");
    let material = env
        .fhir_json(t["focus"]["reference"].as_str().unwrap())
        .await;
    assert_eq!(material["resourceType"], "DocumentReference");
    assert_eq!(material["content"][0]["attachment"]["language"], "fr");
    // Both are there: the call and the material (a button pressed again
    // records nothing new, and says so).
    let again = browser
        .post_form(
            &at(&visit, "/refer"),
            &[
                ("csrf", &hidden_field(&html, "csrf")),
                ("referral_id", &id),
                ("domain", "medical-cost-burden"),
                ("service", &hidden_field(&html, "service")),
                ("action", "patient-task"),
            ],
        )
        .await;
    assert!(
        common::unescape(&again.body)
            .contains("This form had been sent already, nothing new was recorded."),
        "{}",
        again.body
    );
    let calls = entries(
        &env.fhir_json(&format!(
            "Task?identifier={REFERRAL_ID_SYSTEM}|{id}-call/make-contact"
        ))
        .await,
    );
    assert_eq!(calls.len(), 1);
}

#[tokio::test]
async fn a_launch_for_one_patient_cannot_reach_the_queue_or_link_a_letter_to_another_patients_task()
{
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p02").await;
    // The queue shows every patient's tasks: not from a patient's chart.
    let queue = browser.get(&at(&visit, "/queue")).await;
    assert_eq!(queue.status, 400, "{}", queue.body);
    // A letter form posted with another patient's Task (David Nguyen's appeal).
    let draft = browser.get(&at(&visit, "/letter?kind=lmn")).await;
    assert_eq!(draft.status, 200, "{}", draft.body);
    let html = common::unescape(&draft.body);
    let forged = browser
        .post_form(
            &at(&visit, "/letter"),
            &[
                ("csrf", &hidden_field(&html, "csrf")),
                ("letter_id", &hidden_field(&html, "letter_id")),
                ("kind", "lmn"),
                ("task", "pas-task-05-appeal"),
                ("lang", "en"),
                ("title", "Letter"),
                ("text", "To whom it may concern"),
            ],
        )
        .await;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("not about this launch's patient"));
    let letters = env
        .fhir_json("DocumentReference?related=Task/pas-task-05-appeal")
        .await;
    assert!(entries(&letters).is_empty(), "nothing was stored");
}
