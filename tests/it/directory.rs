//! The resource directory loaded from an HSDS 3 API served in-process: the
//! shipped fixture's services as paged `/services` (list entries stripped of
//! every nested part) and full records at `/services/{id}`. Then the cache:
//! fresh (no request), stale (the API down), absent (a clear error); and
//! broken or hostile servers, which must fail clearly and quickly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use passerelle::config::DirectoryArgs;
use passerelle::directory::{
    ApiLimits, ApiSource, DirectoryError, DirectorySource, Loaded, Origin, cache_path, load,
};
use passerelle::domain::directory::{Directory, Query as Search, SHIPPED_DIRECTORY};
use passerelle::domain::sdoh::Domain;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use url::Url;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How the test API behaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    /// The fixture, 10 services a page whatever `per_page` asks.
    Hsds,
    /// HTTP 500 for everything.
    Error500,
    /// `/services` answers text that is not JSON.
    Malformed,
    /// A new page of new services forever, never the last.
    Endless,
    /// Claims a billion pages.
    BillionPages,
    /// The same first page whatever `page` asks, never the last.
    IgnoresPage,
    /// Accepts the request and never answers.
    Hangs,
    /// An answer of 1 MiB.
    Huge,
}

struct Api {
    mode: Mode,
    full: Vec<Value>,
    requests: AtomicUsize,
}

struct Server {
    base: Url,
    api: Arc<Api>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn requests(&self) -> usize {
        self.api.requests.load(Ordering::SeqCst)
    }

    /// Stop serving and wait until the port is closed.
    async fn stop(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            panic!("the test API did not stop");
        }
    }
}

fn fixture_services() -> Vec<Value> {
    let file: Value = serde_json::from_str(SHIPPED_DIRECTORY).unwrap();
    file["services"].as_array().unwrap().clone()
}

/// A list entry as the HSDS API reference allows it: one-to-one fields only.
fn stripped(service: &Value) -> Value {
    Value::Object(
        service
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !v.is_array() && !v.is_object())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn page_of(contents: Vec<Value>, page: usize, total_items: usize, total_pages: usize) -> Value {
    json!({
        "total_items": total_items,
        "total_pages": total_pages,
        "page_number": page,
        "size": contents.len(),
        "first_page": page == 1,
        "last_page": page >= total_pages,
        "empty": contents.is_empty(),
        "contents": contents,
    })
}

async fn list(State(api): State<Arc<Api>>, Query(q): Query<HashMap<String, String>>) -> Response {
    api.requests.fetch_add(1, Ordering::SeqCst);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    match api.mode {
        Mode::Hsds => {
            const SIZE: usize = 10;
            let pages = api.full.len().div_ceil(SIZE);
            let contents = api
                .full
                .iter()
                .skip((page - 1) * SIZE)
                .take(SIZE)
                .map(stripped)
                .collect();
            axum::Json(page_of(contents, page, api.full.len(), pages)).into_response()
        }
        Mode::Error500 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Mode::Malformed => "<html>maintenance</html>".into_response(),
        Mode::Endless => {
            let mut body = page_of(
                vec![json!({"id": format!("endless-{page}"), "name": "x", "status": "inactive"})],
                page,
                usize::MAX,
                0,
            );
            body["last_page"] = json!(false);
            body.as_object_mut().unwrap().remove("total_pages");
            axum::Json(body).into_response()
        }
        Mode::BillionPages => axum::Json(page_of(
            vec![stripped(&api.full[0])],
            page,
            10_000_000_000,
            1_000_000_000,
        ))
        .into_response(),
        Mode::IgnoresPage => {
            let mut body = page_of(vec![stripped(&api.full[0])], 1, 100, 100);
            body["last_page"] = json!(false);
            body.as_object_mut().unwrap().remove("total_pages");
            axum::Json(body).into_response()
        }
        Mode::Hangs => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "too late".into_response()
        }
        Mode::Huge => "x".repeat(1024 * 1024).into_response(),
    }
}

