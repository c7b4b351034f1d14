//! The development EHR launcher: a small authorization server and EHR stand-in,
//! in the spirit of the SMART App Launcher, so that Passerelle's SMART client
//! is tested and demonstrated against real tokens that a real FHIR server
//! enforces.
//!
//! It plays three parts at one address (`http://127.0.0.1:PORT/`):
//!
//! * the **EHR** (`pages`): `/` lists the FHIR server's patients, `/ehr`
//!   shows one of them in a "Development EHR" page that makes a launch
//!   context and frames the app at `{app_launch_url}?iss=…&launch=…`;
//! * the **authorization server** (`oauth`, `client_auth`): SMART App
//!   Launch 2.2.0 discovery, `/authorize` (EHR launch auto-approved,
//!   standalone launch through a picker page), `/token` (authorization code
//!   with PKCE S256, refresh with rotation, client credentials), `/revoke`
//!   (RFC 7009) and `/jwks`; public, `client_secret_basic`,
//!   `client_secret_post` and
//!   `private_key_jwt` clients;
//! * the **FHIR endpoint** (`proxy`): `/fhir/` forwards every request,
//!   its `Authorization` header untouched, to the real FHIR server (hfs),
//!   which checks the launcher's RS256 tokens against `/jwks` and enforces
//!   their SMART v2 scopes itself.
//!
//! Tokens, as hfs is told to expect them ([`Launcher::hfs_auth`]):
//!
//! * `iss` = [`Launcher::issuer`], the base URL without its trailing slash
//!   (`http://127.0.0.1:PORT`), also the `issuer` of both discovery documents;
//! * `aud` = [`Launcher::audience`], the FHIR base without its trailing slash
//!   (`http://127.0.0.1:PORT/fhir`). Apps are given `iss` = [`Launcher::fhir_base`]
//!   (with the slash) and may send either form as the authorize `aud`;
//! * `scope` = the grant, resource scopes in v2 syntax (see `scopes`);
//!   `patient`, `encounter`, `fhirUser`, `client_id` when they apply.
//!
//! [`Simulation`] switches make the launcher misbehave the way real EHRs do
//! (a client refused, a redirect URI not registered, expired tokens, a
//! smaller grant, v1-only scopes, no discovery document), so the client's
//! handling of each is tested.
//!
//! Authorization responses carry `iss` (RFC 9207) and discovery says so.
//! `id_token`s carry the request's `nonce`, and may be signed without a
//! `kid` ([`LauncherConfig::id_token_without_kid`]).
//!
//! Everything is in memory and lost when the launcher stops. It signs with a
//! key made at start-up. It is a development tool: never put it in front
//! of real patient data.

mod client_auth;
mod oauth;
mod pages;
mod proxy;
mod scopes;
mod store;
mod upstream;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, header};
use jsonwebtoken::Algorithm;
use secrecy::SecretString;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::set_header::SetResponseHeaderLayer;
use url::Url;

use crate::config::LauncherArgs;
use crate::hfs::HfsAuth;
use passerelle::auth::keys::{KeyError, SigningKey, random_token};
use store::Store;

/// Access tokens live this long unless configured otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// What the launcher is started with.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    pub clients: Vec<RegisteredClient>,
    /// EHR launch target: the EHR page frames `{app_launch_url}?iss={fhir_base}&launch={code}`.
    pub app_launch_url: Url,
    /// Lifetime of access tokens (default [`DEFAULT_TOKEN_LIFETIME`]).
    pub token_lifetime: Duration,
    /// Sign `id_token`s without a `kid` header, as an issuer with a single
    /// key may (OpenID Connect Core §10.1); access tokens keep theirs.
    pub id_token_without_kid: bool,
}

impl LauncherConfig {
    /// A configuration with the default token lifetime.
    pub fn new(app_launch_url: Url, clients: Vec<RegisteredClient>) -> Self {
        LauncherConfig {
            clients,
            app_launch_url,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            id_token_without_kid: false,
        }
    }
}

/// A client the launcher knows, as registered with an EHR.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    /// Compared exactly (as parsed URLs) with the `redirect_uri` of requests.
    pub redirect_uris: Vec<Url>,
    pub auth: ClientAuth,
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `client_id` in the form, no secret (PKCE protects the code).
    Public,
    /// `client_secret_basic`: HTTP Basic with this secret.
    SecretBasic(SecretString),
    /// `client_secret_post`: `client_id` and `client_secret` in the form.
    SecretPost(SecretString),
    /// `private_key_jwt` (RS384 or ES384), keys fetched from the client's JWKS.
    PrivateKeyJwt { jwks_url: Url },
}

