//! A fault-injecting HTTP proxy in front of a real FHIR server: it adds
//! latency, answers with an error, a malformed or an oversize body, or
//! hangs, for requests whose path matches a rule; it counts what it sees.
//! The tests use it to put real failures between Passerelle and hfs; the
//! benchmark uses it to add 50 ms to every FHIR request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use url::Url;

/// What to do instead of forwarding.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and body.
    Status(u16, String),
    /// Answer 200 with this (malformed or wrong) body.
    Body(String),
    /// Answer 200 with a body of this many bytes.
    Huge(usize),
    /// Never answer (until the client gives up).
    Hang,
    /// Forward, then replace the response body with `f(body)`.
    Rewrite(fn(serde_json::Value) -> serde_json::Value),
    /// Forward (the server does the work), then never answer: a lost response.
    ForwardThenHang,
    /// Forward, then add this text at the end of the body (a line more in
    /// an NDJSON file).
    Append(&'static str),
    /// Refuse (400, an OperationOutcome saying so) a Bundle of more entries
    /// than this, as a server that caps them; forward smaller ones.
    EntriesOver(usize),
    /// Forward a Bundle with only its first this-many entries (the server
    /// applies them), then answer 503: a server that failed part-way
    /// through a transaction it did not apply as one unit.
    ForwardFirst(usize),
}

#[derive(Default)]
struct Rules {
    delay: Duration,
    /// (needle, fault, how many more times; `None` for always)
    faults: Vec<(String, Fault, Option<usize>)>,
}

#[derive(Clone)]
struct Shared {
    target: Url,
    http: reqwest::Client,
    rules: Arc<Mutex<Rules>>,
    count: Arc<AtomicUsize>,
    /// Requests the target has answered in full (counted once its answer's
    /// body is read, whether or not the client still waits for it).
    answered: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

/// A running proxy.
pub struct Proxy {
    pub base: Url,
    shared: Shared,
}

impl Proxy {
    /// Start a proxy in front of `target` (a FHIR base URL).
    pub async fn start(target: &Url) -> Proxy {
        let shared = Shared {
            target: target.clone(),
            http: reqwest::Client::builder()
                .pool_idle_timeout(passerelle::fhir::POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
            rules: Arc::default(),
            count: Arc::default(),
            answered: Arc::default(),
            seen: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let app = Router::new().fallback(forward).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Proxy { base, shared }
    }

    /// Add `delay` to every request.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.rules.lock().unwrap().delay = delay;
    }

    /// Apply `fault` to requests whose path and query contain `needle`, or,
    /// for a needle such as `POST /$`, whose method and path are exactly it.
    pub fn fault(&self, needle: &str, fault: Fault) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .faults
            .push((needle.to_string(), fault, None));
    }

    /// [`Self::fault`], for the next `times` matching requests only.
    pub fn fault_times(&self, needle: &str, fault: Fault, times: usize) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .faults
            .push((needle.to_string(), fault, Some(times)));
    }

    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().faults.clear();
    }

    /// Requests seen so far.
    pub fn count(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// `METHOD path?query` of every request seen.
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn reset_count(&self) {
        self.shared.count.store(0, Ordering::SeqCst);
    }

    /// Wait until the target has answered `n` requests in all (for a
    /// [`Fault::ForwardThenHang`]: the server has finished with the request
    /// the client gave up on); panics after `within`.
    pub async fn wait_answered(&self, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.shared.answered.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the target answered {} of {n} requests within {within:?}",
                self.shared.answered.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn forward(State(s): State<Shared>, req: Request) -> Response {
    s.count.fetch_add(1, Ordering::SeqCst);
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let exact = format!("{} {}", req.method(), path_and_query);
    s.seen.lock().unwrap().push(exact.clone());
    let (delay, fault) = {
        let mut rules = s.rules.lock().unwrap();
        let fault = rules
            .faults
            .iter_mut()
            .find(|(n, _, left)| {
                *left != Some(0)
                    && match n.strip_suffix('$') {
                        Some(whole) => exact == whole,
                        None => path_and_query.contains(n.as_str()),
                    }
            })
            .map(|(_, f, left)| {
                if let Some(left) = left {
                    *left -= 1;
                }
                f.clone()
            });
        (rules.delay, fault)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(Fault::Status(status, body)) => {
            return (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/fhir+json")],
                body,
            )
                .into_response();
        }
        Some(Fault::Body(body)) => {
            return ([("content-type", "application/fhir+json")], body).into_response();
        }
        Some(Fault::Huge(n)) => {
            let body = format!(
                "{{\"resourceType\":\"Patient\",\"text\":\"{}\"}}",
                "x".repeat(n)
            );
            return ([("content-type", "application/fhir+json")], body).into_response();
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        _ => {}
    }
    let target = s
        .target
        .join(path_and_query.trim_start_matches('/'))
        .unwrap();
    let method = req.method().clone();
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers() {
        if k != "host" && k != "content-length" {
            headers.insert(k.clone(), v.clone());
        }
    }
    let mut body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
    if let Some(Fault::EntriesOver(cap) | Fault::ForwardFirst(cap)) = &fault
        && let Ok(mut bundle) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(entries) = bundle["entry"].as_array_mut()
    {
        let n = entries.len();
        if let Some(Fault::EntriesOver(_)) = &fault
            && n > *cap
        {
            let outcome = operation_outcome(&format!(
                "a Bundle of {n} entries: this server accepts at most {cap}"
            ));
            return (StatusCode::BAD_REQUEST, outcome).into_response();
        }
        if let Some(Fault::ForwardFirst(_)) = &fault {
            entries.truncate(*cap);
            body = serde_json::to_vec(&bundle).unwrap().into();
        }
    }
    let request = s.http.request(method, target).headers(headers).body(body);
    if let Some(Fault::ForwardThenHang) = fault {
        // The target gets the whole request and answers it even after the
        // client gives up (a dropped connection would let the server cancel
        // it): only the answer is lost.
        let answered = s.answered.clone();
        tokio::spawn(async move {
            if let Ok(r) = request.send().await {
                let _ = r.bytes().await;
            }
            answered.fetch_add(1, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("test proxy: the target did not answer: {e:?}");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = upstream.status();
    let mut out_headers = upstream.headers().clone();
    out_headers.remove("content-length");
    out_headers.remove("transfer-encoding");
    let mut bytes = upstream.bytes().await.unwrap_or_default().to_vec();
    s.answered.fetch_add(1, Ordering::SeqCst);
    if let Some(Fault::ForwardFirst(k)) = fault {
        let outcome = operation_outcome(&format!("failed after entry {k}"));
        return (StatusCode::SERVICE_UNAVAILABLE, outcome).into_response();
    }
    if let Some(Fault::Rewrite(f)) = fault
        && let Ok(v) = serde_json::from_slice(&bytes)
    {
        bytes = serde_json::to_vec(&f(v)).unwrap();
    }
    if let Some(Fault::Append(text)) = fault {
        bytes.extend_from_slice(text.as_bytes());
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    response
}

/// An error OperationOutcome with `diagnostics`, as a FHIR server answers.
fn operation_outcome(diagnostics: &str) -> impl IntoResponse + use<> {
    (
        [("content-type", "application/fhir+json")],
        serde_json::json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "too-costly", "diagnostics": diagnostics}]})
        .to_string(),
    )
}
