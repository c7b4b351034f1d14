//! The web app: shared state, routes, security headers and serving.
//!
//! [`run`] takes an already bound listener, so the tests bind port 0 and
//! start the real server in-process; `passerelle serve` binds the configured
//! address and calls the same function.

mod error;
mod visit;

use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use url::Url;

pub use error::AppError;

use crate::config::ServeArgs;
use crate::domain::coverage::RegimeTable;
use crate::fhir::{FhirClient, Limits};

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    limits: Limits,
    open_servers: Vec<Url>,
    regimes: RegimeTable,
}

/// Everything the app needs to start, already checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub open_servers: Vec<Url>,
    pub frame_ancestors: Vec<String>,
    pub regimes: RegimeTable,
    pub limits: Limits,
}

impl Settings {
    /// Check the command-line settings: a bad regime table or frame ancestor
    /// stops start-up with a clear message instead of failing later.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let regimes = match &args.appeal_regimes {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read the appeal regime table {}: {e}",
                        path.display()
                    )
                })?;
                RegimeTable::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => RegimeTable::shipped(),
        };
        for a in &args.frame_ancestors {
            if a.is_empty() || a.contains([';', ',', ' ', '\'', '"']) {
                anyhow::bail!(
                    "frame ancestor {a:?} is not an origin such as https://ehr.example.org"
                );
            }
        }
        Ok(Settings {
            open_servers: args.open_servers.iter().map(normalise_base).collect(),
            frame_ancestors: args.frame_ancestors.clone(),
            regimes,
            limits: Limits {
                timeout: args.fhir.timeout(),
                max_response_bytes: args.fhir.fhir_max_response_bytes,
            },
        })
    }
}

/// A base URL with exactly one trailing slash, for comparison.
pub fn normalise_base(url: &Url) -> Url {
    let mut u = url.clone();
    let path = format!("{}/", u.path().trim_end_matches('/'));
    u.set_path(&path);
    u.set_query(None);
    u.set_fragment(None);
    u
}

impl AppState {
    pub fn new(settings: &Settings) -> Self {
        AppState {
            inner: Arc::new(Inner {
                http: FhirClient::http_client(),
                limits: settings.limits,
                open_servers: settings.open_servers.clone(),
                regimes: settings.regimes.clone(),
            }),
        }
    }

    /// A client for `iss`, only if it is a listed open server. The check comes
    /// before anything is sent.
    pub fn open_client(&self, iss: &str) -> Result<FhirClient, AppError> {
        let url = Url::parse(iss).map_err(|_| AppError::ServerNotAllowed)?;
        let base = normalise_base(&url);
        if !self.inner.open_servers.contains(&base) {
            return Err(AppError::ServerNotAllowed);
        }
        Ok(FhirClient::new(
            self.inner.http.clone(),
            base,
            self.inner.limits,
        ))
    }

    pub fn open_servers(&self) -> &[Url] {
        &self.inner.open_servers
    }

    pub fn regimes(&self) -> &RegimeTable {
        &self.inner.regimes
    }
}

/// The router with its security headers.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let mut ancestors = vec!["'self'".to_string()];
    ancestors.extend(settings.frame_ancestors.iter().cloned());
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors {}",
        ancestors.join(" ")
    );
    let fixed = |name: HeaderName, value: &str| {
        SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_str(value).expect("static header values are valid"),
        )
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/passerelle.css", get(stylesheet))
        .merge(visit::router())
        .with_state(state)
        .layer(fixed(header::CONTENT_SECURITY_POLICY, &csp))
        .layer(fixed(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Page URLs carry patient ids: never send them on as a Referer.
        .layer(fixed(header::REFERRER_POLICY, "no-referrer"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(
            // Log the route, not the query string (it holds patient ids).
            |req: &axum::http::Request<_>| tracing::info_span!("http", method = %req.method(), path = %req.uri().path()),
        ))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/passerelle.css"),
    )
}

/// Serve on an already bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(&settings);
    let app = router(state, &settings);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `passerelle serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(&args)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(address = %args.listen, open_servers = settings.open_servers.len(), "Passerelle is listening");
    run(listener, settings, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
