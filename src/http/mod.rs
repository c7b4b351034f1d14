//! The web app: shared state, routes, security headers and serving.
//!
//! [`run`] takes an already bound listener, so the tests bind port 0 and
//! start the real server in-process; `passerelle serve` binds the configured
//! address and calls the same function.
//!
//! One module per feature, each with its routes and pages:
//!
//! * `launch`: SMART launches (EHR, standalone), the callback, logout, JWKS;
//! * `visit`: the visit page (of a launch, or on an open server);
//! * `screen`: the screening form and its result, concerns confirmed or refuted;
//! * `refer`: referrals to community services, tasks for the patient;
//! * `appeal`: appeals of denials;
//! * `task`: a Task's page and its status changes;
//! * `letter`: letters drafted from the chart, stored, printed;
//! * `queue`: the coordinators' queue, its live updates and digest;
//! * `patterns`: the practice's measures and their de-identified export.
//!
//! A feature module uses only the shared leaves below, never another
//! feature, so each can be read (and changed) on its own:
//!
//! * `extract`: the launch of a request (axum extractors), CSRF and write ids;
//! * `outbox`: writes kept and sent through the outbox, and their fate;
//! * `clock`: today and now, in UTC;
//! * `error`: rendered pages, and errors as pages with their status.
//!
//! The FHIR reads and writes are [`crate::fhir`]'s: no module here decodes
//! a FHIR resource.

mod appeal;
mod clock;
mod error;
mod extract;
mod launch;
mod letter;
mod outbox;
mod patterns;
mod queue;
mod refer;
mod screen;
mod server;
mod task;
mod visit;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use url::Url;

pub use error::AppError;
pub use server::ServerLimits;

use crate::auth::keys::SigningKey;
use crate::auth::session::Sessions;
use crate::auth::smart::{EhrConfig, SmartClient};
use crate::config::{ServeArgs, SmartArgs};
use crate::domain::coverage::RegimeTable;
use crate::domain::directory::Directory;
use crate::domain::letter::LetterTemplates;
use crate::fhir::{FhirClient, Limits, SchemaValidator};
use crate::store::Store;

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
    sessions: Option<Arc<Sessions>>,
    schema: Option<SchemaValidator>,
    screening_interval_days: i64,
    screening_instruments: Vec<String>,
    directory: Arc<Directory>,
    letters: Arc<LetterTemplates>,
    /// The coordinators' queue of each EHR with Backend Services, by iss.
    queues: HashMap<String, Arc<crate::queue::Queue>>,
    launches: server::LaunchLimiter,
    /// Origins every page may be framed by (`PASSERELLE_FRAME_ANCESTORS`).
    frame_ancestors: Vec<String>,
    practice_organization: Option<String>,
    /// Whether this instance leads the queue's sync: always with SQLite,
    /// the holder of the advisory lock with PostgreSQL ([`crate::cluster`]).
    leading: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Everything the app needs to start, already checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub open_servers: Vec<Url>,
    pub frame_ancestors: Vec<String>,
    pub regimes: RegimeTable,
    pub limits: Limits,
    /// SMART App Launch, when EHRs are configured.
    pub smart: Option<SmartSettings>,
    /// The R4 schema every write is validated against; without it writes are refused.
    pub schema: Option<SchemaValidator>,
    /// How often the outbox resends pending writes.
    pub outbox_every: std::time::Duration,
    /// Deadlines and caps on what clients may hold.
    pub server: ServerLimits,
    /// A domain screened within this many days is not asked again.
    pub screening_interval_days: i64,
    /// Active screening instruments (Questionnaire ids); the first is the default.
    pub screening_instruments: Vec<String>,
    /// The community resource directory referrals are made to.
    pub directory: Arc<Directory>,
    /// The letter templates (the shipped ones, or the practice's edited copies).
    pub letters: Arc<LetterTemplates>,
    /// `Organization/<id>` of the practice (`PASSERELLE_PRACTICE_ORGANIZATION`).
    pub practice_organization: Option<String>,
}

