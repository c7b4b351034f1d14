//! `/fhir/*`: the FHIR endpoint apps see, a reverse proxy to the real FHIR
//! server (hfs).
//!
//! The method, path (without `/fhir`), query, body and headers go upstream
//! as they came, `Authorization` included: hfs checks the token and its
//! scopes itself, so what an app may do is decided by a real FHIR server and
//! not by this proxy. Hop-by-hop headers and `Host` are not forwarded.
//! hfs is started with the launcher's FHIR base as its public base, so the
//! links and `Location` headers it writes already point here.
//!
//! When the upstream is not set or does not answer, the answer is a FHIR
//! OperationOutcome (503 or 502), which FHIR clients know how to read.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;

use super::State as Shared;

/// One proxied request may take this long.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request body forwarded.
const MAX_BODY: usize = 32 * 1024 * 1024;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/fhir", any(forward))
        .route("/fhir/", any(forward))
        .route("/fhir/{*rest}", any(forward))
}

/// RFC 9110 §7.6.1: headers that concern one connection only.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers to forward: all but hop-by-hop ones, those `Connection` names,
/// `Host` and `Content-Length` (the client library sets both).
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || named.iter().any(|c| c == n)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// A FHIR OperationOutcome answer.
pub fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

async fn forward(State(shared): State<Shared>, req: Request) -> Response {
    let Some(upstream) = shared.upstream() else {
        return outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "The development launcher has no FHIR server behind it yet.",
        );
    };
    let rest = req
        .uri()
        .path()
        .strip_prefix("/fhir")
        .unwrap_or_default()
        .trim_start_matches('/');
    // Appended as text, never `Url::join`: a path such as `http://elsewhere/`
    // must stay a path on the upstream, not become another server.
    let mut target = format!("{upstream}{rest}");
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let target = match url::Url::parse(&target) {
        Ok(t) if t.origin() == upstream.origin() => t,
        _ => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                "This is not a FHIR URL.",
            );
        }
    };
    let method = req.method().clone();
    let headers = forwarded(req.headers());
    let body = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return outcome(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                "The request body is too large for the development launcher.",
            );
        }
    };
    let answer = shared
        .http
        .request(method, target)
        .headers(headers)
        .body(body)
        .timeout(TIMEOUT)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "the FHIR server behind the launcher did not answer"
            );
            return outcome(
                StatusCode::BAD_GATEWAY,
                "transient",
                "The FHIR server behind the development launcher did not answer.",
            );
        }
    };
    let status = answer.status();
    let headers = forwarded(answer.headers());
    let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hop_by_hop_host_and_named_headers_are_dropped_authorization_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("launcher"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/fhir+json"),
        );
        let out = forwarded(&h);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[header::AUTHORIZATION], "Bearer x");
        assert_eq!(out[header::ACCEPT], "application/fhir+json");
    }
}