impl ClientAuth {
    fn method(&self) -> &'static str {
        match self {
            ClientAuth::Public => "none",
            ClientAuth::SecretBasic(_) => "client_secret_basic",
            ClientAuth::SecretPost(_) => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
        }
    }
}

/// Ways the launcher can misbehave on purpose, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simulation {
    /// Behave.
    None,
    /// The token endpoint refuses every client (401 `invalid_client`).
    InvalidClient,
    /// No `redirect_uri` counts as registered: `/authorize` shows an error page.
    WrongRedirectUri,
    /// Access tokens are already expired (`expires_in` 0) and come without a
    /// refresh token.
    ExpiredToken,
    /// The grant loses every create, update and delete, and `offline_access`.
    DowngradedScopes,
    /// Discovery does not announce `permission-v2` and v2 scopes are not granted.
    V1Only,
    /// `/.well-known/smart-configuration` answers 404.
    MissingWellKnown,
    /// A user's access token reads one patient's records only
    /// ([`RESTRICTED_USER_PATIENT`]) although the grant says `user/`: as an
    /// EHR hides the patients of other departments, or confidential ones,
    /// from a user. The FHIR server behind enforces the token's scopes.
    RestrictedUser,
}

/// The one patient a [`Simulation::RestrictedUser`] token may read.
pub const RESTRICTED_USER_PATIENT: &str = "pas-p01";

impl Simulation {
    /// Every switch, in the order the pages show them.
    pub const ALL: [Simulation; 8] = [
        Simulation::None,
        Simulation::InvalidClient,
        Simulation::WrongRedirectUri,
        Simulation::ExpiredToken,
        Simulation::DowngradedScopes,
        Simulation::V1Only,
        Simulation::MissingWellKnown,
        Simulation::RestrictedUser,
    ];

    /// The name used in `?sim=` and on the pages.
    pub fn as_str(self) -> &'static str {
        match self {
            Simulation::None => "none",
            Simulation::InvalidClient => "invalid-client",
            Simulation::WrongRedirectUri => "wrong-redirect-uri",
            Simulation::ExpiredToken => "expired-token",
            Simulation::DowngradedScopes => "downgraded-scopes",
            Simulation::V1Only => "v1-only",
            Simulation::MissingWellKnown => "missing-well-known",
            Simulation::RestrictedUser => "restricted-user",
        }
    }

    /// What it does, in a few words, for the pages.
    pub fn describe(self) -> &'static str {
        match self {
            Simulation::None => "behave normally",
            Simulation::InvalidClient => "the token endpoint refuses every client",
            Simulation::WrongRedirectUri => "no redirect URI counts as registered",
            Simulation::ExpiredToken => "access tokens arrive expired, without refresh token",
            Simulation::DowngradedScopes => "grants lose writes and offline_access",
            Simulation::V1Only => "SMART v1 scopes only (no permission-v2)",
            Simulation::MissingWellKnown => "no .well-known/smart-configuration (404)",
            Simulation::RestrictedUser => {
                "a user's token reads one patient's records only (pas-p01), whatever the grant says"
            }
        }
    }
}