/// SMART settings, checked.
#[derive(Clone)]
pub struct SmartSettings {
    pub ehrs: Vec<EhrConfig>,
    pub public_url: Url,
    pub session_key: [u8; 32],
    pub keys: Vec<SigningKey>,
    pub database_url: String,
    pub idle: std::time::Duration,
}

impl std::fmt::Debug for SmartSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartSettings")
            .field("ehrs", &self.ehrs.len())
            .field("public_url", &self.public_url.as_str())
            .finish()
    }
}

impl SmartSettings {
    /// Read the SMART arguments: the allow-list file, keys (generated when
    /// not given), the session key (random when not given).
    pub fn from_args(
        args: &SmartArgs,
        listen: std::net::SocketAddr,
    ) -> anyhow::Result<Option<Self>> {
        let Some(path) = &args.ehrs else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the EHR list {}: {e}", path.display()))?;
        let ehrs: Vec<EhrConfig> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("the EHR list {} is not valid: {e}", path.display()))?;
        for ehr in &ehrs {
            for a in &ehr.frame_ancestors {
                check_frame_ancestor(a).map_err(|e| {
                    anyhow::anyhow!("the EHR list {}, EHR {:?}: {e}", path.display(), ehr.name)
                })?;
            }
        }
        let public_url = match &args.public_url {
            Some(u) => u.clone(),
            None => Url::parse(&format!("http://{listen}/"))?,
        };
        let session_key = match &args.session_key {
            Some(k) => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(k.trim_end_matches('='))
                    .map_err(|_| anyhow::anyhow!("PASSERELLE_SESSION_KEY is not base64url"))?;
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| anyhow::anyhow!("PASSERELLE_SESSION_KEY must be 32 bytes"))?
            }
            None if !in_memory(&args.database_url) => anyhow::bail!(
                "PASSERELLE_SESSION_KEY is required with a database file or PostgreSQL ({}): without it each start \
                 makes a new key, and the launches and the writes kept in the outbox could no longer \
                 be read. Make one with: openssl rand -base64 32 | tr '+/' '-_' | tr -d '='",
                crate::store::redacted(&args.database_url)
            ),
            None => {
                tracing::warn!(
                    "no PASSERELLE_SESSION_KEY: a random one is used for the in-memory store; launches end at restart"
                );
                random_key()
            }
        };
        let keys = vec![
            signing_key(
                "PASSERELLE_SIGNING_KEY_ES384",
                args.signing_key_es384.as_deref(),
                "passerelle-es384",
                jsonwebtoken::Algorithm::ES384,
            )?,
            signing_key(
                "PASSERELLE_SIGNING_KEY_RS384",
                args.signing_key_rs384.as_deref(),
                "passerelle-rs384",
                jsonwebtoken::Algorithm::RS384,
            )?,
        ];
        Ok(Some(SmartSettings {
            ehrs,
            public_url,
            session_key,
            keys,
            database_url: args.database_url.clone(),
            idle: std::time::Duration::from_secs(args.idle_minutes.max(1) * 60),
        }))
    }
}

/// The signing key of setting `var`: its PEM or the path of a PEM file
/// ([`SigningKey::from_pem_or_path`]), generated when unset. A bad value is
/// an error naming the variable (never quoting the value, a private key).
fn signing_key(
    var: &str,
    value: Option<&str>,
    kid: &str,
    alg: jsonwebtoken::Algorithm,
) -> anyhow::Result<SigningKey> {
    Ok(match value {
        Some(v) => {
            SigningKey::from_pem_or_path(kid, alg, v).map_err(|e| anyhow::anyhow!("{var}: {e}"))?
        }
        None => match alg {
            jsonwebtoken::Algorithm::ES384 => SigningKey::generate_es384(kid)?,
            _ => SigningKey::generate_rsa(kid, alg)?,
        },
    })
}

