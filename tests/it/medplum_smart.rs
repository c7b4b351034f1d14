//! Medplum (`@medplum/fhir-router` 5.2.13, in memory) as the EHR's FHIR
//! server behind the development launcher, so Passerelle reaches it through
//! a real EHR launch: its tokens, its outbox, its pages. Medplum's
//! in-memory engine checks no token, so scope enforcement is tested on hfs
//! only (`smart`, `act`); what these tests add is a second engine under
//! the whole launched flow, and a server that does not apply transactions
//! as one unit.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::proxy::{Fault, Proxy};
use common::smart::{
    Browser, EnvOptions, SmartEnv, at, change, ehr_launch, entries, follow, hidden_field,
    post_hunger_vital_sign, smart_env_with,
};
use passerelle::fhir::referral::REFERRAL_ID_SYSTEM;
use passerelle::fhir::screening::SCREENING_ID_SYSTEM;
use passerelle_dev::medplum::TransactionMode;
use serde_json::Value;

async fn medplum_env(mode: TransactionMode) -> SmartEnv {
    smart_env_with(EnvOptions {
        medplum: Some(mode),
        outbox_every: Duration::from_millis(300),
        ..EnvOptions::default()
    })
    .await
}

/// Passerelle's screening resources of `patient` on the server, by type:
/// how many carry each identifier value of [`SCREENING_ID_SYSTEM`].
async fn screening_resources(env: &SmartEnv, patient: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for t in ["QuestionnaireResponse", "Observation", "Condition"] {
        let page = env
            .fhir_json(&format!("{t}?subject=Patient/{patient}&_count=200"))
            .await;
        for r in entries(&page) {
            let ids = match &r["identifier"] {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            for id in ids.iter().filter(|i| i["system"] == SCREENING_ID_SYSTEM) {
                let key = format!("{t} {}", id["value"].as_str().unwrap_or_default());
                *seen.entry(key).or_default() += 1;
            }
        }
    }
    seen
}

#[tokio::test]
async fn a_screening_a_referral_and_its_task_update_go_through_an_ehr_launch_on_medplum() {
    let env = medplum_env(TransactionMode::Atomic).await;
    let browser = Browser::default();
    // James Wilson screened positive for food insecurity (the fixtures).
    let visit = ehr_launch(&env, &browser, "pas-p08").await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    assert!(
        visit.body.contains("Signed in: Claire Moreau"),
        "{}",
        visit.body
    );

    let saved = post_hunger_vital_sign(&browser, &visit).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert!(saved.body.contains("Screening recorded"), "{}", saved.body);
    let recorded = screening_resources(&env, "pas-p08").await;
    assert!(
        recorded
            .keys()
            .any(|k| k.starts_with("QuestionnaireResponse ")),
        "{recorded:?}"
    );
    assert!(recorded.values().all(|n| *n == 1), "{recorded:?}");

    let refer = follow(&env, &browser, &visit, "refer-food-insecurity").await;
    assert_eq!(refer.status, 200, "{}", refer.body);
    let html = common::unescape(&refer.body);
    let referral_id = hidden_field(&html, "referral_id");
    let form = common::smart::referral_form(&html, "food-insecurity");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post_form(&at(&visit, "/refer"), &form).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        common::unescape(&done.body).contains("class=\"flash sent\""),
        "{}",
        done.body
    );
    let id = format!("{referral_id}-referral");
    let tasks = entries(
        &env.fhir_json(&format!("Task?identifier={REFERRAL_ID_SYSTEM}|{id}/task"))
            .await,
    );
    assert_eq!(tasks.len(), 1, "recorded once");
    let task_id = tasks[0]["id"].as_str().unwrap().to_string();
    assert_eq!(tasks[0]["status"], "requested");
    let srs = entries(
        &env.fhir_json(&format!(
            "ServiceRequest?identifier={REFERRAL_ID_SYSTEM}|{id}/service-request"
        ))
        .await,
    );
    assert_eq!(srs.len(), 1);

    // The pantry accepts it: an update with If-Match through the launch.
    let task_url = at(&visit, &format!("/task/{task_id}"));
    let shown = browser.get(&task_url).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    let accepted = change(
        &browser,
        &task_url,
        &shown,
        "performer:accepted",
        "",
        "Called",
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let t = env.fhir_json(&format!("Task/{task_id}")).await;
    assert_eq!(t["status"], "accepted");
    // The move made on the service's behalf says so, then the user's note.
    let notes = common::smart::note_texts(&t);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("on behalf of"), "{notes:?}");
    assert_eq!(notes[1], "Called");
    // A stale version is refused by Medplum as by hfs (409 page).
    let stale = change(&browser, &task_url, &shown, "performer:in-progress", "", "").await;
    assert_eq!(stale.status, 409, "{}", stale.body);
}

#[tokio::test]
async fn a_transaction_that_failed_part_way_on_a_non_atomic_server_ends_with_each_resource_once() {
    let env = medplum_env(TransactionMode::Entries).await;
    // Between the launcher and Medplum: until cleared, a transaction has
    // only its first two entries applied, then the server answers 503.
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    proxy.fault("POST /$", Fault::ForwardFirst(2));
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p12").await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    let saving = post_hunger_vital_sign(&browser, &visit).await;
    assert_eq!(saving.status, 200, "{}", saving.body);
    assert!(
        saving.body.contains("Saved here, sending…"),
        "kept by the outbox: {}",
        saving.body
    );
    // The outbox keeps sending it; each time the two entries are found
    // again, not created again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let part = screening_resources(&env, "pas-p12").await;
    assert_eq!(part.len(), 2, "two entries applied: {part:?}");
    assert!(part.values().all(|n| *n == 1), "{part:?}");
    let failed_sends = proxy.seen().iter().filter(|s| *s == "POST /").count();
    assert!(
        failed_sends >= 2,
        "resent while failing: {:?}",
        proxy.seen()
    );

    // The server recovers: the outbox sends the whole transaction again;
    // the conditional creates find the two already there and create the rest.
    proxy.clear();
    let mut recorded = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let page = browser.get(saving.url.as_str()).await;
        if page.body.contains("Screening recorded") {
            recorded = true;
            break;
        }
    }
    assert!(recorded, "the outbox sent it again");
    let all = screening_resources(&env, "pas-p12").await;
    println!("after the second send: {all:?}");
    assert!(all.len() > part.len(), "the rest was created: {all:?}");
    assert!(
        part.keys().all(|k| all.contains_key(k)),
        "{part:?} within {all:?}"
    );
    assert!(
        all.values().all(|n| *n == 1),
        "each resource exactly once: {all:?}"
    );
    // The entries created on the second send refer to the resources the
    // first one left (their urn:uuid resolved to them), not to copies.
    let qrs = entries(
        &env.fhir_json("QuestionnaireResponse?subject=Patient/pas-p12")
            .await,
    );
    assert_eq!(qrs.len(), 1);
    let qr = format!("QuestionnaireResponse/{}", qrs[0]["id"].as_str().unwrap());
    let observations = entries(&env.fhir_json("Observation?subject=Patient/pas-p12").await);
    let derived: Vec<&Value> = observations
        .iter()
        .filter(|o| o["identifier"][0]["system"] == SCREENING_ID_SYSTEM)
        .map(|o| &o["derivedFrom"][0]["reference"])
        .collect();
    assert!(!derived.is_empty());
    assert!(derived.iter().all(|r| **r == qr), "{derived:?} vs {qr}");
    let sends = proxy.seen().iter().filter(|s| *s == "POST /").count();
    println!("sent {sends} times, at least the first {failed_sends} failing part-way");
    assert!(sends > failed_sends);
}
