//! SMART App Launch against the development EHR launcher and an hfs that
//! enforces the scopes of its tokens: EHR and standalone launches for public,
//! symmetric and asymmetric clients, every simulated error, and every forged
//! or replayed input the issue lists.

use crate::common;

use std::time::Duration;

use common::proxy::Proxy;
use common::smart::{
    Browser, Page, authorize_at_ehr, begin_launch, field, post_hunger_vital_sign, query, smart_env,
};
use passerelle::auth::smart::ClientAuthMethod;
use passerelle_dev::launcher::Simulation;

const HOUR: Duration = Duration::from_secs(3600);

use common::smart::ehr_launch;

#[tokio::test]
async fn ehr_launch_public_client_reaches_the_visit_page_with_context_and_user() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.url.path().starts_with("/l/") && page.url.path().ends_with("/visit"),
        "{}",
        page.url
    );
    assert!(page.body.contains("María José García"));
    assert!(
        page.body.contains("SHP-448812"),
        "data read through hfs with the launch's token"
    );
    assert!(
        page.body.contains("Signed in: Claire Moreau"),
        "fhirUser resolved"
    );
    // The redirect to the EHR carried PKCE S256, state, aud and the launch.
    let authorize = page
        .trail
        .iter()
        .find(|u| u.path().ends_with("/authorize"))
        .expect("went to authorize");
    assert_eq!(
        query(authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query(authorize, "state").unwrap().len() >= 22);
    assert_eq!(
        query(authorize, "aud").as_deref(),
        Some(env.launcher.fhir_base().as_str().trim_end_matches('/'))
    );
    assert!(query(authorize, "launch").is_some());
    assert!(
        query(authorize, "scope")
            .unwrap()
            .contains("user/Task.crus"),
        "v2 scopes from capabilities"
    );
    // The session cookie is what the issue asks for.
    let cookies = browser.set_cookie_headers.lock().unwrap().clone();
    let ours = cookies
        .iter()
        .find(|c| c.starts_with("__Host-passerelle="))
        .expect("session cookie");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=None",
        "Partitioned",
        "Path=/",
    ] {
        assert!(ours.contains(attr), "{ours} lacks {attr}");
    }
    // The EHR may frame the app.
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains(&env.launcher.base().origin().ascii_serialization()),
        "{csp}"
    );
}

#[tokio::test]
async fn private_key_jwt_client_secret_basic_and_client_secret_post_clients_launch_too() {
    for method in [
        ClientAuthMethod::PrivateKeyJwt,
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
    ] {
        let env = smart_env(method.clone(), HOUR).await;
        let page = ehr_launch(&env, &Browser::default(), "pas-p02").await;
        assert_eq!(page.status, 200, "{method:?}: {}", page.body);
        assert!(page.body.contains("Jean Dupont"), "{method:?}");
    }
}

#[tokio::test]
async fn standalone_launch_lets_the_coordinator_pick_a_patient_at_the_ehr() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let picker = browser.get(&format!("{}/standalone", env.app)).await;
    assert!(picker.body.contains("Development EHR"));
    let start = format!(
        "{}/standalone/start?iss={}",
        env.app,
        common::enc(env.launcher.fhir_base().as_str())
    );
    let at_ehr = browser.get(&start).await;
    assert_eq!(at_ehr.status, 200);
    let authorize = at_ehr
        .trail
        .iter()
        .find(|u| u.path().ends_with("/authorize"))
        .unwrap();
    assert!(
        query(authorize, "scope")
            .unwrap()
            .starts_with("launch/patient ")
    );
    assert!(query(authorize, "launch").is_none());
    assert!(
        at_ehr.body.contains("Samuel Okafor"),
        "the EHR's picker lists patients"
    );
    let page = common::smart::approve_standalone(&browser, &at_ehr, "pas-p10").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Samuel Okafor"));
    assert!(
        page.body.contains("class=\"banner\""),
        "standalone: Passerelle shows the whole banner"
    );
}