/// 32 random bytes.
pub fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
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
            check_frame_ancestor(a)
                .map_err(|e| anyhow::anyhow!("PASSERELLE_FRAME_ANCESTORS: {e}"))?;
        }
        Ok(Settings {
            open_servers: args.open_servers.iter().map(normalise_base).collect(),
            frame_ancestors: args.frame_ancestors.clone(),
            practice_organization: match &args.practice_organization {
                Some(o) if !crate::fhir::people::is_organization_reference(o) => {
                    anyhow::bail!(
                        "PASSERELLE_PRACTICE_ORGANIZATION: {o:?} is not Organization/<id>"
                    )
                }
                o => o.clone(),
            },
            regimes,
            limits: Limits {
                timeout: args.fhir.timeout(),
                max_response_bytes: args.fhir.fhir_max_response_bytes,
                ..Limits::default()
            },
            smart: SmartSettings::from_args(&args.smart, args.listen)?,
            outbox_every: std::time::Duration::from_secs(10),
            server: ServerLimits::from(&args.server),
            screening_interval_days: args.screening_interval_days,
            screening_instruments: {
                let known =
                    crate::fhir::questionnaire::shipped().map_err(|e| anyhow::anyhow!(e))?;
                for id in &args.screening_instruments {
                    if !known.contains_key(id) {
                        anyhow::bail!(
                            "unknown screening instrument {id:?}; known: {}",
                            known.keys().cloned().collect::<Vec<_>>().join(", ")
                        );
                    }
                }
                args.screening_instruments.clone()
            },
            directory: Arc::new(Directory::shipped()),
            letters: Arc::new(match &args.letter_templates {
                Some(dir) => LetterTemplates::load(dir)
                    .map_err(|e| anyhow::anyhow!("the letter templates: {e}"))?,
                None => LetterTemplates::shipped(),
            }),
            schema: match SchemaValidator::load(&args.fhir.definitions_dir()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "writes will be refused");
                    None
                }
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
    /// Build the state; with SMART settings, open the store and check the allow-list.
    pub async fn new(settings: &Settings) -> anyhow::Result<Self> {
        let sessions = match &settings.smart {
            Some(smart) => {
                let store = Store::open(&smart.database_url, &smart.session_key).await?;
                let client = SmartClient::new(
                    smart.ehrs.clone(),
                    smart.keys.clone(),
                    smart.public_url.clone(),
                )?;
                for ehr in client.ehrs() {
                    tracing::info!(
                        ehr = %ehr.config.name,
                        redirect_uri = %ehr.redirect_uri(),
                        "the redirect URI to register at this EHR"
                    );
                }
                Some(Sessions::new(store, Arc::new(client), smart.idle))
            }
            None => None,
        };
        let shared = sessions
            .as_ref()
            .is_some_and(|s| s.store().backend() == crate::store::Backend::Postgres);
        let queues = settings
            .smart
            .iter()
            .flat_map(|s| s.ehrs.iter().map(move |e| (e, &s.session_key)))
            .filter(|(e, _)| e.backend.is_some())
            .map(|(e, key)| {
                let iss = normalise_base(&e.iss).to_string();
                let queue = crate::queue::Queue::new(&iss, key, settings.schema.clone());
                (iss, queue)
            })
            .collect();
        Ok(AppState {
            inner: Arc::new(Inner {
                http: FhirClient::http_client(),
                limits: settings.limits,
                open_servers: settings.open_servers.clone(),
                regimes: settings.regimes.clone(),
                sessions,
                schema: settings.schema.clone(),
                screening_interval_days: settings.screening_interval_days,
                screening_instruments: settings.screening_instruments.clone(),
                directory: settings.directory.clone(),
                letters: settings.letters.clone(),
                queues,
                launches: server::launch_limiter(settings.server.launches_per_minute),
                frame_ancestors: settings.frame_ancestors.clone(),
                practice_organization: settings.practice_organization.clone(),
                // One instance on SQLite: it leads. With PostgreSQL, not until
                // it holds the lock.
                leading: Arc::new(tokio::sync::watch::channel(!shared).0),
            }),
        })
    }

    /// What `/healthz/queue` says: whether this instance leads, and each
    /// queue's size and the syncs this instance ran (no patient data).
    fn queue_health(&self) -> serde_json::Value {
        let queues: Vec<serde_json::Value> = self
            .inner
            .queues
            .values()
            .map(|q| {
                serde_json::json!({
                    "iss": q.iss,
                    "leading": q.is_leading(),
                    "tasks": q.len(),
                    "syncs": q.sync_state().syncs,
                })
            })
            .collect();
        serde_json::json!({
            "leader": *self.inner.leading.borrow(),
            "queues": queues,
        })
    }

    /// The CSP `frame-ancestors` sources of a page of the EHR `ehr`'s
    /// launch: Passerelle itself, the practice's list and that EHR's own
    /// origins; never another EHR's, never any site.
    pub fn frame_ancestors_for(&self, ehr: &[String]) -> String {
        frame_ancestor_sources(&self.inner.frame_ancestors, ehr)
    }

    /// Refuse a launch from `ip` beyond its quota (see [`server::LaunchLimiter`]).
    pub fn admit_launch(&self, ip: std::net::IpAddr) -> Result<(), AppError> {
        match server::launch_wait(&self.inner.launches, ip) {
            None => Ok(()),
            Some(secs) => Err(AppError::TooManyLaunches(secs)),
        }
    }

    /// SMART sessions, when EHRs are configured.
    pub fn sessions(&self) -> Result<&Arc<Sessions>, AppError> {
        self.inner.sessions.as_ref().ok_or_else(|| {
            AppError::NotConfigured(
                "No EHR is configured for SMART launches on this Passerelle (PASSERELLE_EHRS).",
            )
        })
    }

    /// The schema validator; writes are refused when it is not installed.
    pub fn schema(&self) -> Result<&SchemaValidator, AppError> {
        self.inner.schema.as_ref().ok_or_else(|| {
            AppError::NotConfigured("The FHIR R4 schema is not installed (PASSERELLE_DEFINITIONS_DIR), so Passerelle refuses to write.")
        })
    }

    pub fn screening_instruments(&self) -> &[String] {
        &self.inner.screening_instruments
    }

    pub fn screening_interval_days(&self) -> i64 {
        self.inner.screening_interval_days
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
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

    /// `Organization/<id>` of the practice, when configured.
    pub fn practice_organization(&self) -> Option<&str> {
        self.inner.practice_organization.as_deref()
    }

    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    pub fn letters(&self) -> &LetterTemplates {
        &self.inner.letters
    }

    /// The queue whose notification endpoint has this secret.
    pub fn queue_by_hook(&self, secret: &str) -> Option<&Arc<crate::queue::Queue>> {
        self.inner
            .queues
            .values()
            .find(|q| crate::auth::same_secret(&q.hook_secret, secret))
    }

    /// The queue of the EHR `iss`, when it has Backend Services configured.
    pub fn queue(&self, iss: &str) -> Option<&Arc<crate::queue::Queue>> {
        let base = normalise_base(&Url::parse(iss).ok()?).to_string();
        self.inner.queues.get(&base)
    }
}

/// A SQLite store that lives in memory only (and dies with the process).
fn in_memory(database_url: &str) -> bool {
    database_url.contains(":memory:") || database_url.contains("mode=memory")
}

/// A frame ancestor goes into the Content-Security-Policy header as it is
/// written, so it must be an origin (`https://ehr.example.org`, a port
/// allowed) and nothing else: a space, `;` or `,` would let a configuration
/// file add sources or whole directives to the policy.
pub fn check_frame_ancestor(a: &str) -> Result<(), String> {
    let refused =
        || format!("frame ancestor {a:?} is not an origin such as https://ehr.example.org");
    let url = Url::parse(a).map_err(|_| refused())?;
    let origin = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "https" | "http") || a.trim_end_matches('/') != origin {
        return Err(refused());
    }
    Ok(())
}

