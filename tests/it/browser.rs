//! What a person sees and clicks, in headless Chromium: the demo as the
//! README starts it, a patient picked from the list, the patient banner and a
//! coverage card; the search used by keyboard; Ctrl-C stops everything.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::browser::Browser;
use fantoccini::Locator;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Open `patient`'s chart on the development EHR and enter Passerelle's frame.
async fn open_chart(c: &fantoccini::Client, env: &common::smart::SmartEnv, patient: &str) {
    c.goto(
        env.launcher
            .ehr_url(patient, None, "pas-prac-moreau")
            .as_str(),
    )
    .await
    .unwrap();
    let frame = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("iframe#app"))
        .await
        .unwrap();
    frame.enter_frame().await.unwrap();
}

/// Press keys one after another, as a person on a keyboard would.
async fn press(c: &fantoccini::Client, keys: &[char]) {
    let mut actions = KeyActions::new("keyboard".into());
    for k in keys {
        actions = actions
            .then(KeyAction::Down { value: *k })
            .then(KeyAction::Up { value: *k });
    }
    c.perform_actions(actions).await.unwrap();
}

#[tokio::test]
async fn the_demo_opens_a_visit_page_with_banner_and_coverage_card_and_stops_on_ctrl_c() {
    let hfs = common::hfs_options();
    let port = passerelle_dev::hfs::free_port().unwrap();
    let mut demo = tokio::process::Command::new(common::dev_binary())
        .args(["demo", "--port", &port.to_string()])
        .env("PASSERELLE_HFS_BIN", &hfs.bin)
        .env("PASSERELLE_DEFINITIONS_DIR", &hfs.definitions_dir)
        .env("PASSERELLE_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the demo starts");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("Passerelle demo is ready: open ") {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("the demo ended without printing its URL");
    })
    .await
    .expect("the demo prints its URL");

    let browser = Browser::start().await;
    let c = &browser.client;
    // The development EHR lists the patients; a click opens a chart, which
    // launches Passerelle in its frame with a SMART EHR launch.
    c.goto(&url).await.unwrap();
    assert_eq!(
        c.find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "Development EHR"
    );
    c.find(Locator::LinkText("María José García"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let frame = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("iframe#app"))
        .await
        .unwrap();
    frame.enter_frame().await.unwrap();
    let name = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("main #patient-name"))
        .await
        .unwrap();
    assert_eq!(name.text().await.unwrap(), "María José García");
    let banner = c
        .find(Locator::Css(".banner"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        banner.contains("Spanish") && banner.contains("Interpreter needed"),
        "{banner}"
    );
    let card = c.find(Locator::Css("article.coverage")).await.unwrap();
    assert!(card.is_displayed().await.unwrap());
    let card_text = card.text().await.unwrap();
    assert!(
        card_text.contains("Sunrise Health Plan (Medicaid managed care)"),
        "{card_text}"
    );
    assert!(card_text.contains("SHP-448812"), "{card_text}");
    let user = c
        .find(Locator::Css(".user"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(user, "Signed in: Claire Moreau");

    // Keyboard: on a freshly loaded page, the skip link is the first thing
    // Tab reaches in the app.
    c.execute("location.reload()", vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.wait()
        .for_element(Locator::Css("main #patient-name"))
        .await
        .unwrap();
    // Keyboard focus goes to the app's frame, as when a person tabs into it.
    c.execute("window.focus()", vec![]).await.unwrap();
    press(c, &[Key::Tab.into()]).await;
    let focused = c.active_element().await.unwrap();
    assert_eq!(focused.text().await.unwrap(), "Skip to content");
    browser.close().await;

    // Ctrl-C stops the app, the launcher and the FHIR server.
    let pid = demo.id().expect("the demo runs") as i32;
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), demo.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err(),
        "the app is stopped"
    );
    assert!(reqwest::get(&url).await.is_err(), "the launcher is stopped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("passerelle-hfs-{pid}-")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "an hfs is still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[tokio::test]
async fn an_ehr_launch_inside_the_ehrs_iframe_reaches_the_visit_page_with_its_cookie() {
    let env = common::smart::smart_env(
        passerelle::auth::smart::ClientAuthMethod::PrivateKeyJwt,
        Duration::from_secs(3600),
    )
    .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    // The EHR page is served by the launcher: another origin than the app.
    open_chart(c, &env, "pas-p02").await;
    let name = match c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("patient-name"))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            let state = c
                .execute(
                    "return location.href + ' ' + document.body.innerText",
                    vec![],
                )
                .await;
            panic!("no visit page in the frame ({e}): {state:?}");
        }
    };
    assert_eq!(name.text().await.unwrap(), "Jean Dupont");
    let user = c
        .find(Locator::Css(".user"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(user, "Signed in: Claire Moreau");
    // The session cookie works inside the frame: reloading the visit page
    // (same launch, no new sign-in) still shows it.
    let href = |v: serde_json::Value| v.as_str().unwrap().to_string();
    let visit_url = href(c.execute("return location.href", vec![]).await.unwrap());
    assert!(
        visit_url.contains("/l/") && visit_url.ends_with("/visit"),
        "{visit_url}"
    );
    c.execute("location.reload()", vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let name = c
        .wait()
        .for_element(Locator::Id("patient-name"))
        .await
        .unwrap();
    assert_eq!(name.text().await.unwrap(), "Jean Dupont");
    assert_eq!(
        href(c.execute("return location.href", vec![]).await.unwrap()),
        visit_url
    );
    browser.close().await;
}

#[tokio::test]
async fn a_french_screening_entered_by_keyboard_records_its_positive_domain_on_the_visit_page() {
    let env = common::smart::smart_env(
        passerelle::auth::smart::ClientAuthMethod::None,
        Duration::from_secs(3600),
    )
    .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    // Chloé Martin prefers French and was never screened for food; her chart
    // opens Passerelle in the EHR's frame.
    open_chart(c, &env, "pas-p09").await;
    c.wait()
        .for_element(Locator::Id("start-screening"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::LinkText(
            "Signe vital de la faim (Hunger Vital Sign)",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let first = c
        .wait()
        .for_element(Locator::Css("input[name='88122-7']"))
        .await
        .unwrap();
    let legend = c
        .find(Locator::Css("#q-88122-7 legend"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        legend.contains("12 derniers mois"),
        "the question is in French: {legend}"
    );
    // Keyboard only from the first answer: Space picks "Often true"; Tab to
    // the next question, Down picks its second answer ("Sometimes true");
    // Tab to the button, Enter records.
    c.execute(
        "arguments[0].focus()",
        vec![serde_json::to_value(&first).unwrap()],
    )
    .await
    .unwrap();
    press(
        c,
        &[
            ' ',
            Key::Tab.into(),
            Key::Down.into(),
            Key::Tab.into(),
            Key::Enter.into(),
        ],
    )
    .await;
    let done = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("h-done"))
        .await
        .unwrap();
    assert_eq!(done.text().await.unwrap(), "Screening recorded");
    let positive = c
        .find(Locator::Css(".positive-domains"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(positive, "Food insecurity");
    c.find(Locator::Id("back-to-visit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let table = c
        .wait()
        .for_element(Locator::Css("table.screening"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        table.lines().any(|l| l.starts_with("Food insecurity")
            && l.contains("Positive")
            && l.contains(&today)),
        "{table}"
    );
    browser.close().await;
}

#[tokio::test]
async fn conditional_safety_questions_appear_only_when_the_patient_agrees() {
    let env = common::smart::smart_env(
        passerelle::auth::smart::ClientAuthMethod::None,
        Duration::from_secs(3600),
    )
    .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    open_chart(c, &env, "pas-p12").await;
    c.wait()
        .for_element(Locator::Id("start-screening"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let safety = c
        .wait()
        .for_element(Locator::Id("q-95618-5"))
        .await
        .unwrap();
    assert!(
        !safety.is_displayed().await.unwrap(),
        "hidden until the patient agrees"
    );
    c.find(Locator::Css(
        "input[name='safety-questions-agreed'][value='true']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    assert!(
        safety.is_displayed().await.unwrap(),
        "shown once the patient agrees"
    );
    c.find(Locator::Css(
        "input[name='safety-questions-agreed'][value='false']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    assert!(!safety.is_displayed().await.unwrap());
    browser.close().await;
}

/// Click what `locator` finds (waiting for it), counting the click.
async fn click(c: &fantoccini::Client, locator: Locator<'_>, clicks: &mut u32) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(locator)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    *clicks += 1;
}

async fn text_of(c: &fantoccini::Client, locator: Locator<'_>) -> String {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(locator)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn from_the_visit_page_a_food_referral_and_an_appeal_with_its_letter_in_few_clicks() {
    let env = common::smart::smart_env(
        passerelle::auth::smart::ClientAuthMethod::None,
        Duration::from_secs(3600),
    )
    .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    // James Wilson: food insecurity positive, a CPAP device denied by Medicare.
    open_chart(c, &env, "pas-p08").await;

    // Refer the positive food domain to a pantry.
    let mut referral_clicks = 0;
    click(
        c,
        Locator::Id("refer-food-insecurity"),
        &mut referral_clicks,
    )
    .await;
    // The patient agrees to share: the box is ticked, then Refer.
    click(
        c,
        Locator::XPath(
            "//li[contains(@class,'service')][.//h2[contains(., 'Pantry')]]//input[@name='consent']",
        ),
        &mut referral_clicks,
    )
    .await;
    click(
        c,
        Locator::XPath(
            "//li[contains(@class,'service')][.//h2[contains(., 'Pantry')]]//button[@value='refer']",
        ),
        &mut referral_clicks,
    )
    .await;
    let flash = text_of(c, Locator::Id("flash")).await;
    assert!(
        flash.starts_with("Referral to ") && flash.contains("Pantry") && flash.ends_with("sent."),
        "{flash}"
    );
    let referrals = text_of(c, Locator::Css("ul.referrals")).await;
    assert!(referrals.contains("Pantry"), "{referrals}");
    // The ticked box recorded the patient's Consent, cited by the request.
    let srs = env
        .fhir_json("ServiceRequest?subject=Patient/pas-p08&status=active&_count=50")
        .await;
    let pantry = srs["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|sr| {
            sr["performer"][0]["display"]
                .as_str()
                .is_some_and(|d| d.contains("Pantry"))
                && sr["performer"][0]["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("HealthcareService/"))
        })
        .expect("the pantry referral, its performer a HealthcareService");
    let consent = env
        .fhir_json(pantry["supportingInfo"][0]["reference"].as_str().unwrap())
        .await;
    assert_eq!(consent["resourceType"], "Consent");

    // Appeal the denial, then draft and store the appeal letter.
    let mut appeal_clicks = 0;
    click(c, Locator::Id("appeal-pas-cr-08"), &mut appeal_clicks).await;
    let kind = text_of(c, Locator::Css("select[name=kind] option:checked")).await;
    assert_eq!(kind, "Internal appeal");
    click(c, Locator::Id("start-appeal"), &mut appeal_clicks).await;
    let flash = text_of(c, Locator::Id("flash")).await;
    assert!(
        flash.starts_with("Internal appeal started; file by "),
        "{flash}"
    );
    let mut letter_clicks = 0;
    click(c, Locator::Css("ul.appeals a"), &mut letter_clicks).await;
    click(c, Locator::Id("draft-appeal-letter"), &mut letter_clicks).await;
    let draft = c
        .wait()
        .for_element(Locator::Id("letter-text"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(draft.contains("G47.33"), "{draft}");
    assert!(draft.contains("face-to-face evaluation"), "{draft}");
    click(c, Locator::Id("store-letter"), &mut letter_clicks).await;
    let letters = text_of(c, Locator::Css("ul.letters")).await;
    assert!(letters.contains("Appeal"), "{letters}");

    println!(
        "CLICKS referral={referral_clicks} appeal={appeal_clicks} letter={letter_clicks} keystroke_groups=0 (from the visit page, patient pas-p08)"
    );
    assert!(
        referral_clicks <= 8,
        "the referral target is 8 clicks at most"
    );
    browser.close().await;
}

/// The text of what `css` selects now, read in one step in the page (the
/// queue swaps its table in when it changes, so a found element can go).
async fn text_now(c: &fantoccini::Client, css: &str) -> String {
    c.execute(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : '';",
        vec![serde_json::json!(css)],
    )
    .await
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// A coordinator's standalone sign-in in Chromium: the EHR's picker, signed
/// in as `practitioner` with no patient, then the queue.
async fn sign_in_to_queue(
    c: &fantoccini::Client,
    env: &common::smart::SmartEnv,
    practitioner: &str,
) {
    c.goto(&format!(
        "{}/standalone/start?queue=1&iss={}",
        env.app,
        common::enc(env.launcher.fhir_base().as_str())
    ))
    .await
    .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("select#practitioner"))
        .await
        .unwrap()
        .select_by_value(practitioner)
        .await
        .unwrap();
    c.find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#queue-table tbody tr"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_coordinator_claims_and_starts_a_task_and_a_second_browser_sees_it_without_reloading() {
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        method: passerelle::auth::smart::ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(900),
        ..Default::default()
    })
    .await;
    let (first, second) = (Browser::start().await, Browser::start().await);
    let (a, b) = (&first.client, &second.client);
    sign_in_to_queue(a, &env, "pas-prac-lee").await;
    sign_in_to_queue(b, &env, "pas-prac-ortiz").await;
    // Aisha Thompson's utility referral, accepted by the service.
    let row = "#task-pas-task-04";
    let status_in = |c: &fantoccini::Client| {
        let c = c.clone();
        async move { text_now(&c, &format!("{row} td.status")).await }
    };
    assert_eq!(status_in(b).await, "accepted");
    let mut clicks = 0;
    click(a, Locator::Css(&format!("{row} button.claim")), &mut clicks).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while text_now(a, &format!("{row} td.owner")).await != "Jordan Lee" {
        assert!(std::time::Instant::now() < deadline, "the claim shows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(a, Locator::Css(&format!("{row} td a")), &mut clicks).await;
    click(
        a,
        Locator::Css("button[value='performer:in-progress']"),
        &mut clicks,
    )
    .await;
    let clicked = std::time::Instant::now();
    // The second coordinator's page changes by itself.
    let seen = loop {
        if status_in(b).await == "in-progress" {
            break clicked.elapsed();
        }
        assert!(
            clicked.elapsed() < Duration::from_secs(2),
            "the second browser did not see the change within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(text_now(b, &format!("{row} td.owner")).await, "Jordan Lee");
    assert_eq!(text_now(a, "#task-status").await, "in-progress");
    println!(
        "QUEUE clicks={clicks} second_browser_saw_change_ms={}",
        seen.as_millis()
    );
    first.close().await;
    second.close().await;
}

#[tokio::test]
async fn the_patterns_page_shows_a_chart_with_its_table_and_the_export_downloads() {
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        method: passerelle::auth::smart::ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(900),
        population: 300,
        ..Default::default()
    })
    .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    sign_in_to_queue(c, &env, "pas-prac-lee").await;
    let mut clicks = 0;
    click(c, Locator::Id("patterns"), &mut clicks).await;
    click(c, Locator::Id("compute"), &mut clicks).await;
    // The page refreshes itself while computing, then shows the charts.
    let chart = c
        .wait()
        .at_most(Duration::from_secs(120))
        .for_element(Locator::Css("section#denials-by-payer svg rect.bar"))
        .await
        .unwrap();
    assert!(chart.attr("width").await.unwrap().is_some());
    let table = text_now(c, "section#denials-by-payer table.chart-table").await;
    assert!(table.contains("Sunrise Health Plan"), "{table}");
    // Small cells are withheld in the table as in the chart.
    assert!(table.contains("< 11") && table.contains("Total"), "{table}");
    click(c, Locator::Id("export-csv"), &mut clicks).await;
    let file = browser.downloads().join("passerelle-patterns.csv");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !file.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the CSV did not download"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.starts_with("kind,measure,title"), "{csv}");
    assert!(csv.contains("denials-by-payer"));
    browser.close().await;
}