#[tokio::test]
async fn two_launches_in_one_browser_keep_their_own_patients_and_another_browser_gets_neither() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let first = ehr_launch(&env, &browser, "pas-p01").await;
    let second = ehr_launch(&env, &browser, "pas-p08").await;
    assert_ne!(first.url, second.url);
    let again_first = browser.get(first.url.as_str()).await;
    let again_second = browser.get(second.url.as_str()).await;
    assert!(
        again_first.body.contains("María José García")
            && !again_first.body.contains("James Wilson")
    );
    assert!(
        again_second.body.contains("James Wilson")
            && !again_second.body.contains("María José García")
    );
    let stranger = Browser::default().get(first.url.as_str()).await;
    assert_eq!(stranger.status, 403);
    assert!(stranger.body.contains("Launch again from the EHR"));
}

#[tokio::test]
async fn a_replayed_state_a_replayed_code_and_a_swapped_verifier_are_refused() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    let callback = page
        .trail
        .iter()
        .find(|u| u.path() == env.redirect_uri.path())
        .unwrap()
        .clone();
    // Replayed state (and code): the state was used once.
    let replay = browser.get(callback.as_str()).await;
    assert_eq!(replay.status, 400);
    assert!(
        replay
            .body
            .contains("was not started in this browser, has expired, or was already used"),
        "{}",
        replay.body
    );

    // A fresh state with the old code: the EHR refuses the used code.
    let code = query(&callback, "code").unwrap();
    let (_, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let fresh_state = field(&fields, "state");
    let iss = common::enc(&env.launcher.issuer());
    let refused = browser
        .get(&format!(
            "{}?code={code}&state={fresh_state}&iss={iss}",
            env.redirect_uri
        ))
        .await;
    assert_eq!(refused.status, 403);
    assert!(
        refused
            .body
            .contains("The EHR refused the sign-in: invalid_grant"),
        "{}",
        refused.body
    );

    // Launch A's state with launch B's code: A's PKCE verifier does not match B's challenge.
    let (_, fields_a) = begin_launch(&env, &browser, "pas-p01").await;
    let (action_b, fields_b) = begin_launch(&env, &browser, "pas-p01").await;
    assert_ne!(
        field(&fields_a, "code_challenge"),
        field(&fields_b, "code_challenge")
    );
    let back_b = authorize_at_ehr(&browser, &action_b, &fields_b).await;
    let code_b = query(&back_b, "code").unwrap();
    let swapped = browser
        .get(&format!(
            "{}?code={code_b}&state={}&iss={iss}",
            env.redirect_uri,
            field(&fields_a, "state")
        ))
        .await;
    assert_eq!(swapped.status, 403);
    assert!(swapped.body.contains("invalid_grant"), "{}", swapped.body);

    // A callback carried to another browser.
    let (action_c, fields_c) = begin_launch(&env, &browser, "pas-p01").await;
    let back_c = authorize_at_ehr(&browser, &action_c, &fields_c).await;
    let other = Browser::default().get(back_c.as_str()).await;
    assert_eq!(other.status, 400);
    assert!(other.body.contains("was not started in this browser"));
}

#[tokio::test]
async fn a_forged_iss_and_an_iss_not_on_the_list_are_refused_before_any_request() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let impostor = Proxy::start(&env.launcher.fhir_base()).await;
    let browser = Browser::default();
    let page = browser
        .get(&format!(
            "{}/launch?iss={}&launch=abc",
            env.app,
            common::enc(impostor.base.as_str())
        ))
        .await;
    assert_eq!(page.status, 403);
    assert!(
        page.body
            .contains("is not on Passerelle's list of EHRs, so nothing was requested from it."),
        "{}",
        page.body
    );
    assert_eq!(impostor.count(), 0);
    let page = browser
        .get(&format!(
            "{}/standalone/start?iss=https%3A%2F%2Fevil.example.org%2Ffhir",
            env.app
        ))
        .await;
    assert_eq!(page.status, 403);
}