/// CSP `frame-ancestors` sources: Passerelle itself, the practice's list,
/// then `ehrs`' origins, each once.
fn frame_ancestor_sources(practice: &[String], ehrs: &[String]) -> String {
    let mut sources = vec!["'self'".to_string()];
    for s in practice.iter().chain(ehrs) {
        if !sources.contains(s) {
            sources.push(s.clone());
        }
    }
    sources.join(" ")
}

/// The router with its security headers.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let every_ehr: Vec<String> = settings
        .smart
        .iter()
        .flat_map(|s| &s.ehrs)
        .flat_map(|ehr| ehr.frame_ancestors.iter().cloned())
        .collect();
    let csp = format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors {}",
        frame_ancestor_sources(&settings.frame_ancestors, &every_ehr)
    );
    let request_timeout = settings.server.request_timeout;
    let fixed = |name: HeaderName, value: &str| {
        SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_str(value).expect("static header values are valid"),
        )
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/healthz/queue",
            get(
                |axum::extract::State(state): axum::extract::State<AppState>| async move {
                    axum::Json(state.queue_health())
                },
            ),
        )
        .route("/static/passerelle.css", get(stylesheet))
        .route("/static/autosubmit.js", get(autosubmit))
        .route("/static/enable-when.js", get(enable_when))
        .route("/static/queue.js", get(queue_js))
        .merge(visit::router())
        .merge(launch::router())
        .merge(screen::router())
        .merge(refer::router())
        .merge(appeal::router())
        .merge(task::router())
        .merge(letter::router())
        .merge(queue::router())
        .merge(patterns::router())
        .with_state(state)
        // One semaphore for every route; the time spent waiting for it
        // counts towards the deadline around it.
        .layer(GlobalConcurrencyLimitLayer::new(
            settings.server.max_in_flight.max(1),
        ))
        .layer(axum::middleware::from_fn(move |request, next| {
            server::deadline(request_timeout, request, next)
        }))
        // A page may set its own policy (the authorize-POST page allows its form's target).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&csp).expect("valid header"),
        ))
        .layer(fixed(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Page URLs carry patient ids: never send them on as a Referer.
        .layer(fixed(header::REFERRER_POLICY, "no-referrer"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                // Log the route template, never the path (it holds launch ids,
                // task ids and the notification secret) nor the query.
                |req: &axum::http::Request<_>| {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|m| m.as_str().to_string())
                        .unwrap_or_else(|| "(no route)".into());
                    tracing::info_span!("http", method = %req.method(), route = %route)
                },
            ),
        )
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

async fn autosubmit() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        "document.getElementById('autosubmit').submit();\n",
    )
}