async fn one(State(api): State<Arc<Api>>, UrlPath(id): UrlPath<String>) -> Response {
    api.requests.fetch_add(1, Ordering::SeqCst);
    if api.mode == Mode::Error500 {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match api.full.iter().find(|s| s["id"] == id.as_str()) {
        Some(s) => axum::Json(s.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// An HSDS API on a free loopback port, under `/hsds/`.
async fn serve(mode: Mode) -> Server {
    let api = Arc::new(Api {
        mode,
        full: fixture_services(),
        requests: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/hsds/services", get(list))
        .route("/hsds/services/{id}", get(one))
        .with_state(api.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Server {
        base: Url::parse(&format!("http://{addr}/hsds/")).unwrap(),
        api,
        stop,
        task,
    }
}

/// A fresh cache folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "passerelle-directory-test-{:016x}",
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn api(base: &Url, cache: &TempDir, ttl: Duration) -> DirectorySource {
    DirectorySource::Api(ApiSource {
        base: base.clone(),
        cache_dir: cache.path().join("directory"),
        ttl,
        limits: ApiLimits {
            timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
            max_response_bytes: 256 * 1024,
            max_pages: 20,
            ..ApiLimits::default()
        },
    })
}

/// A new client each time, so no pooled connection outlives a stopped server.
async fn load_from(source: &DirectorySource) -> Result<Loaded, DirectoryError> {
    let http = reqwest::Client::new();
    tokio::time::timeout(Duration::from_secs(30), load(&http, source))
        .await
        .expect("the load ends by itself")
}

fn food(directory: &Directory) -> Vec<(String, Option<u64>)> {
    let hits = directory.search(&Search {
        domain: Some(Domain::FoodInsecurity),
        near_postal_code: Some("62702"),
        include_full: true,
        ..Default::default()
    });
    hits.iter()
        .map(|h| (h.service.id.clone(), h.km.map(|k| (k * 1000.0) as u64)))
        .collect()
}

#[tokio::test]
async fn the_api_gives_the_shipped_directory_and_a_fresh_cache_needs_no_request() {
    let server = serve(Mode::Hsds).await;
    let cache = TempDir::new();
    let source = api(&server.base, &cache, DAY);
    let shipped = Directory::shipped();

    let loaded = load_from(&source).await.unwrap();
    assert_eq!(
        loaded.origin,
        Origin::Api {
            url: server.base.to_string()
        }
    );
    assert_eq!(loaded.services, shipped.services.len());
    assert_eq!(loaded.services, 54);
    assert_eq!(loaded.directory.services, shipped.services);
    let found = food(&loaded.directory);
    assert!(found.len() >= 6, "{found:?}");
    assert_eq!(found, food(&shipped));
    assert_eq!(
        loaded.directory.search(&Search {
            domain: Some(Domain::FoodInsecurity),
            near_postal_code: Some("62702"),
            ..Default::default()
        }),
        shipped.search(&Search {
            domain: Some(Domain::FoodInsecurity),
            near_postal_code: Some("62702"),
            ..Default::default()
        })
    );
    // 6 pages of 10, then each of the 54 stripped entries' full record.
    assert_eq!(server.requests(), 6 + 54);

    let file = cache_path(&cache.path().join("directory"), &server.base);
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(cached["services"].as_array().unwrap().len(), 54);
    assert_eq!(
        cached["services"][0]["attributes"],
        fixture_services()[0]["attributes"]
    );
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    let again = load_from(&source).await.unwrap();
    assert!(
        matches!(again.origin, Origin::FreshCache { ref url, age } if *url == server.base.to_string() && age < DAY),
        "{:?}",
        again.origin
    );
    assert_eq!(server.requests(), 6 + 54, "the fresh cache made no request");
    assert_eq!(again.directory.services, shipped.services);
    assert_eq!(food(&again.directory), food(&shipped));
    server.stop().await;
}

#[tokio::test]
async fn with_the_api_down_an_expired_cache_is_used() {
    let server = serve(Mode::Hsds).await;
    let cache = TempDir::new();
    let base = server.base.clone();
    let first = load_from(&api(&base, &cache, Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(first.origin, Origin::Api { .. }));
    // TTL 0: even a cache written a moment ago is expired and refetched.
    let second = load_from(&api(&base, &cache, Duration::ZERO))
        .await
        .unwrap();
    assert!(
        matches!(second.origin, Origin::Api { .. }),
        "{:?}",
        second.origin
    );
    assert_eq!(server.requests(), 2 * (6 + 54));
    server.stop().await;

    let stale = load_from(&api(&base, &cache, Duration::ZERO))
        .await
        .unwrap();
    match &stale.origin {
        Origin::StaleCache { url, cause, .. } => {
            assert_eq!(url, base.as_str());
            assert!(cause.contains("cannot connect"), "{cause}");
        }
        other => panic!("expected the stale cache, got {other:?}"),
    }
    assert!(stale.origin.to_string().starts_with("a stale cache of"));
    assert_eq!(stale.services, 54);
    assert_eq!(food(&stale.directory), food(&Directory::shipped()));
}

#[tokio::test]
async fn with_no_cache_an_unreachable_api_is_an_error_naming_the_url() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let base = Url::parse(&format!(
        "http://reader:s3cret@127.0.0.1:{port}/hsds/?api_key=t0ken"
    ))
    .unwrap();
    let cache = TempDir::new();
    let err = load_from(&api(&base, &cache, DAY)).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("http://127.0.0.1:{port}/hsds/")),
        "{text}"
    );
    assert!(text.contains("cannot connect"), "{text}");
    assert!(text.contains("no cached copy"), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("t0ken") && !text.contains("reader"),
        "no credentials in the message: {text}"
    );
    assert!(
        !cache.path().join("directory").exists(),
        "nothing was cached"
    );
}

#[tokio::test]
async fn broken_servers_give_clear_errors_quickly() {
    let cases = [
        (Mode::Error500, "HTTP 500"),
        (Mode::Malformed, "not an HSDS Page"),
        (Mode::Endless, "more than 20 pages"),
        (Mode::BillionPages, "1000000000 pages"),
        (Mode::IgnoresPage, "repeats services already listed"),
        (Mode::Hangs, "no complete answer within 2 s"),
        (Mode::Huge, "larger than 262144 bytes"),
    ];
    for (mode, expected) in cases {
        let server = serve(mode).await;
        let cache = TempDir::new();
        let started = std::time::Instant::now();
        let err = load_from(&api(&server.base, &cache, DAY))
            .await
            .expect_err(&format!("{mode:?} fails"));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot load the resource directory from {}",
                server.base
            )),
            "{mode:?}: {text}"
        );
        assert!(text.contains(expected), "{mode:?}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode:?} took {:?}",
            started.elapsed()
        );
        match mode {
            Mode::Endless => assert_eq!(server.requests(), 20, "stopped at the page limit"),
            Mode::IgnoresPage => assert_eq!(server.requests(), 2),
            _ => assert_eq!(server.requests(), 1),
        }
        assert!(!cache.path().join("directory").exists());
        if mode == Mode::Hangs {
            server.task.abort();
        } else {
            server.stop().await;
        }
    }
}

#[tokio::test]
async fn a_file_or_the_shipped_directory_and_one_source_only() {
    let cache = TempDir::new();
    let file = cache.path().join("hsds.json");
    let services: Vec<Value> = fixture_services().into_iter().take(5).collect();
    std::fs::write(&file, json!({ "services": services }).to_string()).unwrap();
    let loaded = load_from(&DirectorySource::File(file.clone()))
        .await
        .unwrap();
    assert_eq!(loaded.origin, Origin::File(file.clone()));
    assert_eq!(loaded.services, 5);

    let missing = cache.path().join("absent.json");
    let err = load_from(&DirectorySource::File(missing.clone()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let shipped = load_from(&DirectorySource::Shipped).await.unwrap();
    assert_eq!(shipped.origin, Origin::Shipped);
    assert_eq!(shipped.services, 54);

    let args = |url: Option<&str>, file: Option<&Path>| DirectoryArgs {
        directory_url: url.map(|u| Url::parse(u).unwrap()),
        directory_file: file.map(Path::to_path_buf),
        directory_cache_hours: 24,
        directory_cache_dir: Some(cache.path().to_path_buf()),
    };
    assert!(matches!(
        DirectorySource::from_args(&args(Some("https://hsds.example.org/"), Some(&file))),
        Err(DirectoryError::BothSources)
    ));
    assert!(matches!(
        DirectorySource::from_args(&args(None, None)),
        Ok(DirectorySource::Shipped)
    ));
    match DirectorySource::from_args(&args(Some("https://hsds.example.org/"), None)) {
        Ok(DirectorySource::Api(a)) => {
            assert_eq!(a.ttl, DAY);
            assert_eq!(a.cache_dir, cache.path());
        }
        other => panic!("{other:?}"),
    }
    let err = load_from(&api(
        &Url::parse("ftp://hsds.example.org/").unwrap(),
        &cache,
        DAY,
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DirectoryError::BadUrl(_)), "{err}");
}