#[tokio::test]
async fn a_tampered_id_token_is_refused() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let smart = passerelle::auth::smart::SmartClient::new(
        vec![serde_json::from_value(serde_json::json!({
            "name": "Development EHR", "iss": env.launcher.fhir_base().as_str(), "client_id": "passerelle", "client_auth": "none"
        }))
        .unwrap()],
        env.keys.clone(),
        url::Url::parse(&format!("{}/", env.app)).unwrap(),
    )
    .unwrap();
    let ehr = smart
        .ehr(env.launcher.fhir_base().as_str())
        .unwrap()
        .clone();
    let config = smart.discover(&ehr).await.unwrap();
    let (id_token, nonce) = common::smart::id_token_for(&env, &smart, &ehr, &config).await;
    assert!(nonce.is_some(), "openid is asked for, so a nonce is sent");
    let good = smart
        .verify_id_token(&ehr, &config, &id_token, nonce.as_deref())
        .await
        .unwrap();
    assert_eq!(
        good["fhirUser"]
            .as_str()
            .map(|s| s.ends_with("Practitioner/pas-prac-moreau")),
        Some(true)
    );
    // Change one character of the payload: the signature no longer matches.
    let mut parts: Vec<String> = id_token.split('.').map(String::from).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    let tampered = parts.join(".");
    let err = smart
        .verify_id_token(&ehr, &config, &tampered, nonce.as_deref())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("The EHR's identity token could not be verified"),
        "{err}"
    );
}

/// `url` with its query parameter `name` set to `value`, or removed (`None`).
fn with_param(url: &url::Url, name: &str, value: Option<&str>) -> url::Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(kept);
    if let Some(v) = value {
        out.query_pairs_mut().append_pair(name, v);
    }
    out
}

#[tokio::test]
async fn an_ehr_launch_works_with_a_kid_less_id_token() {
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        id_token_without_kid: true,
        ..Default::default()
    })
    .await;
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Signed in: Claire Moreau"),
        "fhirUser from the verified id_token"
    );
    let authorize = page
        .trail
        .iter()
        .find(|u| u.path().ends_with("/authorize"))
        .unwrap();
    assert!(query(authorize, "nonce").is_some_and(|n| n.len() >= 22));
    let callback = page
        .trail
        .iter()
        .find(|u| u.path() == env.redirect_uri.path())
        .unwrap();
    assert_eq!(query(callback, "iss"), Some(env.launcher.issuer()));
    // The launcher's id_tokens have no kid indeed.
    let smart = passerelle::auth::smart::SmartClient::new(
        vec![serde_json::from_value(serde_json::json!({
            "name": "Development EHR", "iss": env.launcher.fhir_base().as_str(), "client_id": "passerelle", "client_auth": "none"
        }))
        .unwrap()],
        env.keys.clone(),
        url::Url::parse(&format!("{}/", env.app)).unwrap(),
    )
    .unwrap();
    let ehr = smart
        .ehr(env.launcher.fhir_base().as_str())
        .unwrap()
        .clone();
    let config = smart.discover(&ehr).await.unwrap();
    let (id_token, nonce) = common::smart::id_token_for(&env, &smart, &ehr, &config).await;
    assert!(
        jsonwebtoken::decode_header(&id_token)
            .unwrap()
            .kid
            .is_none()
    );
    smart
        .verify_id_token(&ehr, &config, &id_token, nonce.as_deref())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_callback_naming_another_iss_or_none_is_refused_and_its_state_used_up() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let back = authorize_at_ehr(&browser, &action, &fields).await;
    assert_eq!(query(&back, "iss"), Some(env.launcher.issuer()));
    // A hostile EHR relayed the user: the answer names another server.
    let relayed = with_param(&back, "iss", Some("https://evil.example.org/fhir"));
    let page = browser.get(relayed.as_str()).await;
    assert_eq!(page.status, 403);
    assert!(
        page.body.contains(
            "comes from another authorization server (iss) than the one it was sent to, so it may have been relayed from another EHR"
        ),
        "{}",
        page.body
    );
    let again = browser.get(back.as_str()).await;
    assert_eq!(again.status, 400, "the state was used up");
    assert!(again.body.contains("was already used"), "{}", again.body);

    // The launcher announces iss in every answer: one without it is refused.
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let back = authorize_at_ehr(&browser, &action, &fields).await;
    let page = browser.get(with_param(&back, "iss", None).as_str()).await;
    assert_eq!(page.status, 403);
    assert!(
        page.body
            .contains("does not name the authorization server that sent it (iss)"),
        "{}",
        page.body
    );

    // With a trailing slash, it is the same server.
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let back = authorize_at_ehr(&browser, &action, &fields).await;
    let slash = format!("{}/", env.launcher.issuer());
    let page = browser
        .get(with_param(&back, "iss", Some(&slash)).as_str())
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("María José García"));
}

