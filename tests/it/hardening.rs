//! What a slow or hostile client meets: a connection that sends its headers
//! too slowly is closed, a request that takes too long is answered, a loop
//! of launches is refused before it stores anything or reaches the EHR, and
//! the page that sends the authorization request is framed by its EHR only.

use crate::common;

use std::time::{Duration, Instant};

use common::AppOptions;
use common::proxy::{Fault, Proxy};
use common::smart::{EnvOptions, smart_env_with};
use passerelle::http::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

/// The app alone, its one open server `base`, with these client limits.
async fn app_with(base: &Url, server: ServerLimits) -> (String, tokio::sync::oneshot::Sender<()>) {
    common::start_app(
        base,
        AppOptions {
            server,
            ..AppOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off_and_others_are_served() {
    let nowhere = Url::parse("http://127.0.0.1:9/fhir/").unwrap();
    let (app, _stop) = app_with(
        &nowhere,
        ServerLimits {
            header_read_timeout: Duration::from_secs(1),
            ..ServerLimits::default()
        },
    )
    .await;
    let mut slow = tokio::net::TcpStream::connect(app.trim_start_matches("http://"))
        .await
        .unwrap();
    // Half a request, then nothing: the headers never end.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: passerelle\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(
        matches!(closed, Ok(Ok(_))),
        "the server closes the connection of a client that never finishes its headers"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("200 OK"),
        "nothing is served to it: {answer}"
    );
    eprintln!("slow client cut off after {:?}", started.elapsed());

    // A client that sends its request at once is served as usual.
    let ok = reqwest::get(format!("{app}/healthz")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_503_and_requests_beyond_the_cap_wait_their_turn() {
    // A FHIR server that never answers, and a FHIR timeout longer than the
    // request deadline: the deadline answers first.
    let nowhere = Url::parse("http://127.0.0.1:9/fhir/").unwrap();
    let proxy = Proxy::start(&nowhere).await;
    proxy.fault("/", Fault::Hang);
    let (app, _stop) = common::start_app(
        &proxy.base,
        AppOptions {
            limits: passerelle::fhir::Limits {
                timeout: Duration::from_secs(30),
                ..passerelle::fhir::Limits::default()
            },
            server: ServerLimits {
                request_timeout: Duration::from_secs(1),
                max_in_flight: 1,
                ..ServerLimits::default()
            },
            ..AppOptions::default()
        },
    )
    .await;
    let started = Instant::now();
    let hanging = tokio::spawn(reqwest::get(format!(
        "{app}/launch/open?iss={}&patient=pas-p01",
        common::enc(proxy.base.as_str())
    )));
    // One request in flight at most: the next one waits for its turn, which
    // comes when the first one's deadline (1 s) frees the slot.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = reqwest::get(format!("{app}/healthz")).await.unwrap();
    let queued_at = started.elapsed();
    assert_eq!(queued.status(), 200);
    assert!(
        queued_at >= Duration::from_millis(990),
        "served only once the hanging request let go of the one slot: {queued_at:?}"
    );
    let page = hanging.await.unwrap().unwrap();
    let waited = started.elapsed();
    assert_eq!(page.status(), 503);
    let html = page.text().await.unwrap();
    assert!(html.contains("could not answer within 1 s"), "{html}");
    assert!(
        waited < Duration::from_secs(30),
        "answered by the deadline, not the FHIR timeout: {waited:?}"
    );
    eprintln!("request deadline answered after {waited:?}");
    assert!(proxy.count() >= 1, "the FHIR server was asked");
    let after = reqwest::get(format!("{app}/healthz")).await.unwrap();
    assert_eq!(after.status(), 200, "the slot is free again");
}

#[tokio::test]
async fn a_launch_flood_is_refused_past_the_rate_and_leaves_the_store_bounded() {
    let env = smart_env_with(EnvOptions {
        server: ServerLimits {
            launches_per_minute: 5,
            ..ServerLimits::default()
        },
        ..EnvOptions::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let iss = env.launcher.fhir_base();
    let mut statuses = Vec::new();
    for i in 0..40 {
        let answer = http
            .get(format!(
                "{}/launch?iss={}&launch=flood-{i}",
                env.app,
                common::enc(iss.as_str())
            ))
            .send()
            .await
            .unwrap();
        if i == 0 {
            // The authorize-POST page may be framed by the launching EHR
            // only, never by any site.
            assert_eq!(answer.status(), 200);
            let csp = answer.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_string();
            let ancestors = csp.split("frame-ancestors ").nth(1).unwrap();
            assert_eq!(
                ancestors,
                format!(
                    "'self' {}",
                    env.launcher.base().origin().ascii_serialization()
                ),
                "{csp}"
            );
        }
        if answer.status() == 429 {
            let wait: u64 = answer.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "Retry-After {wait}");
            let page = answer.text().await.unwrap();
            assert!(page.contains("Too many sign-ins"), "{page}");
            statuses.push(429);
        } else {
            statuses.push(answer.status().as_u16());
        }
    }
    // Sent on to the EHR: a redirect, or the launcher's authorize-POST page.
    let admitted = statuses
        .iter()
        .filter(|s| **s == 200 || (300..400).contains(*s))
        .count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(
        (admitted, refused),
        (5, 35),
        "five go to the EHR, the rest wait: {statuses:?}"
    );
    let kept = env.stored("launch_state").await;
    assert_eq!(kept, 5, "only the admitted launches are stored");
}