async fn queue_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/queue.js"),
    )
}

async fn enable_when() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/enable-when.js"),
    )
}

/// Serve on an already bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = AppState::new(&settings).await?;
    let worker = state.inner.sessions.clone().map(|sessions| {
        tokio::spawn(crate::outbox::worker(
            sessions,
            state.http().clone(),
            state.limits(),
            settings.outbox_every,
        ))
    });
    // Expired authorizations and idle launches are forgotten every minute,
    // so a flood of unfinished launches cannot fill the disk.
    let sweeper = state.inner.sessions.clone().map(|sessions| {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                every.tick().await;
                server::forget_quiet_addresses(&state.inner.launches);
                match sessions.sweep().await {
                    Ok((0, 0)) => {}
                    Ok((states, launches)) => {
                        tracing::info!(states, launches, "expired launches forgotten")
                    }
                    Err(e) => tracing::warn!(error = %e, "the store could not be swept"),
                }
            }
        })
    });
    let mut pollers: Vec<_> = match &state.inner.sessions {
        Some(sessions) => state
            .inner
            .queues
            .iter()
            .map(|(iss, queue)| {
                let smart = sessions.smart_shared();
                // The patterns view reads with the queue's client: this
                // EHR's Bulk Data settings go with its limits.
                let mut limits = state.limits();
                // (Checked when the EHRs were loaded.)
                if let Some(Ok(bulk)) = smart
                    .ehr(iss)
                    .ok()
                    .and_then(|e| e.config.backend.as_ref())
                    .map(|b| b.bulk())
                {
                    limits.bulk = bulk;
                }
                tokio::spawn(crate::queue::run_for(
                    smart,
                    iss.clone(),
                    queue.clone(),
                    state.http().clone(),
                    limits,
                    settings.smart.as_ref().map(|s| s.public_url.clone()),
                    state.inner.leading.subscribe(),
                ))
            })
            .collect(),
        None => vec![],
    };
    // Several instances on PostgreSQL: one leads the queue's sync, every
    // one shares its queue changes and follows the others'.
    if let Some(sessions) = &state.inner.sessions
        && sessions.store().backend() == crate::store::Backend::Postgres
        && !state.inner.queues.is_empty()
    {
        let store = sessions.store().clone();
        pollers.push(tokio::spawn(crate::cluster::lead(
            store.clone(),
            state.inner.leading.clone(),
        )));
        for queue in state.inner.queues.values() {
            pollers.push(tokio::spawn(crate::cluster::publish(
                store.clone(),
                queue.clone(),
                queue.share(),
            )));
        }
        pollers.push(tokio::spawn(crate::cluster::follow(
            store,
            state.inner.queues.values().cloned().collect(),
        )));
    }
    let app = router(state, &settings);
    let served = server::serve(listener, app, settings.server, shutdown).await;
    for w in worker.into_iter().chain(sweeper) {
        w.abort();
    }
    for p in pollers {
        p.abort();
    }
    served?;
    Ok(())
}