#[tokio::test]
async fn each_simulated_error_gives_its_clear_page() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;

    env.launcher.simulate(Simulation::InvalidClient);
    let page = ehr_launch(&env, &Browser::default(), "pas-p01").await;
    assert_eq!(page.status, 403);
    assert!(
        page.body
            .contains("The EHR refused the sign-in: invalid_client"),
        "{}",
        page.body
    );

    env.launcher.simulate(Simulation::WrongRedirectUri);
    let page = ehr_launch(&env, &Browser::default(), "pas-p01").await;
    assert_eq!(
        page.status, 400,
        "the EHR shows its own error and never redirects"
    );
    assert!(page.url.as_str().starts_with(env.launcher.base().as_str()));

    env.launcher.simulate(Simulation::ExpiredToken);
    let page = ehr_launch(&env, &Browser::default(), "pas-p01").await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(
        page.body.contains("Launch again from the EHR"),
        "{}",
        page.body
    );

    env.launcher.simulate(Simulation::DowngradedScopes);
    let page = ehr_launch(&env, &Browser::default(), "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Update a Task</strong>: read-only: Task write not granted"),
        "{}",
        page.body
    );
    assert!(page.body.contains("María José García"));

    // Discovery is pinned per iss: a Passerelle meets a v1-only server, or a
    // missing document, at its first launch.
    let fresh = smart_env(ClientAuthMethod::None, HOUR).await;
    fresh.launcher.simulate(Simulation::V1Only);
    let page = ehr_launch(&fresh, &Browser::default(), "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let authorize = page
        .trail
        .iter()
        .find(|u| u.path().ends_with("/authorize"))
        .unwrap();
    assert!(
        query(authorize, "scope")
            .unwrap()
            .contains("user/Task.read user/Task.write")
    );
    assert!(page.body.contains("María José García"));

    let fresh = smart_env(ClientAuthMethod::None, HOUR).await;
    fresh.launcher.simulate(Simulation::MissingWellKnown);
    let page = ehr_launch(&fresh, &Browser::default(), "pas-p01").await;
    assert_eq!(page.status, 502);
    assert!(
        page.body.contains(
            "could not be read (HTTP 404). Passerelle does not continue without authorization."
        ),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn short_tokens_are_refreshed_once_for_concurrent_pages_and_logout_ends_the_launch() {
    let env = smart_env(ClientAuthMethod::None, Duration::from_secs(2)).await;
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Five pages at once after expiry: one refresh (rotation would refuse a second).
    let loads: Vec<_> = (0..5)
        .map(|_| {
            let b = browser.clone();
            let url = page.url.to_string();
            tokio::spawn(async move { b.get(&url).await.status })
        })
        .collect();
    for l in loads {
        assert_eq!(l.await.unwrap(), 200);
    }
    // Tokens are not stored in clear.
    let db = std::fs::read(&env.db_path).unwrap();
    assert!(
        !db.windows(3).any(|w| w == b"eyJ"),
        "no JWT in the database file"
    );

    // Logout needs the CSRF token of the page.
    let logout = format!("{}/logout", page.url.as_str().trim_end_matches("/visit"));
    let refused = browser.post_form(&logout, &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, 400);
    let csrf = common::smart::hidden_field(&page.body, "csrf");
    let out = browser.post_form(&logout, &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 200);
    assert!(out.body.contains("Signed out"));
    let after = browser.get(page.url.as_str()).await;
    assert_eq!(after.status, 403);
}

#[tokio::test]
async fn a_401_from_the_fhir_server_is_refreshed_once_and_a_refused_refresh_is_remembered() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    let outcome = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login","diagnostics":"token revoked"}]}"#;

    // The server refuses a token still within its lifetime, once: one
    // refresh, the request sent again, the page shown.
    let before = env.launcher.refresh_requests();
    proxy.fault_times(
        "/Patient/pas-p01",
        common::proxy::Fault::Status(401, outcome.into()),
        1,
    );
    let again = browser.get(page.url.as_str()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(env.launcher.refresh_requests(), before + 1);
    let patient_reads = proxy
        .seen()
        .iter()
        .filter(|r| r.starts_with("GET /Patient/pas-p01"))
        .count();
    assert_eq!(patient_reads, 2, "the refused read, then its retry");

    // The EHR withdraws the authorization: every request is refused, the
    // refresh is refused. The page's eight requests ask for one refresh
    // between them, and the launch remembers it.
    env.launcher.revoke_refresh_tokens();
    proxy.fault("/", common::proxy::Fault::Status(401, outcome.into()));
    let before = env.launcher.refresh_requests();
    let refused = browser.get(page.url.as_str()).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused.body.contains("Launch again from the EHR"),
        "{}",
        refused.body
    );
    assert_eq!(env.launcher.refresh_requests(), before + 1);
    proxy.clear();
    proxy.reset_count();
    let still = browser.get(page.url.as_str()).await;
    assert_eq!(still.status, 401, "{}", still.body);
    assert_eq!(
        env.launcher.refresh_requests(),
        before + 1,
        "not asked again"
    );
    assert_eq!(proxy.count(), 0, "nothing sent with the spent token");
}

#[tokio::test]
async fn backend_services_get_a_system_token_without_refresh_that_hfs_accepts() {
    let env = smart_env(ClientAuthMethod::PrivateKeyJwt, HOUR).await;
    let smart_config: serde_json::Value = reqwest::get(format!(
        "{}.well-known/smart-configuration",
        env.launcher.fhir_base()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token_endpoint = url::Url::parse(smart_config["token_endpoint"].as_str().unwrap()).unwrap();
    let backend = passerelle::auth::smart::BackendClient::new(
        token_endpoint,
        "passerelle".into(),
        env.keys[0].clone(),
        "system/Task.rs system/Patient.rs".into(),
    );
    let (token, lifetime) = backend.token().await.unwrap();
    assert!(lifetime.as_secs() > 0);
    let claims = common::smart::claims(&token);
    assert!(claims["scope"].as_str().unwrap().contains("system/Task.rs"));
    assert!(claims.get("patient").is_none());
    let r = reqwest::Client::new()
        .get(format!("{}Task?_count=5", env.launcher.fhir_base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without a token, hfs refuses.
    let r = reqwest::get(format!("{}Task?_count=5", env.launcher.fhir_base()))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn rs384_client_assertions_work_too() {
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        method: ClientAuthMethod::PrivateKeyJwt,
        key_alg: "RS384",
        ..Default::default()
    })
    .await;
    let page = ehr_launch(&env, &Browser::default(), "pas-p03").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Robert Lee Johnson"));
}

#[tokio::test]
async fn an_idle_launch_ends_with_a_clear_page() {
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        idle: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = browser.get(page.url.as_str()).await;
    assert_eq!(later.status, 401);
    assert!(
        later
            .body
            .contains("Your authorization has ended. Launch Passerelle again from the EHR."),
        "{}",
        later.body
    );
}

#[tokio::test]
async fn without_patient_context_the_coordinator_searches_and_chooses_with_a_csrf_token() {
    // An EHR that gives no patient in context (no launch/patient scope).
    let scopes = "openid fhirUser online_access user/Patient.rs user/Encounter.rs user/Coverage.rs \
                  user/Organization.rs user/Practitioner.rs user/Observation.rs user/Condition.rs \
                  user/ServiceRequest.rs user/Task.rs user/ClaimResponse.rs user/Claim.rs";
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        scopes: Some(scopes.into()),
        ..Default::default()
    })
    .await;
    let browser = Browser::default();
    let start = format!(
        "{}/standalone/start?iss={}",
        env.app,
        common::enc(env.launcher.fhir_base().as_str())
    );
    let at_ehr = browser.get(&start).await;
    let search = common::smart::approve_standalone(&browser, &at_ehr, "").await;
    assert_eq!(search.status, 200, "{}", search.body);
    assert!(search.body.contains("Choose a patient"));
    let filtered = browser.get(&format!("{}?name=Okafor", search.url)).await;
    assert!(filtered.body.contains("Samuel Okafor") && !filtered.body.contains("Jean Dupont"));
    let csrf = common::smart::hidden_field(&filtered.body, "csrf");
    let choose = search.url.as_str().replace("/visit", "/patient");
    let refused = browser
        .post_form(&choose, &[("csrf", "forged"), ("patient", "pas-p10")])
        .await;
    assert_eq!(refused.status, 400);
    let visit = browser
        .post_form(&choose, &[("csrf", &csrf), ("patient", "pas-p10")])
        .await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    assert!(
        visit.body.contains("Samuel Okafor")
            && visit.body.contains("Referral to food pantry program")
    );
}

#[tokio::test]
async fn a_screening_in_the_patients_language_is_recorded_once_and_shows_on_the_visit_page() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    // Chloé Martin prefers French and was never screened for food.
    let visit = ehr_launch(&env, &browser, "pas-p09").await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    let screen_url = visit
        .url
        .as_str()
        .replace("/visit", "/screen?form=hunger-vital-sign");
    let form = browser.get(&screen_url).await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body.contains("lang=\"fr\""),
        "shown in the patient's language"
    );
    assert!(form.body.contains("Enregistrer le dépistage"));
    let hidden = |name: &str| common::smart::hidden_field(&form.body, name);
    let fields = [
        ("csrf", hidden("csrf")),
        ("screening_id", hidden("screening_id")),
        ("form", "hunger-vital-sign".to_string()),
        ("lang", "fr".to_string()),
        ("88122-7", "LA6729-3".to_string()),
        ("88123-5", "LA28398-8".to_string()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let action = visit.url.as_str().replace("/visit", "/screen");
    let done = browser.post_form(&action, &fields).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("Screening recorded") && done.body.contains("Food insecurity"),
        "{}",
        done.body
    );
    // The same form sent again records nothing more.
    let again = browser.post_form(&action, &fields).await;
    assert_eq!(again.status, 200);
    let qrs = env
        .fhir_json("QuestionnaireResponse?subject=Patient/pas-p09")
        .await;
    assert_eq!(
        qrs["entry"].as_array().map_or(0, Vec::len),
        1,
        "one QuestionnaireResponse"
    );
    // The visit page shows today's positive food screening.
    let after = browser.get(visit.url.as_str()).await;
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let food = after.body.split("Food insecurity</th>").nth(1).unwrap();
    assert!(
        food.contains("Positive") && food.contains(&today),
        "{}",
        &food[..200.min(food.len())]
    );
    // A forged CSRF token records nothing.
    let mut forged = fields.clone();
    forged[0] = ("csrf", "forged");
    assert_eq!(browser.post_form(&action, &forged).await.status, 400);
}

async fn questionnaire_responses(env: &common::smart::SmartEnv, patient: &str) -> usize {
    let r = env
        .fhir_json(&format!("QuestionnaireResponse?subject=Patient/{patient}"))
        .await;
    r["entry"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_screening_the_server_refuses_is_kept_sent_again_and_survives_a_restart() {
    let mut env = common::smart::smart_env_with(common::smart::EnvOptions {
        outbox_every: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    // A proxy between the EHR's FHIR endpoint and hfs fails the transaction.
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    let probe = reqwest::get(format!("{}metadata", env.launcher.fhir_base()))
        .await
        .unwrap();
    assert!(probe.status().is_success());
    assert_eq!(
        proxy.count(),
        1,
        "the launcher now forwards through the proxy"
    );
    proxy.fault("POST /$", common::proxy::Fault::Status(500, String::new()));
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p12").await;
    let saving = post_hunger_vital_sign(&browser, &visit).await;
    assert_eq!(saving.status, 200, "{}", saving.body);
    assert!(
        saving.body.contains("Saved here, sending…"),
        "{:?}",
        proxy.seen()
    );
    assert!(saving.body.contains("The FHIR server failed (500)"));
    assert!(
        saving.body.contains("http-equiv=\"refresh\""),
        "the page updates by itself"
    );
    assert_eq!(questionnaire_responses(&env, "pas-p12").await, 0);
    // The server recovers: the outbox sends it; the page says recorded.
    proxy.clear();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = browser.get(saving.url.as_str()).await;
    assert!(
        status.body.contains("Screening recorded"),
        "{}",
        status.body
    );
    assert_eq!(questionnaire_responses(&env, "pas-p12").await, 1);

    // Failing again, then Passerelle restarts before the server recovers.
    proxy.fault("POST /$", common::proxy::Fault::Status(503, String::new()));
    let visit = ehr_launch(&env, &browser, "pas-p09").await;
    let saving = post_hunger_vital_sign(&browser, &visit).await;
    assert!(
        saving.body.contains("Saved here, sending…"),
        "{}",
        saving.body
    );
    let app = env.app_again().await;
    proxy.clear();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        questionnaire_responses(&env, "pas-p09").await,
        1,
        "the restarted Passerelle sent it"
    );
    let path = saving.url.path().to_string();
    let status = browser.get(&format!("{app}{path}")).await;
    assert_eq!(
        status.status, 403,
        "cookies are per origin: the restarted app on a new port is another site"
    );
}

/// A 200 whose Bundle answers one entry with 412 (as a server that does
/// not roll back may): the screening is not recorded and the outbox keeps it
/// as failed, naming the entry (FHIR R4 http.html#transaction-response).
fn one_entry_precondition_failed(mut response: serde_json::Value) -> serde_json::Value {
    response["entry"][1]["response"] = serde_json::json!({
        "status": "412 Precondition Failed",
        "outcome": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "conflict", "diagnostics": "simulated by the test proxy"}]}
    });
    response
}

#[tokio::test]
async fn a_transaction_answered_200_with_a_failed_entry_is_not_recorded() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let proxy = Proxy::start(env.server.base()).await;
    env.launcher.set_upstream(proxy.base.clone());
    proxy.fault(
        "POST /$",
        common::proxy::Fault::Rewrite(one_entry_precondition_failed),
    );
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p12").await;
    let saving = post_hunger_vital_sign(&browser, &visit).await;
    assert_eq!(saving.status, 200, "{}", saving.body);
    assert!(
        !saving.body.contains("Screening recorded"),
        "{}",
        saving.body
    );
    assert!(
        saving.body.contains("Screening not recorded"),
        "{}",
        saving.body
    );
    assert!(
        saving.body.contains(
            "Bundle.entry[1] (Observation): 412 Precondition Failed (simulated by the test proxy)"
        ),
        "{}",
        saving.body
    );
    let smart = env.settings.smart.as_ref().unwrap();
    let store = passerelle::store::Store::open(&smart.database_url, &smart.session_key)
        .await
        .unwrap();
    let id = saving.url.path().rsplit('/').next().unwrap().to_string();
    let item = store.outbox(&id).await.unwrap().expect("the write is kept");
    assert_eq!(item.status, passerelle::store::OutboxStatus::Failed);
}

