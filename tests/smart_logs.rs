//! The captured logs of whole launches (public and symmetric clients, a
//! refresh, a refused sign-in, a logout), at debug level, contain no token,
//! no code, no state and no secret. One test: it owns the log subscriber.

mod common;

use std::time::Duration;

use common::smart::{Browser, CLIENT_SECRET, iframe_src, query, smart_env};
use passerelle::auth::smart::ClientAuthMethod;
use passerelle_dev::launcher::Simulation;

#[tokio::test]
async fn logs_of_whole_launches_hold_no_token_and_no_secret() {
    let captured = common::capture_logs();

    let mut seen = Vec::new();
    for method in [ClientAuthMethod::ClientSecretBasic, ClientAuthMethod::None] {
        let env = smart_env(method, Duration::from_secs(2)).await;
        let browser = Browser::default();
        let ehr = browser
            .get(
                env.launcher
                    .ehr_url("pas-p01", None, "pas-prac-moreau")
                    .as_str(),
            )
            .await;
        let page = browser.get(&iframe_src(&ehr.body)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for u in &page.trail {
            seen.extend(
                ["code", "state", "launch", "code_challenge"]
                    .iter()
                    .filter_map(|k| query(u, k)),
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            browser.get(page.url.as_str()).await.status,
            200,
            "after a refresh"
        );
        env.launcher.simulate(Simulation::InvalidClient);
        let refused = browser
            .get(&iframe_src(
                &browser
                    .get(
                        env.launcher
                            .ehr_url("pas-p02", None, "pas-prac-moreau")
                            .as_str(),
                    )
                    .await
                    .body,
            ))
            .await;
        assert_eq!(refused.status, 403);
    }
    let logs = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("FHIR request"), "debug logs were captured");
    assert!(
        !logs.contains("eyJ"),
        "a JWT (access, id or assertion) is in the logs"
    );
    assert!(!logs.contains(CLIENT_SECRET));
    for value in seen.iter().filter(|v| v.len() >= 16) {
        assert!(
            !logs.contains(value.as_str()),
            "a code, state or challenge is in the logs"
        );
    }
}
