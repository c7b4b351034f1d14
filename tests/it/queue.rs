//! The coordinators' queue against a real FHIR server (hfs enforcing SMART
//! scopes, through the development EHR launcher), kept by a Backend
//! Services poller: 10,000 generated Tasks filtered, counted, sorted and
//! paged as the generator says; two coordinators on one Task get one clear
//! conflict and no lost update; a change made on the server reaches the
//! queue and its event stream; a completed referral closes the loop, and
//! an output that is not its patient's completed Procedure does not.

use crate::common;

use std::time::{Duration, Instant};

use common::smart::{Browser, EnvOptions, Page, SmartEnv, approve_standalone_as, smart_env_with};
use passerelle::auth::smart::ClientAuthMethod;
use serde_json::{Value, json};

/// Generated patients: 7,500 give 7,500 referral Tasks and 2,500 appeals.
const GENERATED: usize = 7_500;

async fn env(generate: usize, poll: u64) -> SmartEnv {
    smart_env_with(EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(poll),
        generate,
        ..Default::default()
    })
    .await
}

/// A coordinator's standalone launch (no patient): lands on the queue.
pub(crate) async fn coordinator(env: &SmartEnv, browser: &Browser, practitioner: &str) -> Page {
    let start = format!(
        "{}/standalone/start?queue=1&iss={}",
        env.app,
        common::enc(env.launcher.fhir_base().as_str())
    );
    let picker = browser.get(&start).await;
    let queue = approve_standalone_as(browser, &picker, practitioner, "").await;
    assert_eq!(queue.status, 200, "{}", queue.body);
    assert!(queue.url.path().ends_with("/queue"), "{}", queue.url);
    queue
}

