//! Several Passerelle instances on one PostgreSQL store and one FHIR
//! server (hfs through the development EHR launcher), as replicas behind a
//! load balancer: a launch started on one goes on on the other; writes an
//! instance kept when it stopped are sent by the other, once; only the
//! leader syncs the queue and a follower takes over when it stops; a change
//! made through one instance shows live on the other's queue page; two
//! instances needing the same launch's refresh at once use its (rotated)
//! refresh token once between them.
//!
//! The load balancer is played by the browser: [`Browser::same_origin`]
//! sends one instance's cookies to the other, as one origin would.

use crate::common;

use std::time::{Duration, Instant};

use common::proxy::{Fault, Proxy};
use common::smart::{
    Browser, EnvOptions, Instance, SmartEnv, ehr_launch, post_hunger_vital_sign, smart_env_with,
};
use passerelle::auth::smart::ClientAuthMethod;
use serde_json::Value;
use url::Url;

use crate::queue::{coordinator, queue_at, row_ids, wait_for_event};

/// `url` (a page of one instance) at the instance `app`.
fn at(app: &str, url: &Url) -> String {
    let mut on = url.clone();
    let app = Url::parse(app).unwrap();
    on.set_port(app.port()).unwrap();
    on.to_string()
}

/// What `/healthz/queue` of instance `app` says.
async fn health(app: &str) -> Value {
    reqwest::get(format!("{app}/healthz/queue"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The syncs instance `app` ran, and the Tasks its index holds.
async fn syncs_and_tasks(app: &str) -> (u64, u64) {
    let h = health(app).await;
    let q = &h["queues"][0];
    (q["syncs"].as_u64().unwrap(), q["tasks"].as_u64().unwrap())
}

/// Two instances on PostgreSQL: the env's own, and one more.
async fn two_instances(o: EnvOptions) -> (SmartEnv, Instance) {
    let env = smart_env_with(EnvOptions {
        postgres: true,
        ..o
    })
    .await;
    let other = env.instance().await;
    (env, other)
}

/// The queue env of these tests: Backend Services, polling every `poll` s.
fn queue_options(poll: u64) -> EnvOptions {
    EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        queue_poll_seconds: Some(poll),
        ..Default::default()
    }
}

/// Wait until exactly one of `apps` says it leads; returns its index.
async fn leader_of(apps: &[&str], within: Duration) -> usize {
    let started = Instant::now();
    loop {
        let mut leading = vec![];
        for (i, app) in apps.iter().enumerate() {
            if health(app).await["leader"] == true {
                leading.push(i);
            }
        }
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        if let [one] = leading[..] {
            return one;
        }
        assert!(
            started.elapsed() < within,
            "no instance took the lead within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_launch_started_on_one_instance_goes_on_on_the_other() {
    let (env, other) = two_instances(EnvOptions::default()).await;
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    browser.same_origin(&env.app, &other.app);
    let there = browser.get(&at(&other.app, &visit.url)).await;
    assert_eq!(there.status, 200, "{}", there.body);
    let body = common::unescape(&there.body);
    assert!(body.contains("María José García"), "{body}");
    // A write made there is recorded, once.
    let saved = post_hunger_vital_sign(&browser, &there).await;
    assert!(saved.body.contains("Screening recorded"), "{}", saved.body);
    let found = env
        .fhir_json("QuestionnaireResponse?subject=Patient/pas-p01")
        .await;
    assert_eq!(found["entry"].as_array().map_or(0, Vec::len), 1);
    // Another browser, without the cookie, is refused there too.
    let stranger = Browser::default();
    assert_eq!(stranger.get(&at(&other.app, &visit.url)).await.status, 403);
}

#[tokio::test]
async fn two_instances_renewing_one_launch_at_once_refresh_it_once_and_both_go_on() {
    // Tokens of 40 s are renewed 30 s before they end: 10 s after the launch.
    let (env, other) = two_instances(EnvOptions {
        token_lifetime: Duration::from_secs(40),
        ..EnvOptions::default()
    })
    .await;
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    browser.same_origin(&env.app, &other.app);
    tokio::time::sleep(Duration::from_secs(11)).await;
    // A slow token endpoint: both instances want the refresh while the
    // first is still waiting for its answer. The launcher's refresh tokens
    // are good once, so a second use would be refused and end the launch.
    env.launcher.delay_refreshes(Duration::from_millis(1500));
    let before = env.launcher.refresh_requests();
    let there = at(&other.app, &visit.url);
    let (here, on_other) = tokio::join!(browser.get(visit.url.as_str()), browser.get(&there));
    assert_eq!(here.status, 200, "{}", here.body);
    assert_eq!(on_other.status, 200, "{}", on_other.body);
    assert_eq!(
        env.launcher.refresh_requests(),
        before + 1,
        "one refresh between the two instances"
    );
    // Both go on with the renewed tokens (good for 10 s more): no refresh,
    // no "launch again".
    env.launcher.delay_refreshes(Duration::ZERO);
    let (here, on_other) = tokio::join!(browser.get(visit.url.as_str()), browser.get(&there));
    assert_eq!(here.status, 200, "{}", here.body);
    assert_eq!(on_other.status, 200, "{}", on_other.body);
    assert_eq!(env.launcher.refresh_requests(), before + 1);
}

#[tokio::test]
async fn writes_kept_by_an_instance_that_stops_are_sent_by_the_other_once_each() {
    let (env, mut doomed) = two_instances(EnvOptions {
        outbox_every: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    // The FHIR server refuses every transaction for now.
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    proxy.fault("POST /$", Fault::Status(503, String::new()));
    let browser = Browser::default();
    let patients = ["pas-p09", "pas-p12", "pas-p06"];
    for patient in patients {
        let visit = ehr_launch(&env, &browser, patient).await;
        browser.same_origin(&env.app, &doomed.app);
        let there = browser.get(&at(&doomed.app, &visit.url)).await;
        let saving = post_hunger_vital_sign(&browser, &there).await;
        assert!(
            saving.body.contains("Saved here, sending…"),
            "{}",
            saving.body
        );
    }
    assert_eq!(env.stored_where("outbox", "status = 'pending'").await, 3);
    // The instance that kept them stops; then the server recovers.
    doomed.stop().await;
    proxy.clear();
    let started = Instant::now();
    while env.stored_where("outbox", "status = 'sent'").await < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the other instance did not send the kept writes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "3 kept writes sent by the other instance {} ms after the server recovered",
        started.elapsed().as_millis()
    );
    // Each once on the server (counted by the screening's identifier, the
    // idempotency key of its conditional create).
    for patient in patients {
        let found = env
            .fhir_json(&format!("QuestionnaireResponse?subject=Patient/{patient}"))
            .await;
        let entries = found["entry"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), 1, "{patient}: {found}");
        let identifier = &entries[0]["resource"]["identifier"];
        let by_identifier = env
            .fhir_json(&format!(
                "QuestionnaireResponse?identifier={}|{}",
                identifier["system"].as_str().unwrap(),
                identifier["value"].as_str().unwrap()
            ))
            .await;
        assert_eq!(by_identifier["entry"].as_array().map_or(0, Vec::len), 1);
    }
    assert_eq!(
        env.stored_where("outbox", "claimed_by IS NOT NULL").await,
        0,
        "no write is left claimed"
    );
}

#[tokio::test]
async fn only_the_leader_syncs_and_a_follower_takes_over_when_it_stops() {
    let (mut env, mut other) = two_instances(queue_options(1)).await;
    // The EHR's side: every request either instance sends it.
    let ehr = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(ehr.base.clone());
    let apps = [env.app.clone(), other.app.clone()];
    let first = leader_of(&[&apps[0], &apps[1]], Duration::from_secs(20)).await;
    let follower = 1 - first;
    let task_searches = || {
        ehr.seen()
            .iter()
            .filter(|r| r.contains("/Task?") || r.contains("/Task/_search"))
            .count()
    };
    let (syncs_before, _) = syncs_and_tasks(&apps[first]).await;
    let searches_before = task_searches();
    // Some syncs by the leader (every second), none by the follower, whose
    // index fills from the shared store.
    let started = Instant::now();
    loop {
        let (leader_syncs, leader_tasks) = syncs_and_tasks(&apps[first]).await;
        let (follower_syncs, follower_tasks) = syncs_and_tasks(&apps[follower]).await;
        assert_eq!(follower_syncs, 0, "the follower never syncs");
        if leader_syncs >= syncs_before + 3 && leader_tasks > 0 && follower_tasks == leader_tasks {
            // The EHR saw the leader's syncs only: one Task search each (the
            // Tasks fit one page), give or take a sync under way at either
            // end of the window; two polling instances would double it.
            let syncs = leader_syncs - syncs_before;
            let searches = (task_searches() - searches_before) as u64;
            assert!(
                searches >= syncs.saturating_sub(1) && searches <= syncs + 1,
                "{searches} Task searches reached the EHR for {syncs} syncs of the leader"
            );
            eprintln!(
                "leader: {leader_syncs} syncs, {leader_tasks} Tasks; follower: 0 syncs, {follower_tasks} Tasks; the EHR saw {searches} Task searches for the leader's {syncs} syncs"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "leader {leader_syncs} syncs / {leader_tasks} Tasks, follower {follower_tasks} Tasks"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The leader goes away: the follower leads and syncs.
    let stopped = Instant::now();
    match first {
        0 => env.stop_app().await,
        _ => other.stop().await,
    }
    let (before, _) = syncs_and_tasks(&apps[follower]).await;
    loop {
        let h = health(&apps[follower]).await;
        let syncs = h["queues"][0]["syncs"].as_u64().unwrap();
        if h["leader"] == true && syncs > before {
            eprintln!(
                "the follower led and synced {} ms after the leader stopped",
                stopped.elapsed().as_millis()
            );
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "the follower did not take over: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_change_made_through_one_instance_shows_live_on_the_others_queue_page() {
    // Polling every 15 minutes: only the shared index brings the change.
    let (env, other) = two_instances(queue_options(900)).await;
    let browser = Browser::default();
    let q = coordinator(&env, &browser, "pas-prac-lee").await;
    let here = queue_at(&browser, &q, "kind=referral&owner=unassigned").await;
    browser.same_origin(&env.app, &other.app);
    let q_there = browser.get(&at(&other.app, &q.url)).await;
    let there = queue_at(&browser, &q_there, "kind=referral&owner=unassigned").await;
    let target = row_ids(&here)[0].clone();
    assert_eq!(
        row_ids(&there),
        row_ids(&here),
        "both instances show one queue"
    );

    // This instance's live page listens; the change is made on the other.
    let events = format!("{}/events", q.url.as_str().split('?').next().unwrap());
    let cookie = browser.cookie_header(&env.app);
    let listening = tokio::spawn({
        let target = target.clone();
        async move { wait_for_event(&cookie, &events, &target, Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let row = there
        .body
        .split(&format!("<tr id=\"task-{target}\""))
        .nth(1)
        .unwrap()
        .to_string();
    let action = format!(
        "{}/{target}",
        q_there.url.as_str().split('?').next().unwrap()
    );
    let changed = Instant::now();
    let done = browser
        .post_form(
            &action,
            &[
                ("csrf", &common::smart::hidden_field(&row, "csrf")),
                ("version", &common::smart::hidden_field(&row, "version")),
                ("action", "claim"),
                ("note", "Taken on the other instance"),
                ("back", "kind=referral&owner=unassigned"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        listening.await.unwrap(),
        "the first instance's live page announced the change"
    );
    eprintln!(
        "a change on one instance reached the other's live page in {} ms",
        changed.elapsed().as_millis()
    );
    let mine = queue_at(&browser, &q, "owner=me").await;
    assert!(row_ids(&mine).contains(&target), "{}", mine.body);
}