#[tokio::test]
async fn a_concern_is_confirmed_into_the_problem_list_and_a_stale_decision_is_refused() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    // Two clinicians open the same chart (Fatima Benali: food insecurity unconfirmed).
    let (first, second) = (Browser::default(), Browser::default());
    let seen_first = ehr_launch(&env, &first, "pas-p06").await;
    let seen_second = ehr_launch(&env, &second, "pas-p06").await;
    let form_of = |page: &Page| {
        let li = page
            .body
            .split("id=\"concern-pas-cond-06b\"")
            .nth(1)
            .expect("the food concern")
            .to_string();
        (
            common::smart::hidden_field(&li, "csrf"),
            common::smart::hidden_field(&li, "version"),
        )
    };
    let action = |page: &Page| page.url.as_str().replace("/visit", "/concern/pas-cond-06b");

    let (csrf, version) = form_of(&seen_first);
    let done = first
        .post_form(
            &action(&seen_first),
            &[
                ("csrf", &csrf),
                ("version", &version),
                ("verdict", "confirm"),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let li = done
        .body
        .split("id=\"concern-pas-cond-06b\"")
        .nth(1)
        .unwrap();
    assert!(
        li.contains("<span class=\"status\">confirmed</span>"),
        "{}",
        &li[..300.min(li.len())]
    );

    // The second clinician still holds the old version.
    let (csrf2, version2) = form_of(&seen_second);
    assert_eq!(version2, version);
    let stale = second
        .post_form(
            &action(&seen_second),
            &[
                ("csrf", &csrf2),
                ("version", &version2),
                ("verdict", "refute"),
            ],
        )
        .await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert!(
        stale
            .body
            .contains("Someone else changed this record first"),
        "{}",
        stale.body
    );
    assert!(stale.body.contains("Reload to see the current version."));
    // Nothing was lost: the confirmation stands, as a problem-list item.
    let c = env.fhir_json("Condition/pas-cond-06b").await;
    assert_eq!(c["verificationStatus"]["coding"][0]["code"], "confirmed");
    assert_eq!(c["category"][0]["coding"][0]["code"], "problem-list-item");
}

#[tokio::test]
async fn domains_screened_within_the_interval_are_shown_with_their_date_and_not_asked_again() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    // María García: food (positive), housing and transportation screened 150 days ago.
    let visit = ehr_launch(&env, &browser, "pas-p01").await;
    let form = browser
        .get(
            &visit
                .url
                .as_str()
                .replace("/visit", "/screen?form=ahc-hrsn-core&lang=en"),
        )
        .await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(form.body.contains("Screened recently, not asked again:"));
    let screened = (time::OffsetDateTime::now_utc().date() - time::Duration::days(150)).to_string();
    assert!(
        form.body
            .contains(&format!("Food insecurity: positive on {screened}")),
        "{}",
        form.body
    );
    assert!(form.body.contains(&format!(
        "Transportation insecurity: negative on {screened}"
    )));
    for not_asked in ["88122-7", "88123-5", "71802-3", "93030-5"] {
        assert!(
            !form.body.contains(&format!("name=\"{not_asked}\"")),
            "{not_asked} is asked again"
        );
    }
    assert!(
        form.body.contains("name=\"96779-4\""),
        "utilities were never screened: asked"
    );
    let hidden = |name: &str| common::smart::hidden_field(&form.body, name);
    let fields = [
        ("csrf", hidden("csrf")),
        ("screening_id", hidden("screening_id")),
        ("form", "ahc-hrsn-core".into()),
        ("lang", "en".into()),
        ("not_asked", hidden("not_asked")),
        ("96779-4", "LA32002-0".into()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser
        .post_form(&visit.url.as_str().replace("/visit", "/screen"), &fields)
        .await;
    assert!(
        done.body.contains("Screening recorded") && done.body.contains("Utility insecurity"),
        "{}",
        done.body
    );
    // Nothing was recorded for the questions not asked.
    let obs = env
        .fhir_json("Observation?subject=Patient/pas-p01&code=http://loinc.org|88122-7")
        .await;
    assert_eq!(
        obs["entry"].as_array().map_or(0, Vec::len),
        1,
        "only the fixture's earlier answer"
    );
}

#[tokio::test]
async fn the_practice_chooses_its_screening_instruments() {
    let env = common::smart::smart_env_with(common::smart::EnvOptions {
        instruments: vec!["hunger-vital-sign".into(), "health-literacy".into()],
        ..Default::default()
    })
    .await;
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p12").await;
    let page = browser
        .get(&visit.url.as_str().replace("/visit", "/screen?lang=en"))
        .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<h1>Hunger Vital Sign</h1>"),
        "the first active instrument is the default"
    );
    assert!(page.body.contains("form=health-literacy"));
    assert!(!page.body.contains("form=prapare") && !page.body.contains("form=ahc-hrsn-core"));
    let refused = browser
        .get(&visit.url.as_str().replace("/visit", "/screen?form=prapare"))
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .body
            .contains("This screening instrument is not used in this practice.")
    );
}

#[tokio::test]
async fn an_open_choice_question_offers_a_free_text_answer_in_the_forms_language() {
    let env = smart_env(ClientAuthMethod::None, HOUR).await;
    let browser = Browser::default();
    let visit = ehr_launch(&env, &browser, "pas-p13").await;
    let page = browser
        .get(
            &visit
                .url
                .as_str()
                .replace("/visit", "/screen?form=language-access&lang=es"),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("Otro: <input type=\"text\" name=\"54899-0\""),
        "{}",
        page.body
    );
}