/// `passerelle serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::from_args(&args)?;
    // The directory is read once, here: from an HSDS API (cached), a file, or the shipped one.
    let source = crate::directory::DirectorySource::from_args(&args.directory)?;
    let loaded = crate::directory::load(&FhirClient::http_client(), &source).await?;
    tracing::info!(services = loaded.services, source = %loaded.origin, "resource directory loaded");
    settings.directory = Arc::new(loaded.directory);
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

#[cfg(test)]
mod tests {
    use super::{check_frame_ancestor, signing_key};
    use jsonwebtoken::Algorithm;

    #[test]
    fn a_signing_key_setting_is_a_pem_or_a_path_and_a_bad_one_names_its_variable() {
        use p384::pkcs8::{EncodePrivateKey, LineEnding};
        let pem = p384::SecretKey::random(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string();
        let var = "PASSERELLE_SIGNING_KEY_ES384";
        let from_pem = signing_key(var, Some(&pem), "k", Algorithm::ES384).unwrap();
        let one_line = pem.trim_end().replace('\n', "\\n");
        let escaped = signing_key(var, Some(&one_line), "k", Algorithm::ES384).unwrap();
        let path = std::env::temp_dir().join(format!(
            "passerelle-key-{}.pem",
            crate::auth::keys::random_token(8)
        ));
        std::fs::write(&path, &pem).unwrap();
        let from_file =
            signing_key(var, Some(path.to_str().unwrap()), "k", Algorithm::ES384).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_pem.public_jwk(), from_file.public_jwk());
        assert_eq!(from_pem.public_jwk(), escaped.public_jwk());

        let missing = signing_key(var, Some("/nonexistent/key.pem"), "k", Algorithm::ES384)
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with(
                "PASSERELLE_SIGNING_KEY_ES384: the key file /nonexistent/key.pem cannot be read"
            ),
            "{missing}"
        );
        let rsa_var = "PASSERELLE_SIGNING_KEY_RS384";
        let not_rsa = signing_key(rsa_var, Some(&pem), "k", Algorithm::RS384)
            .unwrap_err()
            .to_string();
        assert!(
            not_rsa.starts_with(
                "PASSERELLE_SIGNING_KEY_RS384: the private key is not a valid RSA PEM key"
            ),
            "{not_rsa}"
        );
        assert!(!not_rsa.contains("BEGIN"), "the key is never quoted");
    }

    #[test]
    fn a_frame_ancestor_is_an_origin_and_nothing_that_could_extend_the_policy() {
        for ok in [
            "https://ehr.example.org",
            "http://127.0.0.1:41233",
            "https://ehr.example.org/",
        ] {
            assert!(check_frame_ancestor(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*",
            "https://ehr.example.org; script-src *",
            "https://ehr.example.org https://evil.example",
            "https://a.example,https://b.example",
            "https://ehr.example.org/path",
            "javascript:alert(1)",
            "'self'",
        ] {
            assert!(check_frame_ancestor(bad).is_err(), "{bad:?} refused");
        }
    }
}