impl std::fmt::Display for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Simulation {
    type Err = LauncherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Simulation::ALL
            .into_iter()
            .find(|sim| sim.as_str() == s)
            .ok_or_else(|| LauncherError::UnknownSimulation(s.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("the launcher's signing key could not be made: {0}")]
    Key(#[from] KeyError),
    #[error("the launcher's listener has no local address: {0}")]
    Address(std::io::Error),
    #[error("the launcher's HTTP client could not be made: {0}")]
    HttpClient(String),
    #[error("client {0:?} is registered twice")]
    DuplicateClient(String),
    #[error("client {0:?} has no redirect URI")]
    NoRedirectUri(String),
    #[error("{0:?} is not a simulation; choose one of {names}", names = simulation_names())]
    UnknownSimulation(String),
}

/// Every simulation's name, for the error that lists them.
fn simulation_names() -> String {
    Simulation::ALL.map(Simulation::as_str).join(", ")
}

/// What every handler shares.
pub(crate) struct Shared {
    base: Url,
    clients: Vec<RegisteredClient>,
    app_launch_url: Url,
    token_lifetime: Duration,
    id_token_without_kid: bool,
    key: SigningKey,
    /// For the upstream FHIR server and the clients' JWKS; never follows
    /// redirects (the proxy hands them to the caller).
    http: reqwest::Client,
    upstream: Mutex<Option<Url>>,
    simulation: Mutex<Simulation>,
    store: Mutex<Store>,
    /// Token requests with `grant_type=refresh_token`, granted or not.
    refresh_requests: std::sync::atomic::AtomicUsize,
    /// How long the token endpoint takes to answer a refresh.
    refresh_delay: Mutex<Duration>,
}

type State = Arc<Shared>;

/// A lock that survives a panicked holder: the data are plain maps.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Shared {
    fn issuer(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    fn fhir_base(&self) -> Url {
        self.base.join("fhir/").expect("valid URL")
    }

    fn audience(&self) -> String {
        self.fhir_base().as_str().trim_end_matches('/').to_string()
    }

    fn endpoint(&self, path: &str) -> Url {
        self.base.join(path).expect("valid URL")
    }

    fn client(&self, id: &str) -> Option<&RegisteredClient> {
        self.clients.iter().find(|c| c.client_id == id)
    }

    fn upstream(&self) -> Option<Url> {
        lock(&self.upstream).clone()
    }

    fn simulation(&self) -> Simulation {
        *lock(&self.simulation)
    }

    pub(crate) fn refresh_delay(&self) -> Duration {
        *lock(&self.refresh_delay)
    }

    fn set_simulation(&self, sim: Simulation) {
        if sim != self.simulation() {
            tracing::info!(simulation = %sim, "launcher simulation switched");
        }
        *lock(&self.simulation) = sim;
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// A signed access token for the launcher itself (`sub` "launcher").
    fn system_token(&self, scope: &str) -> String {
        let now = unix_now();
        let claims = json!({
            "iss": self.issuer(),
            "sub": "launcher",
            "aud": self.audience(),
            "iat": now,
            "exp": now + self.token_lifetime.as_secs(),
            "jti": random_token(16),
            "scope": scopes::claim_form(scope),
            "client_id": "launcher",
        });
        self.key
            .sign(&claims)
            .expect("an RSA key made at start-up signs")
    }
}

/// A running launcher. It serves in a spawned task and stops when this
/// handle is dropped or [`Launcher::shutdown`] is called.
pub struct Launcher {
    shared: State,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Launcher {
    /// Serve on an already bound listener.
    pub async fn start(
        listener: TcpListener,
        config: LauncherConfig,
    ) -> Result<Launcher, LauncherError> {
        for (i, c) in config.clients.iter().enumerate() {
            if config.clients[..i]
                .iter()
                .any(|o| o.client_id == c.client_id)
            {
                return Err(LauncherError::DuplicateClient(c.client_id.clone()));
            }
            if c.redirect_uris.is_empty() {
                return Err(LauncherError::NoRedirectUri(c.client_id.clone()));
            }
        }
        let addr = listener.local_addr().map_err(LauncherError::Address)?;
        let base = base_url(addr);
        // A kid of its own per start: hfs caches keys by kid, so a restarted
        // launcher must not reuse the kid of a key hfs still holds.
        let kid = format!("launcher-rs256-1-{}", random_token(6));
        // RSA key generation takes a while; keep it off the async workers.
        let key =
            tokio::task::spawn_blocking(move || SigningKey::generate_rsa(&kid, Algorithm::RS256))
                .await
                .map_err(|e| KeyError::Generate(e.to_string()))??;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Below the 5 s after which Node servers (Medplum) close idle
            // connections: see `passerelle::fhir::POOL_IDLE_TIMEOUT`.
            .pool_idle_timeout(passerelle::fhir::POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| LauncherError::HttpClient(e.to_string()))?;
        let shared = Arc::new(Shared {
            base,
            clients: config.clients,
            app_launch_url: config.app_launch_url,
            token_lifetime: config.token_lifetime,
            id_token_without_kid: config.id_token_without_kid,
            key,
            http,
            upstream: Mutex::new(None),
            simulation: Mutex::new(Simulation::None),
            store: Mutex::new(Store::default()),
            refresh_requests: Default::default(),
            refresh_delay: Mutex::new(Duration::ZERO),
        });
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the launcher stopped serving");
            }
        });
        Ok(Launcher {
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The FHIR base (`iss`) a launcher started on `listener` will give
    /// apps, known before it starts: an app's EHR entry, and so its
    /// redirect URI, are made from it before the launcher registers that URI.
    pub fn fhir_base_of(listener: &TcpListener) -> Result<Url, LauncherError> {
        let addr = listener.local_addr().map_err(LauncherError::Address)?;
        Ok(base_url(addr).join("fhir/").expect("valid URL"))
    }

    /// `http://127.0.0.1:PORT/`
    pub fn base(&self) -> &Url {
        &self.shared.base
    }

    /// The base without its trailing slash: the `iss` of every token it signs.
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    /// `{base}fhir/`: the `iss` apps are given; proxies to the upstream.
    pub fn fhir_base(&self) -> Url {
        self.shared.fhir_base()
    }

    /// The `aud` of every access token: the FHIR base without its trailing
    /// slash (`http://127.0.0.1:PORT/fhir`). Tell hfs exactly this.
    pub fn audience(&self) -> String {
        self.shared.audience()
    }

    /// `{base}jwks`
    pub fn jwks_url(&self) -> Url {
        self.shared.endpoint("jwks")
    }

    /// What hfs must be started with to accept this launcher's tokens.
    pub fn hfs_auth(&self) -> HfsAuth {
        HfsAuth {
            jwks_url: self.jwks_url(),
            issuer: self.issuer(),
            audience: Some(self.audience()),
            token: Some(self.system_token("system/*.cruds")),
        }
    }

    /// The real FHIR server behind `/fhir/` (set once hfs has started).
    pub fn set_upstream(&self, url: Url) {
        *lock(&self.shared.upstream) = Some(passerelle::http::normalise_base(&url));
    }

    pub fn simulate(&self, sim: Simulation) {
        self.shared.set_simulation(sim);
    }

    /// Make the token endpoint take `delay` to answer each refresh, as a
    /// slow authorization server does: long enough for two instances to
    /// want the same launch's refresh at once.
    pub fn delay_refreshes(&self, delay: Duration) {
        *lock(&self.shared.refresh_delay) = delay;
    }

    /// How many refresh-token requests the token endpoint has had, granted
    /// or refused: what a test of "refreshed once" counts.
    pub fn refresh_requests(&self) -> usize {
        self.shared
            .refresh_requests
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Revoke every refresh token issued so far, as an EHR does when a
    /// user's authorization is withdrawn: the next refresh is refused
    /// (`invalid_grant`).
    pub fn revoke_refresh_tokens(&self) {
        self.shared.store().revoke_all_refresh();
    }

    /// The EHR page that makes a launch context and frames the app.
    pub fn ehr_url(&self, patient: &str, encounter: Option<&str>, practitioner: &str) -> Url {
        let mut url = self.shared.endpoint("ehr");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("patient", patient);
            if let Some(e) = encounter {
                q.append_pair("encounter", e);
            }
            q.append_pair("practitioner", practitioner);
        }
        url
    }

    /// A signed access token (`sub` "launcher", `client_id` "launcher", the
    /// given scope in v2 syntax), for seeding and tests.
    pub fn system_token(&self, scope: &str) -> String {
        self.shared.system_token(scope)
    }

    /// Stop serving and wait (a few seconds at most) for open requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The URL others reach a listener at (an unspecified address means loopback).
fn base_url(addr: SocketAddr) -> Url {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Url::parse(&format!("http://{}/", SocketAddr::new(ip, addr.port()))).expect("valid URL")
}

/// Every route, with the security headers. Pages set their own CSP (the EHR
/// page frames the app, the picker's form ends at the client's redirect URI).
fn router(shared: State) -> Router {
    let fixed = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    Router::new()
        .merge(pages::router())
        .merge(oauth::router())
        .merge(proxy::router())
        // Log the route, never the path or query: they hold patient ids,
        // codes and tokens.
        .route_layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default();
                    tracing::info_span!("launcher", method = %req.method(), route = %route)
                },
            ),
        )
        .with_state(shared)
        .layer(fixed(header::CONTENT_SECURITY_POLICY, pages::DEFAULT_CSP))
        .layer(fixed(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(fixed(header::REFERRER_POLICY, "no-referrer"))
        .layer(fixed(header::CACHE_CONTROL, "no-store"))
}

/// `passerelle-dev launcher`: serve until Ctrl-C.
pub async fn run(args: LauncherArgs) -> anyhow::Result<ExitCode> {
    let auth = match (args.client_jwks_url, args.client_secret) {
        (Some(_), Some(_)) => anyhow::bail!(
            "give the client either a JWKS URL (private_key_jwt) or a secret (client_secret_basic), not both"
        ),
        (Some(jwks_url), None) => ClientAuth::PrivateKeyJwt { jwks_url },
        (None, Some(secret)) if args.client_secret_post => {
            ClientAuth::SecretPost(SecretString::from(secret))
        }
        (None, Some(secret)) => ClientAuth::SecretBasic(SecretString::from(secret)),
        (None, None) => ClientAuth::Public,
    };
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e} (choose another with --listen)",
            args.listen
        )
    })?;
    let redirect_uris = if args.redirect_uri.is_empty() {
        vec![default_redirect_uri(
            &args.app_launch_url,
            &Launcher::fhir_base_of(&listener)?,
        )?]
    } else {
        args.redirect_uri
    };
    for uri in &redirect_uris {
        tracing::info!(redirect_uri = %uri, "registered redirect URI");
    }
    let mut config = LauncherConfig::new(
        args.app_launch_url,
        vec![RegisteredClient {
            client_id: args.client_id,
            redirect_uris,
            auth,
        }],
    );
    config.id_token_without_kid = args.id_token_without_kid;
    let launcher = Launcher::start(listener, config).await?;
    launcher.set_upstream(args.fhir_upstream);
    let auth = launcher.hfs_auth();
    tracing::info!(
        jwks = %auth.jwks_url,
        issuer = %auth.issuer,
        audience = auth.audience.as_deref().unwrap_or_default(),
        "for a FHIR server that checks the launcher's tokens: HFS_AUTH_JWKS_URL, HFS_AUTH_ISSUER, HFS_AUTH_AUDIENCE"
    );
    println!(
        "Development EHR launcher is ready: open {} (FHIR base for apps: {})",
        launcher.base(),
        launcher.fhir_base()
    );
    passerelle::http::shutdown_signal().await;
    launcher.shutdown().await;
    println!("Development EHR launcher stopped.");
    Ok(ExitCode::SUCCESS)
}

