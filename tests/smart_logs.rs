//! The captured logs of whole launches (public and symmetric clients, a
//! refresh, a refused sign-in, a logout), at debug level, contain no token,
//! no code, no state and no secret. One test: it owns the log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::smart::{Browser, CLIENT_SECRET, iframe_src, query, smart_env};
use passerelle::auth::smart::ClientAuthMethod;
use passerelle::dev::launcher::Simulation;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_of_whole_launches_hold_no_token_and_no_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

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
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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
