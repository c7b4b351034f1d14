//! One redirect URI per EHR (RFC 9700 §4.4.2, the mix-up defence): each EHR
//! of the allow-list sends and is answered at `{app}/callback/{key}`, an
//! answer at another EHR's callback is refused before any request, and the
//! shared `{app}/callback` serves only a lone EHR configured for it.

use crate::common;

use common::smart::{
    Browser, EnvOptions, SmartEnv, authorize_at_ehr, begin_launch, ehr_launch, field, query,
    smart_env_with,
};
use serde_json::json;

/// The launcher's EHR and a second one on the allow-list, never reached:
/// only its callback, `{app}/callback/other`, is used.
async fn two_ehrs() -> SmartEnv {
    smart_env_with(EnvOptions {
        other_ehrs: vec![json!({
            "name": "Other EHR",
            "iss": "https://other-ehr.example.org/fhir",
            "client_id": "passerelle",
            "client_auth": "none",
            "id": "other",
        })],
        ..EnvOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_launch_goes_out_and_comes_back_with_its_ehrs_own_redirect_uri() {
    let env = two_ehrs().await;
    let port = env.launcher.base().port().unwrap();
    assert_eq!(
        env.redirect_uri.as_str(),
        format!("{}/callback/127-0-0-1-{port}-fhir", env.app),
        "derived from the EHR's iss"
    );
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("María José García"), "the visit page");
    let authorize = page
        .trail
        .iter()
        .find(|u| u.path().ends_with("/authorize"))
        .unwrap();
    assert_eq!(
        query(authorize, "redirect_uri").as_deref(),
        Some(env.redirect_uri.as_str())
    );
    assert!(
        page.trail
            .iter()
            .any(|u| u.path() == env.redirect_uri.path()),
        "answered at its own callback: {:?}",
        page.trail
    );
    // The launcher takes a code only with the redirect_uri of its
    // authorization request (RFC 6749 §4.1.3): the launch above proves the
    // token request sent the same one.
    assert_eq!(env.stored("launches").await, 1);
}

#[tokio::test]
async fn an_answer_for_one_ehr_at_anothers_callback_is_refused_and_leaves_no_session() {
    let env = two_ehrs().await;
    let browser = Browser::default();
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    assert_eq!(field(&fields, "redirect_uri"), env.redirect_uri.as_str());
    let back = authorize_at_ehr(&browser, &action, &fields).await;
    assert_eq!(back.path(), env.redirect_uri.path());
    assert_eq!(env.stored("launch_state").await, 1);

    // The same code and state, delivered to the other EHR's callback.
    let mut elsewhere = back.clone();
    elsewhere.set_path("/callback/other");
    let page = browser.get(elsewhere.as_str()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body.contains(
            "The answer to this sign-in came back to another EHR's address than the one it was sent with, so it may have been relayed from another EHR; the sign-in was refused and nothing was sent."
        ),
        "{}",
        page.body
    );
    assert_eq!(env.stored("launches").await, 0, "no session");
    assert_eq!(env.stored("launch_state").await, 0, "the state is used up");
    // Used up: the genuine answer cannot follow the relayed one.
    let again = browser.get(back.as_str()).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("was already used"), "{}", again.body);

    // With two EHRs the shared callback names none: refused the same way.
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let mut shared = authorize_at_ehr(&browser, &action, &fields).await;
    shared.set_path("/callback");
    let page = browser.get(shared.as_str()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("came back to another EHR's address"));
    // An unknown key, too.
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let mut unknown = authorize_at_ehr(&browser, &action, &fields).await;
    unknown.set_path("/callback/no-such-ehr");
    assert_eq!(browser.get(unknown.as_str()).await.status, 403);
    assert_eq!(env.stored("launches").await, 0, "still no session");
}

#[tokio::test]
async fn a_lone_ehr_with_legacy_callback_launches_through_the_shared_callback() {
    let env = smart_env_with(EnvOptions {
        legacy_callback: true,
        ..EnvOptions::default()
    })
    .await;
    assert_eq!(env.redirect_uri.as_str(), format!("{}/callback", env.app));
    let browser = Browser::default();
    let page = ehr_launch(&env, &browser, "pas-p01").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("María José García"));
    assert!(page.trail.iter().any(|u| u.path() == "/callback"));
    // Its answers are taken at the shared callback only.
    let (action, fields) = begin_launch(&env, &browser, "pas-p01").await;
    let mut keyed = authorize_at_ehr(&browser, &action, &fields).await;
    let port = env.launcher.base().port().unwrap();
    keyed.set_path(&format!("/callback/127-0-0-1-{port}-fhir"));
    let page = browser.get(keyed.as_str()).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(env.stored("launches").await, 1, "the first launch only");
}