/// The redirect URI Passerelle sends for an EHR entry with this
/// launcher's FHIR base as `iss` and no `id`, at the app whose launch URL
/// is `app_launch_url` (`{app}/launch`): `{app}/callback/{key}`, as
/// Passerelle derives it ([`passerelle::auth::smart::redirect_uri_for`]).
fn default_redirect_uri(app_launch_url: &Url, fhir_base: &Url) -> anyhow::Result<Url> {
    let entry: passerelle::auth::smart::EhrConfig = serde_json::from_value(json!({
        "name": "Development EHR",
        "iss": fhir_base.as_str(),
        "client_id": "passerelle",
        "client_auth": "none",
    }))?;
    let app = app_launch_url.join("./")?;
    passerelle::auth::smart::redirect_uri_for(&app, &entry).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_redirect_uri_is_the_one_passerelle_derives_for_this_launcher() {
        let uri = default_redirect_uri(
            &Url::parse("http://127.0.0.1:8080/launch").unwrap(),
            &Url::parse("http://127.0.0.1:9090/fhir/").unwrap(),
        )
        .unwrap();
        assert_eq!(
            uri.as_str(),
            "http://127.0.0.1:8080/callback/127-0-0-1-9090-fhir"
        );
    }

    #[test]
    fn simulations_parse_from_their_names_and_the_error_lists_them_all() {
        for sim in Simulation::ALL {
            assert_eq!(sim.as_str().parse::<Simulation>().unwrap(), sim);
        }
        let message = "chaos".parse::<Simulation>().unwrap_err().to_string();
        for sim in Simulation::ALL {
            assert!(message.contains(sim.as_str()), "{message}");
        }
    }

    #[test]
    fn a_launcher_may_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Launcher>();
    }

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert_eq!(base_url(any).as_str(), "http://127.0.0.1:9090/");
        let v6: SocketAddr = "[::]:9090".parse().unwrap();
        assert_eq!(base_url(v6).as_str(), "http://[::1]:9090/");
    }
}