/// The queue page at `query`, once the first sync has filled it.
pub(crate) async fn queue_at(browser: &Browser, queue: &Page, query: &str) -> Page {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let page = browser
            .get(&format!(
                "{}?{query}",
                queue.url.as_str().split('?').next().unwrap()
            ))
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.contains("synced with the EHR at") {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never synced: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn total(page: &Page) -> usize {
    page.body
        .split("id=\"queue-total\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

pub(crate) fn row_ids(page: &Page) -> Vec<String> {
    page.body
        .split("<tr id=\"task-")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

fn row_dues(page: &Page) -> Vec<String> {
    page.body
        .split("<tr id=\"task-")
        .skip(1)
        .map(|s| {
            s.split("<td class=\"date\">")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every Task the server holds that the queue shows (referral, appeal,
/// patient task), read with a system token: the oracle.
async fn all_tasks(env: &SmartEnv) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(format!("{}Task?_count=1000", env.launcher.fhir_base()));
    let token = env.launcher.system_token("system/*.rs");
    while let Some(url) = next {
        let page: Value = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(
            page["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e["resource"].clone()),
        );
        next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str().map(String::from));
    }
    out.retain(|t| passerelle::fhir::queue::kind_of(t).is_some());
    out
}

const OPEN: [&str; 4] = ["requested", "accepted", "in-progress", "on-hold"];

#[tokio::test]
async fn ten_thousand_tasks_are_filtered_sorted_and_paged_and_two_coordinators_do_not_lose_an_update()
 {
    let started = Instant::now();
    let env = env(GENERATED, 900).await;
    println!(
        "seeded {GENERATED} generated patients in {:?}",
        started.elapsed()
    );
    let (lee, ortiz) = (Browser::default(), Browser::default());
    let q = coordinator(&env, &lee, "pas-prac-lee").await;
    let synced = Instant::now();
    let first = queue_at(&lee, &q, "").await;
    println!("first sync of the queue in {:?}", synced.elapsed());

    let tasks = all_tasks(&env).await;
    assert!(tasks.len() >= 10_000, "{} tasks", tasks.len());
    let open = |t: &&Value| OPEN.contains(&t["status"].as_str().unwrap());
    assert_eq!(
        total(&first),
        tasks.iter().filter(open).count(),
        "every open task"
    );
    // The generator is the oracle for the generated part.
    let generated_open_appeals = passerelle::seed::generate::appeal_count(GENERATED);
    let appeals = queue_at(&lee, &q, "kind=appeal").await;
    let fixture_open_appeals = tasks
        .iter()
        .filter(open)
        .filter(|t| {
            t["id"].as_str().unwrap().starts_with("pas-task")
                && t["code"]["coding"][0]["system"] == passerelle::domain::visit::APPEAL_TASK_SYSTEM
        })
        .count();
    assert_eq!(
        total(&appeals),
        generated_open_appeals + fixture_open_appeals
    );
    let requested = queue_at(&lee, &q, "status=requested&kind=referral").await;
    let generated_requested = passerelle::seed::generate::referral_count(GENERATED, "requested");
    assert!(total(&requested) >= generated_requested);
    assert_eq!(
        total(&requested),
        tasks
            .iter()
            .filter(|t| t["status"] == "requested"
                && passerelle::fhir::queue::kind_of(t)
                    == Some(passerelle::domain::queue::Kind::Referral))
            .count()
    );
    // Domain comes from the referral's ServiceRequest: the generator cycles
    // four domains, food first.
    let food = queue_at(&lee, &q, "domain=food-insecurity").await;
    let generated_food = (0..GENERATED)
        .filter(|i| i % 4 == 0)
        .filter(|i| OPEN.contains(&passerelle::seed::generate::TASK_STATUSES[i % 7]))
        .count();
    let fixture_food = ["pas-task-01", "pas-task-10"]
        .iter()
        .filter(|id| tasks.iter().any(|t| t["id"] == **id && open(&t)))
        .count();
    assert_eq!(total(&food), generated_food + fixture_food);
    assert!(
        first.body.contains("Food insecurity ("),
        "counts per domain"
    );
    // Payer of appeals, from the ClaimResponse's insurer.
    let payer = queue_at(
        &lee,
        &q,
        "kind=appeal&payer=Sunrise+Health+Plan+%28Medicaid+managed+care%29",
    )
    .await;
    assert_eq!(
        total(&payer),
        (0..GENERATED).filter(|i| i % 3 == 0 && i % 5 == 0).count(),
        "generated appeals of Sunrise's denials (no fixture appeal is Sunrise's)"
    );
    // Deadline order holds within a page and across pages; 50 rows a page.
    let p1 = queue_at(&lee, &q, "sort=deadline").await;
    let p2 = queue_at(&lee, &q, "sort=deadline&page=2").await;
    let (d1, d2) = (row_dues(&p1), row_dues(&p2));
    assert_eq!(d1.len(), 50);
    assert!(d1.windows(2).all(|w| w[0] <= w[1]), "{d1:?}");
    assert!(d1.last().unwrap() <= d2.first().unwrap());
    assert!(
        p1.body
            .contains(&format!("page 1 of {}", total(&first).div_ceil(50)))
    );
    let overdue = queue_at(&lee, &q, "due=overdue").await;
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(row_dues(&overdue).iter().all(|d| *d < today));

    // Two coordinators on the same Task: one clear conflict, nothing lost.
    let q2 = coordinator(&env, &ortiz, "pas-prac-ortiz").await;
    let seen_by_lee = queue_at(&lee, &q, "kind=referral&owner=unassigned").await;
    let seen_by_ortiz = queue_at(&ortiz, &q2, "kind=referral&owner=unassigned").await;
    let target = row_ids(&seen_by_lee)[0].clone();
    assert_eq!(row_ids(&seen_by_ortiz)[0], target);
    let form_of = |page: &Page| {
        let row = page
            .body
            .split(&format!("<tr id=\"task-{target}\""))
            .nth(1)
            .unwrap()
            .to_string();
        (
            common::smart::hidden_field(&row, "csrf"),
            common::smart::hidden_field(&row, "version"),
        )
    };
    let claim = |page: &Page, note: &'static str| {
        let (csrf, version) = form_of(page);
        let action = format!("{}/{target}", page.url.as_str().split('?').next().unwrap());
        (
            action,
            vec![
                ("csrf".to_string(), csrf),
                ("version".to_string(), version),
                ("action".to_string(), "claim".to_string()),
                ("note".to_string(), note.to_string()),
                (
                    "back".to_string(),
                    "kind=referral&owner=unassigned".to_string(),
                ),
            ],
        )
    };
    let (action, form) = claim(&seen_by_lee, "Calling the pantry today");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mine = lee.post_form(&action, &form).await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    let (action, form) = claim(&seen_by_ortiz, "I will take it");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let late = ortiz.post_form(&action, &form).await;
    assert_eq!(late.status, 409, "{}", late.body);
    let body = common::unescape(&late.body);
    assert!(
        body.contains("while you were looking") && body.contains("assigned to Jordan Lee"),
        "{body}"
    );
    let task = env.fhir_json(&format!("Task/{target}")).await;
    // The referral stays the service's; the practice's follow-up is Lee's.
    assert!(
        task["owner"]["reference"]
            .as_str()
            .is_some_and(|o| o.starts_with("Organization/")),
        "{task}"
    );
    assert_eq!(
        task["extension"][0]["url"],
        passerelle::domain::queue::FOLLOW_UP_BY
    );
    assert_eq!(
        task["extension"][0]["valueReference"]["reference"],
        "Practitioner/pas-prac-lee"
    );
    assert_eq!(task["note"].as_array().unwrap().len(), 1);
    assert_eq!(task["note"][0]["text"], "Calling the pantry today");
    // Lee's queue shows it as theirs at once, without a sync.
    let mine = queue_at(&lee, &q, "owner=me").await;
    assert!(row_ids(&mine).contains(&target));
}

/// Read server-sent events from `url` until one names `task` (or time runs out).
pub(crate) async fn wait_for_event(
    browser_cookie: &str,
    url: &str,
    task: &str,
    within: Duration,
) -> bool {
    use futures::StreamExt;
    let response = reqwest::Client::new()
        .get(url)
        .header("cookie", browser_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    let found = tokio::time::timeout(within, async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains(&format!("event: task\ndata: {task}\n")) {
                return true;
            }
        }
        false
    })
    .await;
    found.unwrap_or(false)
}

#[tokio::test]
async fn a_change_on_the_server_reaches_the_queue_and_a_completed_referral_closes_the_loop() {
    // A request deadline shorter than the wait below: the event stream,
    // once started, outlives it.
    let env = smart_env_with(EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(1),
        server: passerelle::http::ServerLimits {
            request_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let browser = Browser::default();
    let q = coordinator(&env, &browser, "pas-prac-roy").await;
    let first = queue_at(&browser, &q, "").await;
    assert!(
        first.body.contains("Nurse ·"),
        "the role comes from PractitionerRole"
    );
    let cookie = browser.cookie_header(&env.app);
    let events = format!("{}/events", q.url.as_str().split('?').next().unwrap());

    // Someone else accepts Samuel Okafor's referral (pas-task-10) on the EHR,
    // as the pantry's system would, with a Procedure to close the loop.
    let token = env.launcher.system_token("system/*.cruds");
    let http = reqwest::Client::new();
    let procedure: Value = http
        .post(format!("{}Procedure", env.launcher.fhir_base()))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .json(&json!({ "resourceType": "Procedure", "status": "completed",
            "code": { "text": "Food pantry: groceries provided" },
            "subject": { "reference": "Patient/pas-p10" },
            "basedOn": [{ "reference": "ServiceRequest/pas-sr-10" }] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut task = env.fhir_json("Task/pas-task-10").await;
    task["status"] = json!("completed");
    task["executionPeriod"] = json!({ "end": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap() });
    task["output"] = json!([{ "type": { "text": "Service delivered" },
        "valueReference": { "reference": format!("Procedure/{}", procedure["id"].as_str().unwrap()) } }]);
    let listening = tokio::spawn({
        let (cookie, events) = (cookie.clone(), events.clone());
        async move { wait_for_event(&cookie, &events, "pas-task-10", Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let put = http
        .put(format!("{}Task/pas-task-10", env.launcher.fhir_base()))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .json(&task)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    assert!(
        listening.await.unwrap(),
        "the event stream announced the change"
    );
    let done = queue_at(&browser, &q, "status=completed").await;
    assert!(row_ids(&done).contains(&"pas-task-10".to_string()));
    // The loop closed: the ServiceRequest is completed and the concern noted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sr = env.fhir_json("ServiceRequest/pas-sr-10").await;
        if sr["status"] == "completed" {
            let reason = sr["reasonReference"][0]["reference"]
                .as_str()
                .unwrap()
                .to_string();
            let c = env.fhir_json(&reason).await;
            let note = c["note"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            // The ServiceRequest is completed first, then the concern noted.
            if note.is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            let authored = time::Date::parse(
                &sr["authoredOn"].as_str().unwrap()[..10],
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .unwrap();
            let days = (time::OffsetDateTime::now_utc().date() - authored).whole_days();
            assert!(
                note.contains(&format!("loop closed in {days} day(s)")),
                "{note} (referred {authored})"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the loop was not closed: {sr}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The digest lists what is due.
    let digest = browser
        .get(&format!(
            "{}/digest",
            q.url.as_str().split('?').next().unwrap()
        ))
        .await;
    assert_eq!(digest.status, 200, "{}", digest.body);
    // Every open task with a deadline lands in its group, the others in none.
    let group = |label: &str| {
        digest
            .body
            .split(&format!("<h2>{label} ("))
            .nth(1)
            .unwrap_or_else(|| panic!("no group {label}"))
            .split("<h2>")
            .next()
            .unwrap()
            .to_string()
    };
    let today = time::OffsetDateTime::now_utc().date();
    let mut placed = 0;
    for t in all_tasks(&env)
        .await
        .iter()
        .filter(|t| OPEN.contains(&t["status"].as_str().unwrap()))
    {
        let id = t["id"].as_str().unwrap();
        let link = format!("/task/{id}\"");
        let label = t["restriction"]["period"]["end"].as_str().and_then(|end| {
            let due = time::Date::parse(
                &end[..10],
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .unwrap();
            match (due - today).whole_days() {
                ..0 => Some("Overdue"),
                0 => Some("Due today"),
                1..=3 => Some("Due within 3 days"),
                4..=14 => Some("Due within 14 days"),
                _ => None,
            }
        });
        for g in [
            "Overdue",
            "Due today",
            "Due within 3 days",
            "Due within 14 days",
        ] {
            let expected = label == Some(g);
            assert_eq!(group(g).contains(&link), expected, "{id} in {g}");
            placed += usize::from(expected);
        }
    }
    assert!(
        placed >= 2,
        "the fixtures have tasks due soon or overdue ({placed})"
    );
}

#[tokio::test]
async fn a_subscription_notification_makes_the_queue_sync_at_once() {
    // Polling every 15 minutes: only a notification can bring the change now.
    let env = env(0, 900).await;
    let browser = Browser::default();
    let q = coordinator(&env, &browser, "pas-prac-lee").await;
    queue_at(&browser, &q, "").await;
    let token = env.launcher.system_token("system/*.cruds");
    let mut task = env.fhir_json("Task/pas-task-03").await;
    task["status"] = json!("cancelled");
    task["statusReason"] = json!({ "text": "Patient moved away" });
    let put = reqwest::Client::new()
        .put(format!("{}Task/pas-task-03", env.launcher.fhir_base()))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .json(&task)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let key = env.settings.smart.as_ref().unwrap().session_key;
    let iss = passerelle::http::normalise_base(&env.launcher.fhir_base()).to_string();
    let hook = |secret: String| {
        let url = format!("{}/hooks/fhir/{secret}", env.app);
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/fhir+json")
                .body(r#"{"resourceType":"Bundle","type":"history","entry":[]}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(hook("not-the-secret".into()).await, 404);
    // The secret as a channel header (`notify_secret_in: header`).
    let with_header = |authorization: Option<String>| {
        let mut request = reqwest::Client::new()
            .post(format!("{}/hooks/fhir", env.app))
            .header("content-type", "application/fhir+json")
            .body("{}");
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(with_header(None).await, 404);
    assert_eq!(with_header(Some("Bearer not-the-secret".into())).await, 404);
    assert_eq!(hook(passerelle::queue::hook_secret(&key, &iss)).await, 200);
    assert_eq!(
        with_header(Some(format!(
            "Bearer {}",
            passerelle::queue::hook_secret(&key, &iss)
        )))
        .await,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cancelled = queue_at(&browser, &q, "status=cancelled").await;
        if row_ids(&cancelled).contains(&"pas-task-03".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the notification did not bring the change"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Anyone who may write a Task can set its `output`: only a completed
/// Procedure of the Task's own patient closes the loop. The same referral
/// then closes with a real one, so the refusals are not vacuous.
#[tokio::test]
async fn an_output_that_is_not_the_patients_completed_procedure_closes_no_loop() {
    let hfs = common::seeded_hfs().await;
    let client = common::fhir_client(hfs.base());
    let queue =
        passerelle::queue::Queue::new(hfs.base().as_str(), &[7u8; 32], Some(common::schema()));
    let http = reqwest::Client::new();
    let procedure = |patient: &str, status: &str| {
        json!({ "resourceType": "Procedure", "status": status,
            "code": { "text": "Food pantry: groceries provided" },
            "subject": { "reference": patient } })
    };
    let create = |resource: Value| {
        let (http, url) = (http.clone(), format!("{}Procedure", hfs.base()));
        async move {
            let created: Value = http
                .post(url)
                .header("content-type", "application/fhir+json")
                .json(&resource)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            format!("Procedure/{}", created["id"].as_str().unwrap())
        }
    };
    let complete_with = |output: String| {
        let (http, client, base) = (http.clone(), &client, hfs.base().clone());
        async move {
            let mut task = client
                .read_json("Task", "pas-task-10")
                .await
                .unwrap()
                .resource;
            task["status"] = json!("completed");
            task["output"] = json!([{ "type": { "text": "Service delivered" },
                "valueReference": { "reference": output } }]);
            let put = http
                .put(format!("{base}Task/pas-task-10"))
                .header("content-type", "application/fhir+json")
                .json(&task)
                .send()
                .await
                .unwrap();
            assert!(put.status().is_success(), "{}", put.status());
        }
    };
    let sr_status = || async {
        client
            .read_json("ServiceRequest", "pas-sr-10")
            .await
            .unwrap()
            .resource["status"]
            .clone()
    };
    assert_ne!(sr_status().await, "completed");

    for (what, output) in [
        (
            "another patient's Procedure",
            create(procedure("Patient/pas-p01", "completed")).await,
        ),
        (
            "a Procedure not completed",
            create(procedure("Patient/pas-p10", "in-progress")).await,
        ),
        (
            "a Procedure that does not exist",
            "Procedure/pas-forged-404".to_string(),
        ),
    ] {
        complete_with(output).await;
        queue.close_loop(&client, "pas-task-10").await.unwrap();
        assert_ne!(sr_status().await, "completed", "{what} closed the loop");
    }

    complete_with(create(procedure("Patient/pas-p10", "completed")).await).await;
    queue.close_loop(&client, "pas-task-10").await.unwrap();
    assert_eq!(
        sr_status().await,
        "completed",
        "the patient's completed Procedure closes it"
    );
}

/// Open the live queue's stream and read it until the server ends it;
/// returns how long it stayed open, or `None` if it was still open at `within`.
fn watch_stream(
    cookie: String,
    url: String,
    within: Duration,
) -> tokio::task::JoinHandle<Option<Duration>> {
    tokio::spawn(async move {
        use futures::StreamExt;
        let started = Instant::now();
        let response = reqwest::Client::new()
            .get(&url)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        tokio::time::timeout(within, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await
        .ok()
        .map(|()| started.elapsed())
    })
}

#[tokio::test]
async fn the_live_queue_ends_at_logout_and_at_the_idle_timeout() {
    let env = smart_env_with(EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(60),
        idle: Duration::from_secs(4),
        ..Default::default()
    })
    .await;

    // Signed out: the stream ends at once (its next check, within 2 s).
    let browser = Browser::default();
    let q = coordinator(&env, &browser, "pas-prac-roy").await;
    let base = q.url.as_str().split('?').next().unwrap().to_string();
    let stream = watch_stream(
        browser.cookie_header(&env.app),
        format!("{base}/events"),
        Duration::from_secs(20),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let csrf = common::smart::hidden_field(&q.body, "csrf");
    let out = browser
        .post_form(
            &format!("{}/logout", base.trim_end_matches("/queue")),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(out.status, 200);
    let open_for = stream
        .await
        .unwrap()
        .expect("the stream ends with the launch");
    eprintln!("stream ended {open_for:?} after it opened (logout at 0.5 s)");

    // Left alone: live updates do not count as use, so the stream ends once
    // the launch is idle past its timeout (4 s).
    let idle = Browser::default();
    let q = coordinator(&env, &idle, "pas-prac-roy").await;
    let base = q.url.as_str().split('?').next().unwrap().to_string();
    let open_for = watch_stream(
        idle.cookie_header(&env.app),
        format!("{base}/events"),
        Duration::from_secs(30),
    )
    .await
    .unwrap()
    .expect("an idle launch's stream ends");
    assert!(
        open_for >= Duration::from_secs(3),
        "not before the launch is idle: {open_for:?}"
    );
    eprintln!("idle stream ended after {open_for:?}");
    let page = idle.get(&base).await;
    assert_eq!(page.status, 401, "the idle launch itself has ended");
}

#[tokio::test]
async fn a_restarted_queue_uses_its_subscription_again_instead_of_adding_one() {
    let hfs = passerelle_dev::hfs::Hfs::start(&common::hfs_options())
        .await
        .expect("hfs starts");
    let client = common::fhir_client(hfs.base());
    let topic = "http://example.org/topic/task-updated";
    let endpoint = "https://passerelle.example.org/hooks/fhir";
    // Three starts of the same queue (same endpoint: the secret is derived
    // from the session key).
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            passerelle::fhir::subscription::ensure(&client, topic, endpoint, Some("s3cret"))
                .await
                .expect("hfs takes the Subscription"),
        );
    }
    let (first, created) = made[0].clone();
    assert!(created, "the first start creates it");
    assert!(
        made[1..].iter().all(|(r, c)| *r == first && !c),
        "later starts find it: {made:?}"
    );
    let all = client
        .search("Subscription", &[])
        .await
        .unwrap()
        .raw("Subscription")
        .count();
    assert_eq!(all, 1, "one Subscription on the server");
}

#[tokio::test]
async fn a_coordinator_sees_only_the_tasks_their_own_token_can_read() {
    use passerelle_dev::launcher::{RESTRICTED_USER_PATIENT, Simulation};
    let env = env(0, 60).await;
    // A coordinator the EHR lets read every patient sees the whole queue.
    let full = Browser::default();
    let q = coordinator(&env, &full, "pas-prac-roy").await;
    let everything = queue_at(&full, &q, "status=all").await;
    let all_rows = row_ids(&everything);
    assert!(everything.body.contains("Samuel Okafor"));
    assert!(!everything.body.contains("are not shown"));
    let patterns = full
        .get(&q.url.as_str().replace("/queue", "/patterns"))
        .await;
    assert_eq!(patterns.status, 200, "{}", patterns.body);

    // One the EHR restricts to a single patient (hfs enforces the token's
    // patient compartment) sees that patient's Tasks only.
    env.launcher.simulate(Simulation::RestrictedUser);
    let restricted = Browser::default();
    let rq = coordinator(&env, &restricted, "pas-prac-lee").await;
    let theirs = queue_at(&restricted, &rq, "status=all").await;
    let rows = row_ids(&theirs);
    let tasks = all_tasks(&env).await;
    let of_patient: Vec<String> = tasks
        .iter()
        .filter(|t| {
            t["for"]["reference"]
                .as_str()
                .is_some_and(|r| r.ends_with(&format!("Patient/{RESTRICTED_USER_PATIENT}")))
        })
        .filter_map(|t| t["id"].as_str().map(String::from))
        .filter(|id| all_rows.contains(id))
        .collect();
    assert!(!of_patient.is_empty(), "the patient has Tasks in the queue");
    let mut shown = rows.clone();
    shown.sort();
    let mut expected = of_patient.clone();
    expected.sort();
    assert_eq!(shown, expected, "exactly the patient's Tasks");
    assert!(
        !theirs.body.contains("Samuel Okafor"),
        "no other patient's name"
    );
    let hidden = all_rows.len() - rows.len();
    assert!(
        theirs.body.contains(&format!(
            "{hidden} task(s) of the practice's queue are not shown"
        )),
        "{}",
        theirs.body
    );
    eprintln!(
        "restricted coordinator: {} of {} rows shown, {hidden} hidden",
        rows.len(),
        all_rows.len()
    );
    // The digest and the live stream name none of the hidden Tasks.
    let digest = restricted
        .get(&format!(
            "{}/digest",
            rq.url.as_str().split('?').next().unwrap()
        ))
        .await;
    assert_eq!(digest.status, 200);
    assert!(!digest.body.contains("Samuel Okafor"));
    // The patterns view counts every patient: refused to this account.
    let patterns = restricted
        .get(&rq.url.as_str().replace("/queue", "/patterns"))
        .await;
    assert_eq!(patterns.status, 403);
    assert!(
        patterns.body.contains("cannot read all of them"),
        "{}",
        patterns.body
    );
    env.launcher.simulate(Simulation::None);
}

/// Wait until the HTML `page()` sends, as sent (not unescaped), has
/// `needle` (a sync or two may be needed); that HTML.
async fn eventually<F, Fut>(what: &str, needle: &str, mut page: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Page>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = page().await;
        let raw = String::from_utf8_lossy(&p.bytes).to_string();
        if raw.contains(needle) {
            return raw;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never showed {needle:?}: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The loop from the service's side: a referral made at the visit reaches
/// the pantry's Organization on the EHR's server; the pantry's own system
/// (plain JSON over REST, no Passerelle code) finds it with
/// `Task?owner=Organization/<id>`, accepts it, then completes it with an
/// output naming the Procedure it performed. The visit page and the queue
/// show what the pantry wrote, escaped.
#[tokio::test]
async fn the_service_finds_its_referral_by_owner_accepts_and_completes_it_and_the_practice_sees_its_words()
 {
    let env = env(0, 1).await;
    let browser = Browser::default();
    let visit = common::smart::ehr_launch(&env, &browser, "pas-p08").await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    let refer_url = visit.url.as_str().replace("/visit", "/refer");
    let refer = browser
        .get(&format!("{refer_url}?domain=food-insecurity"))
        .await;
    let html = common::unescape(&refer.body);
    let id = common::smart::hidden_field(&html, "referral_id");
    let done = browser
        .post_form(
            &refer_url,
            &[
                ("csrf", &common::smart::hidden_field(&html, "csrf")),
                ("referral_id", &id),
                ("domain", "food-insecurity"),
                ("service", &common::smart::hidden_field(&html, "service")),
                ("action", "refer"),
                ("consent", "yes"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let found = env
        .fhir_json(&format!(
            "Task?identifier={}|{id}-referral/task",
            passerelle::fhir::referral::REFERRAL_ID_SYSTEM
        ))
        .await;
    let task = found["entry"][0]["resource"].clone();
    let task_id = task["id"].as_str().unwrap().to_string();
    let owner = task["owner"]["reference"].as_str().unwrap().to_string();
    assert!(owner.starts_with("Organization/"), "{task}");
    let org = env.fhir_json(&owner).await;
    assert_eq!(org["resourceType"], "Organization");
    assert_eq!(org["name"], task["owner"]["display"]);

    // The pantry's system: its own token, plain JSON.
    let base = env.launcher.fhir_base().to_string();
    let token = env.launcher.system_token("system/*.cruds");
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            http.get(format!("{base}{path}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let put = |t: Value| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            let r = http
                .put(format!("{base}Task/{}", t["id"].as_str().unwrap()))
                .bearer_auth(&token)
                .header("content-type", "application/fhir+json")
                .json(&t)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let mine = get(format!("Task?owner={owner}&status=requested")).await;
    let ids: Vec<&str> = mine["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str())
        .collect();
    assert!(ids.contains(&task_id.as_str()), "{mine}");

    // Accepted, with where it stands in the pantry's words (markup in them
    // must reach the pages as text).
    let mut t = get(format!("Task/{task_id}")).await;
    t["status"] = json!("accepted");
    t["businessStatus"] = json!({ "text": "Intake call booked <Tuesday>" });
    put(t).await;
    let at_visit = || browser.get(visit.url.as_str());
    let page = eventually(
        "the visit page",
        "The service reports: Intake call booked &#60;Tuesday&#62;",
        at_visit,
    )
    .await;
    assert!(!page.contains("<Tuesday>"));
    let q = coordinator(&env, &browser, "pas-prac-roy").await;
    eventually("the queue", "Intake call booked &#60;Tuesday&#62;", || {
        queue_at(&browser, &q, "status=accepted")
    })
    .await;

    // Completed, with the Procedure performed as the resulting activity
    // (SDOHCC Task For Referral Management, output[PerformedActivityReference]).
    let procedure: Value = http
        .post(format!("{base}Procedure"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .json(&json!({ "resourceType": "Procedure", "status": "completed",
            "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "467771000124109",
                "display": "Assistance with application for food pantry program" }] },
            "subject": { "reference": "Patient/pas-p08" },
            "basedOn": [task["focus"].clone()] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let procedure_ref = format!("Procedure/{}", procedure["id"].as_str().unwrap());
    let mut t = get(format!("Task/{task_id}")).await;
    t["status"] = json!("completed");
    t["statusReason"] = json!({ "text": "Enrolled <b>weekly</b>" });
    t["output"] = json!([{
        "type": { "coding": [{ "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes", "code": "resulting-activity" }] },
        "valueReference": { "reference": procedure_ref }
    }]);
    put(t).await;
    let page = eventually(
        "the visit page",
        &format!("Resulting activity: {procedure_ref}"),
        at_visit,
    )
    .await;
    let closed = page
        .split("class=\"rows closed-referrals\"")
        .nth(1)
        .expect("a closed referrals list");
    assert!(
        closed.contains(&format!("/task/{task_id}\""))
            && closed.contains("Enrolled &#60;b&#62;weekly&#60;/b&#62;"),
        "{closed}"
    );
    let row = eventually(
        "the queue",
        &format!("Resulting activity: {procedure_ref}"),
        || queue_at(&browser, &q, "status=completed"),
    )
    .await;
    assert!(row.contains("Enrolled &#60;b&#62;weekly&#60;/b&#62;"));
    assert!(!row.contains("<b>weekly"));
}
