//! The SMART test environment: the development EHR launcher, an hfs that
//! enforces SMART scopes on the launcher's tokens (or Medplum's engine,
//! which checks none), seeded with the fixtures, and Passerelle with the
//! launcher on its allow-list. Plus a cookie-aware
//! HTTP client that follows redirects as a browser does.

use std::collections::HashMap;
use std::time::Duration;

use passerelle::auth::keys::SigningKey;
use passerelle::auth::smart::{ClientAuthMethod, EhrConfig, redirect_uri_for};
use passerelle::http::SmartSettings;
use passerelle_dev::hfs::{Hfs, HfsAuth};
use passerelle_dev::launcher::{ClientAuth, Launcher, LauncherConfig, RegisteredClient};
use passerelle_dev::medplum::{Medplum, TransactionMode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

pub const CLIENT_SECRET_ENV: &str = "PASSERELLE_TEST_CLIENT_SECRET";
pub const CLIENT_SECRET: &str = "s3cret-for-tests-only";

pub struct SmartEnv {
    pub app: String,
    /// The launcher's EHR's redirect URI at the app, as Passerelle sends it.
    pub redirect_uri: Url,
    pub settings: passerelle::http::Settings,
    pub launcher: Launcher,
    /// The FHIR server behind the launcher.
    pub server: Upstream,
    pub keys: Vec<SigningKey>,
    pub db_path: std::path::PathBuf,
    /// The shared PostgreSQL store, when the env runs on one
    /// ([`EnvOptions::postgres`]).
    pub postgres: Option<passerelle_dev::postgres::Postgres>,
    _shutdown: oneshot::Sender<()>,
    /// The app's own process, when it runs as the binary.
    pub process: Option<tokio::process::Child>,
}

/// The FHIR server behind the launcher's `/fhir/`.
pub enum Upstream {
    /// hfs, checking the launcher's tokens and enforcing their scopes.
    Hfs(Hfs),
    /// Medplum's in-memory engine, which has no authorization: the
    /// launcher's tokens reach it and are not checked.
    Medplum(Medplum),
}

impl Upstream {
    pub fn base(&self) -> &Url {
        match self {
            Upstream::Hfs(h) => h.base(),
            Upstream::Medplum(m) => m.base(),
        }
    }
}

/// Options of [`smart_env_with`].
pub struct EnvOptions {
    pub method: ClientAuthMethod,
    pub token_lifetime: Duration,
    pub idle: Duration,
    pub key_alg: &'static str,
    /// Replaces the scopes Passerelle asks for.
    pub scopes: Option<String>,
    pub outbox_every: Duration,
    /// Deadlines and caps on clients.
    pub server: passerelle::http::ServerLimits,
    /// The practice's screening instruments (all when empty).
    pub instruments: Vec<String>,
    /// Passerelle's database (a fresh file when `None`) and session key, to
    /// restart an app on the same store.
    pub database: Option<(std::path::PathBuf, [u8; 32])>,
    /// The queue's Backend Services poller, every this many seconds
    /// (needs `PrivateKeyJwt`); no queue when `None`.
    pub queue_poll_seconds: Option<u64>,
    /// Generated patients seeded besides the fixtures (`seed --generate`).
    pub generate: usize,
    /// Generated population patients (`seed::population`) seeded too.
    pub population: usize,
    /// Only the fixture files whose names start with one of these (all when `None`).
    pub fixtures: Option<Vec<&'static str>>,
    /// Run the app as this binary (`passerelle serve`) in its own process,
    /// configured through its environment, instead of in this process.
    pub app_binary: Option<std::path::PathBuf>,
    /// The launcher signs `id_token`s without a `kid` header.
    pub id_token_without_kid: bool,
    /// The launcher's EHR entry sends the shared `{app}/callback`
    /// (`legacy_callback`), registered so at the launcher.
    pub legacy_callback: bool,
    /// Medplum (in this transaction mode) as the EHR's FHIR server instead
    /// of hfs.
    pub medplum: Option<TransactionMode>,
    /// More EHR entries on the app's allow-list after the launcher's own
    /// (EHRs no test reaches: only their callbacks are used).
    pub other_ehrs: Vec<Value>,
    /// Passerelle's store in a throw-away PostgreSQL server (which several
    /// instances can share, see [`SmartEnv::instance`]) instead of a
    /// SQLite file.
    pub postgres: bool,
    /// hfs answers 501 to every `$export` (`HFS_BULK_EXPORT_ENABLED=false`).
    pub bulk_export_disabled: bool,
    /// The queue's Backend Services scopes (the default when `None`).
    pub backend_scope: Option<String>,
}

/// Start launcher, hfs (auth enforced) and the app, with Passerelle
/// registered at the launcher with `method`.
pub async fn smart_env(method: ClientAuthMethod, token_lifetime: Duration) -> SmartEnv {
    smart_env_with(EnvOptions {
        method,
        token_lifetime,
        ..EnvOptions::default()
    })
    .await
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            method: ClientAuthMethod::None,
            token_lifetime: Duration::from_secs(3600),
            idle: Duration::from_secs(1800),
            key_alg: "ES384",
            scopes: None,
            outbox_every: Duration::from_secs(10),
            server: passerelle::http::ServerLimits::default(),
            instruments: vec![],
            database: None,
            queue_poll_seconds: None,
            generate: 0,
            population: 0,
            fixtures: None,
            app_binary: None,
            id_token_without_kid: false,
            legacy_callback: false,
            medplum: None,
            other_ehrs: vec![],
            postgres: false,
            bulk_export_disabled: false,
            backend_scope: None,
        }
    }
}

pub async fn smart_env_with(o: EnvOptions) -> SmartEnv {
    let (method, token_lifetime) = (o.method.clone(), o.token_lifetime);
    passerelle::telemetry::init("warn");
    // SAFETY: tests of this binary set this variable to the same value.
    unsafe { std::env::set_var(CLIENT_SECRET_ENV, CLIENT_SECRET) };
    let app_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = format!("http://{}", app_listener.local_addr().unwrap());
    let app_url = Url::parse(&format!("{app}/")).unwrap();
    let keys = vec![
        SigningKey::generate_es384("passerelle-es384").unwrap(),
        SigningKey::generate_rsa("passerelle-rs384", jsonwebtoken::Algorithm::RS384).unwrap(),
    ];
    let auth = match method {
        ClientAuthMethod::None => ClientAuth::Public,
        ClientAuthMethod::ClientSecretBasic => {
            ClientAuth::SecretBasic(CLIENT_SECRET.to_string().into())
        }
        ClientAuthMethod::ClientSecretPost => {
            ClientAuth::SecretPost(CLIENT_SECRET.to_string().into())
        }
        ClientAuthMethod::PrivateKeyJwt => ClientAuth::PrivateKeyJwt {
            jwks_url: app_url.join(".well-known/jwks.json").unwrap(),
        },
    };
    let launcher_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fhir_base = Launcher::fhir_base_of(&launcher_listener).unwrap();
    let ehr_json = serde_json::json!({
        "name": "Development EHR",
        "iss": fhir_base.as_str(),
        "client_id": "passerelle",
        "client_auth": match method {
            ClientAuthMethod::None => "none",
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
        },
        "client_secret_env": CLIENT_SECRET_ENV,
        "key_alg": o.key_alg,
        "scopes": o.scopes,
        "frame_ancestors": [fhir_base.origin().ascii_serialization()],
        "backend": o.queue_poll_seconds.map(|s| {
            let mut b = serde_json::json!({ "poll_seconds": s, "bulk_poll_max_seconds": 1 });
            if let Some(scope) = &o.backend_scope {
                b["scope"] = scope.as_str().into();
            }
            b
        }),
        "legacy_callback": o.legacy_callback,
    });
    let ehr: EhrConfig = serde_json::from_value(ehr_json.clone()).unwrap();
    let redirect_uri = redirect_uri_for(&app_url, &ehr).unwrap();
    let launcher = Launcher::start(
        launcher_listener,
        LauncherConfig {
            clients: vec![RegisteredClient {
                client_id: "passerelle".into(),
                // This EHR's own redirect URI, as Passerelle sends it.
                redirect_uris: vec![redirect_uri.clone()],
                auth,
            }],
            app_launch_url: app_url.join("launch").unwrap(),
            token_lifetime,
            id_token_without_kid: o.id_token_without_kid,
        },
    )
    .await
    .expect("the launcher starts");
    let server = match o.medplum {
        None => {
            let mut opts = super::hfs_options();
            opts.bulk_export = !o.bulk_export_disabled;
            opts.auth = Some(HfsAuth {
                jwks_url: launcher.jwks_url(),
                issuer: launcher.issuer(),
                audience: Some(
                    launcher
                        .fhir_base()
                        .as_str()
                        .trim_end_matches('/')
                        .to_string(),
                ),
                token: Some(launcher.system_token("system/*.cruds")),
            });
            opts.public_base = Some(launcher.fhir_base());
            Upstream::Hfs(Hfs::start(&opts).await.expect("hfs with auth starts"))
        }
        Some(mode) => Upstream::Medplum(
            Medplum::start(&super::medplum_options(mode))
                .await
                .expect("Medplum starts"),
        ),
    };
    launcher.set_upstream(server.base().clone());
    seed_with_token(&launcher, o.generate, o.population, o.fixtures.as_deref()).await;

    let (db_path, session_key) = o.database.clone().unwrap_or_else(|| {
        let name = format!(
            "passerelle-test-{}.db",
            passerelle::auth::keys::random_token(8)
        );
        (
            std::env::temp_dir().join(name),
            passerelle::http::random_key(),
        )
    });
    let postgres = match o.postgres {
        true => Some(passerelle_dev::postgres::Postgres::for_tests().await),
        false => None,
    };
    let mut entries = vec![ehr_json.clone()];
    entries.extend(o.other_ehrs.iter().cloned());
    let ehrs = entries
        .iter()
        .map(|e| serde_json::from_value::<EhrConfig>(e.clone()).unwrap())
        .collect();
    let smart = SmartSettings {
        ehrs,
        public_url: app_url.clone(),
        session_key,
        keys: keys.clone(),
        database_url: match &postgres {
            Some(pg) => pg.url(),
            None => format!("sqlite://{}", db_path.display()),
        },
        idle: o.idle,
    };
    let settings = passerelle::http::Settings {
        open_servers: vec![],
        frame_ancestors: vec![],
        regimes: passerelle::domain::coverage::RegimeTable::shipped(),
        limits: passerelle::fhir::Limits::default(),
        smart: Some(smart),
        schema: Some(super::schema()),
        outbox_every: o.outbox_every,
        server: o.server,
        screening_interval_days: 365,
        screening_instruments: o.instruments.clone(),
        directory: std::sync::Arc::new(passerelle::domain::directory::Directory::shipped()),
        letters: std::sync::Arc::new(passerelle::domain::letter::LetterTemplates::shipped()),
        practice_organization: None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    let process = match &o.app_binary {
        None => {
            tokio::spawn(passerelle::http::run(
                app_listener,
                settings.clone(),
                async {
                    let _ = rx.await;
                },
            ));
            None
        }
        Some(bin) => {
            let listen = app_listener.local_addr().unwrap();
            drop(app_listener);
            let ehrs = std::env::temp_dir().join(format!(
                "passerelle-ehrs-{}.json",
                passerelle::auth::keys::random_token(8)
            ));
            std::fs::write(&ehrs, serde_json::to_vec(&entries).unwrap()).unwrap();
            let child = tokio::process::Command::new(bin)
                .arg("serve")
                .env("PASSERELLE_LISTEN", listen.to_string())
                .env("PASSERELLE_EHRS", &ehrs)
                .env("PASSERELLE_PUBLIC_URL", app_url.to_string())
                // A file store needs a key that outlives the process.
                .env(
                    "PASSERELLE_SESSION_KEY",
                    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
                )
                .env(
                    "PASSERELLE_DATABASE_URL",
                    format!("sqlite://{}?mode=rwc", db_path.display()),
                )
                .env(
                    "PASSERELLE_DEFINITIONS_DIR",
                    &super::hfs_options().definitions_dir,
                )
                .env("PASSERELLE_LOG", "warn")
                .kill_on_drop(true)
                .spawn()
                .expect("passerelle serve starts");
            let started = std::time::Instant::now();
            while reqwest::get(format!("{app}/.well-known/jwks.json"))
                .await
                .is_err()
            {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the app did not start"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Some(child)
        }
    };
    SmartEnv {
        app,
        redirect_uri,
        settings,
        launcher,
        server,
        keys,
        db_path,
        postgres,
        _shutdown: tx,
        process,
    }
}

/// One more Passerelle instance of an env, on the same settings (store,
/// session key, signing keys, public URL): what a second replica behind a
/// load balancer is. Stopped when dropped, or with [`Instance::stop`].
pub struct Instance {
    pub app: String,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Instance {
    /// Stop serving and every background task of this instance (its
    /// outbox worker, its leader's lock connection, its listener).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // `run` aborts its tasks once the server has stopped.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Start the app on `settings`, in this process, on a new port.
async fn start_instance(settings: &passerelle::http::Settings) -> Instance {
    let (tx, rx) = oneshot::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(passerelle::http::run(listener, settings.clone(), async {
        let _ = rx.await;
    }));
    Instance {
        app,
        shutdown: Some(tx),
    }
}

impl SmartEnv {
    /// Read from the EHR's FHIR endpoint with a read-only system token, as
    /// a test looking at what was recorded (`path` relative to the base).
    pub async fn fhir_json(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.launcher.fhir_base()))
            .bearer_auth(self.launcher.system_token("system/*.rs"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// How many rows a table of Passerelle's own store holds (`launches`,
    /// `launch_state`, `outbox`), or those matching `filter` (SQL).
    pub async fn stored(&self, table: &str) -> i64 {
        self.stored_where(table, "TRUE").await
    }

    pub async fn stored_where(&self, table: &str, filter: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {filter}");
        let (n,): (i64,) = match &self.postgres {
            Some(pg) => {
                let store = sqlx::PgPool::connect(&pg.url()).await.unwrap();
                sqlx::query_as(&sql).fetch_one(&store).await.unwrap()
            }
            None => {
                let url = format!("sqlite://{}", self.db_path.display());
                let store = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query_as(&sql).fetch_one(&store).await.unwrap()
            }
        };
        n
    }

    /// Stop the env's own app (its server and background tasks), as a
    /// replica that goes away.
    pub async fn stop_app(&mut self) {
        let (tx, _) = oneshot::channel::<()>();
        let _ = std::mem::replace(&mut self._shutdown, tx).send(());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Another Passerelle instance on this env's store and settings.
    pub async fn instance(&self) -> Instance {
        start_instance(&self.settings).await
    }

    /// Stop the app and start it again on the same store (a restart);
    /// returns the new app's address.
    pub async fn app_again(&mut self) -> String {
        self.stop_app().await;
        let mut again = start_instance(&self.settings).await;
        self._shutdown = again.shutdown.take().expect("a running instance");
        self.app = again.app.clone();
        self.app.clone()
    }
}

/// Load the fixtures through the launcher's proxy with a system token.
async fn seed_with_token(
    launcher: &Launcher,
    generate: usize,
    population: usize,
    only: Option<&[&str]>,
) {
    let token = launcher.system_token("system/*.cruds");
    let http = reqwest::Client::new();
    let schema = super::schema();
    let shift = passerelle::seed::shift_for(time::OffsetDateTime::now_utc().date());
    for (file, bundle) in passerelle::seed::fixture_bundles(None).unwrap() {
        if only.is_some_and(|o| !o.iter().any(|p| file.starts_with(p))) {
            continue;
        }
        let bundle = passerelle::seed::prepare(&file, bundle, shift).unwrap();
        schema.validate_bundle(&bundle).unwrap();
        let r = http
            .post(launcher.fhir_base())
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .json(&bundle)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "seeding {file}: {}", r.status());
    }
    // Generated patients, one transaction at a time (hfs answers 503 to
    // concurrent transactions on its one SQLite database).
    let generated = passerelle::seed::generate::bundles(generate, 100)
        .into_iter()
        .chain(passerelle::seed::population::bundles(population, 50));
    for b in generated {
        let b = passerelle::seed::prepare("generated", b, shift).unwrap();
        {
            let r = http
                .post(launcher.fhir_base())
                .bearer_auth(&token)
                .header("content-type", "application/fhir+json")
                .json(&b)
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "seeding generated patients: {}",
                r.status()
            );
        }
    }
}

/// A cookie-aware client that follows redirects like a browser and keeps
/// the path it took.
#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    /// origin -> (name -> value)
    cookies: std::sync::Arc<std::sync::Mutex<HashMap<String, HashMap<String, String>>>>,
    pub set_cookie_headers: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The end of a navigation.
pub struct Page {
    pub status: u16,
    pub url: Url,
    pub body: String,
    /// Every URL visited, redirects included.
    pub trail: Vec<Url>,
    pub headers: reqwest::header::HeaderMap,
    /// The body as sent (a PDF, say).
    pub bytes: Vec<u8>,
}

impl Default for Browser {
    fn default() -> Self {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Default::default(),
            set_cookie_headers: Default::default(),
        }
    }
}

impl Browser {
    /// Send `to`'s requests with the cookies of `from` (both app URLs), as
    /// a browser does when a load balancer puts two instances behind one
    /// origin.
    pub fn same_origin(&self, from: &str, to: &str) {
        let origin = |u: &str| Url::parse(u).unwrap().origin().ascii_serialization();
        let mut jar = self.cookies.lock().unwrap();
        let cookies = jar.get(&origin(from)).cloned().unwrap_or_default();
        jar.insert(origin(to), cookies);
    }

    /// The `Cookie` header this browser sends to `origin` (an app URL).
    pub fn cookie_header(&self, url: &str) -> String {
        let origin = Url::parse(url).unwrap().origin().ascii_serialization();
        self.cookies
            .lock()
            .unwrap()
            .get(&origin)
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    pub async fn get(&self, url: &str) -> Page {
        self.navigate(reqwest::Method::GET, Url::parse(url).unwrap(), None)
            .await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.navigate(reqwest::Method::POST, Url::parse(url).unwrap(), Some(body))
            .await
    }

    /// POST a form without following redirects; returns status and Location.
    pub async fn post_once(&self, url: &str, form: &[(String, String)]) -> (u16, Option<String>) {
        let url = Url::parse(url).unwrap();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let r = self.send(reqwest::Method::POST, &url, Some(body)).await;
        let location = r
            .headers()
            .get("location")
            .map(|l| url.join(l.to_str().unwrap()).unwrap().to_string());
        (r.status().as_u16(), location)
    }

    /// GET without following redirects.
    pub async fn get_once(&self, url: &str) -> (u16, Option<String>, String) {
        let url = Url::parse(url).unwrap();
        let r = self.send(reqwest::Method::GET, &url, None).await;
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|l| url.join(l.to_str().unwrap()).unwrap().to_string());
        (status, location, r.text().await.unwrap_or_default())
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<String>,
    ) -> reqwest::Response {
        let origin = url.origin().ascii_serialization();
        let cookie = self.cookies.lock().unwrap().get(&origin).map(|c| {
            c.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        let mut req = self.http.request(method, url.clone());
        if let Some(c) = cookie.filter(|c| !c.is_empty()) {
            req = req.header("cookie", c);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b);
        }
        let r = req.send().await.unwrap();
        for v in r.headers().get_all("set-cookie") {
            let raw = v.to_str().unwrap().to_string();
            self.set_cookie_headers.lock().unwrap().push(raw.clone());
            if let Some((name, rest)) = raw.split(';').next().and_then(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            }) {
                self.cookies
                    .lock()
                    .unwrap()
                    .entry(origin.clone())
                    .or_default()
                    .insert(name, rest);
            }
        }
        r
    }

    async fn navigate(
        &self,
        mut method: reqwest::Method,
        mut url: Url,
        mut body: Option<String>,
    ) -> Page {
        let mut trail = vec![url.clone()];
        for _ in 0..10 {
            let r = self.send(method.clone(), &url, body.clone()).await;
            if r.status().is_redirection() {
                let loc = r
                    .headers()
                    .get("location")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                url = url.join(&loc).unwrap();
                trail.push(url.clone());
                method = reqwest::Method::GET;
                body = None;
                continue;
            }
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let bytes = r.bytes().await.unwrap().to_vec();
            let text = super::unescape(&String::from_utf8_lossy(&bytes));
            // Passerelle's authorize-POST page submits itself with a script;
            // do what the browser's script does. The trail records the form
            // as a URL with its fields, so tests can read what was sent.
            if status == 200 && text.contains("id=\"autosubmit\"") {
                let (action, fields) = autosubmit_form(&text);
                let mut shown = Url::parse(&action).unwrap();
                shown.query_pairs_mut().extend_pairs(&fields);
                trail.push(shown);
                url = Url::parse(&action).unwrap();
                method = reqwest::Method::POST;
                body = Some(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(&fields)
                        .finish(),
                );
                continue;
            }
            return Page {
                status,
                url,
                body: text,
                bytes,
                trail,
                headers,
            };
        }
        panic!("too many redirects");
    }
}

/// The action and hidden fields of the auto-submitting form.
pub fn autosubmit_form(html: &str) -> (String, Vec<(String, String)>) {
    let form = html.split("id=\"autosubmit\"").nth(1).unwrap();
    let action = form
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let fields = form
        .split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|f| {
            let name = f.split('"').next().unwrap().to_string();
            let value = f
                .split("value=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string();
            (name, value)
        })
        .collect();
    (action, fields)
}

/// The `src` of the first iframe in an HTML page.
pub fn iframe_src(html: &str) -> String {
    let start = html.find("<iframe").expect("an iframe");
    let src = html[start..]
        .split("src=\"")
        .nth(1)
        .expect("a src")
        .split('"')
        .next()
        .unwrap();
    super::unescape(src)
}

/// The value of `name` in the query of `url`.
pub fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string())
}

/// A JWT's claims, unverified (for looking only).
pub fn claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Approve the EHR's standalone picker page for `patient`, as a person would
/// submit it, and follow the redirects back into Passerelle.
pub async fn approve_standalone(browser: &Browser, picker: &Page, patient: &str) -> Page {
    approve_standalone_as(browser, picker, "pas-prac-moreau", patient).await
}

/// [`approve_standalone`], signed in as `practitioner`.
pub async fn approve_standalone_as(
    browser: &Browser,
    picker: &Page,
    practitioner: &str,
    patient: &str,
) -> Page {
    let request = picker
        .body
        .split("name=\"request\" value=\"")
        .nth(1)
        .expect("the picker form")
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let action = picker.url.join("/authorize/approve").unwrap();
    browser
        .post_form(
            action.as_str(),
            &[
                ("request", request.as_str()),
                ("practitioner", practitioner),
                ("patient", patient),
                ("encounter", ""),
                ("decision", "approve"),
            ],
        )
        .await
}

/// A real `id_token` from the launcher, and the `nonce` its request sent: a
/// standalone authorization approved at its picker and the code exchanged
/// by `smart`.
pub async fn id_token_for(
    env: &SmartEnv,
    smart: &passerelle::auth::smart::SmartClient,
    ehr: &passerelle::auth::smart::Ehr,
    config: &passerelle::auth::smart::SmartConfiguration,
) -> (String, Option<String>) {
    let _ = env;
    let request = smart.authorize(ehr, config, None).unwrap();
    let browser = Browser::default();
    let picker = browser.get(request.url.as_str()).await;
    let request_field = picker
        .body
        .split("name=\"request\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = browser
        .http
        .post(picker.url.join("/authorize/approve").unwrap())
        .form(&[
            ("request", request_field.as_str()),
            ("practitioner", "pas-prac-moreau"),
            ("patient", "pas-p01"),
            ("encounter", ""),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    let location = Url::parse(r.headers().get("location").unwrap().to_str().unwrap()).unwrap();
    let code = query(&location, "code").unwrap();
    let granted = smart
        .exchange(ehr, config, &code, &request.verifier, &request.scope)
        .await
        .unwrap();
    let id_token = granted
        .tokens
        .id_token
        .expect("an id_token for openid fhirUser");
    (id_token, request.nonce)
}

/// An EHR launch, as the launcher's EHR page starts it: the page frames the
/// app; the app redirects to authorize, back to the callback, to the visit.
pub async fn ehr_launch(env: &SmartEnv, browser: &Browser, patient: &str) -> Page {
    let ehr = browser
        .get(
            env.launcher
                .ehr_url(patient, None, "pas-prac-moreau")
                .as_str(),
        )
        .await;
    assert_eq!(ehr.status, 200, "{}", ehr.body);
    browser.get(&iframe_src(&ehr.body)).await
}

/// Start an EHR launch for `patient` and stop before the EHR is asked:
/// the authorize form's action and fields (the `state` among them).
pub async fn begin_launch(
    env: &SmartEnv,
    browser: &Browser,
    patient: &str,
) -> (String, Vec<(String, String)>) {
    let ehr = browser
        .get(
            env.launcher
                .ehr_url(patient, None, "pas-prac-moreau")
                .as_str(),
        )
        .await;
    let (status, _, html) = browser.get_once(&iframe_src(&ehr.body)).await;
    assert_eq!(status, 200, "the authorize-POST page");
    autosubmit_form(&super::unescape(&html))
}

/// Send the authorize request; the callback URL the EHR redirects to (not followed).
pub async fn authorize_at_ehr(browser: &Browser, action: &str, fields: &[(String, String)]) -> Url {
    let (status, location) = browser.post_once(action, fields).await;
    assert_eq!(status, 302, "the EHR redirects back");
    Url::parse(&location.unwrap()).unwrap()
}

pub fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap()
}

/// The value of the hidden field `name` in an HTML form.
pub fn hidden_field(html: &str, name: &str) -> String {
    html.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no field {name}"))
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// The app URL of `path` in the launch `visit` belongs to.
pub fn at(visit: &Page, path: &str) -> String {
    visit.url.as_str().replace("/visit", path)
}

/// Open the link with `id` on `page`, as a click would.
pub async fn follow(env: &SmartEnv, browser: &Browser, page: &Page, id: &str) -> Page {
    browser
        .get(&format!("{}{}", env.app, link(&page.body, id)))
        .await
}

/// The href of the link with `id`.
pub fn link(html: &str, id: &str) -> String {
    let html = super::unescape(html);
    let before = html
        .split(&format!("id=\"{id}\""))
        .next()
        .unwrap_or_else(|| panic!("no link {id}"));
    let href = before.rsplit("href=\"").next().unwrap();
    href.split('"').next().unwrap().to_string()
}

/// The resources of a search Bundle.
/// The texts of a Task's notes, in order.
pub fn note_texts(task: &Value) -> Vec<&str> {
    task["note"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["text"].as_str().unwrap())
        .collect()
}

pub fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

/// Post a status change on a task page; the resulting page.
pub async fn change(
    browser: &Browser,
    task_url: &str,
    page: &Page,
    to: &str,
    reason: &str,
    note: &str,
) -> Page {
    browser
        .post_form(
            task_url,
            &[
                ("csrf", &hidden_field(&page.body, "csrf")),
                ("version", &hidden_field(&page.body, "version")),
                ("to", to),
                ("reason", reason),
                ("note", note),
            ],
        )
        .await
}

/// Fill the Hunger Vital Sign form of a launch (both items "often true").
pub async fn post_hunger_vital_sign(browser: &Browser, visit: &Page) -> Page {
    let form = browser
        .get(
            &visit
                .url
                .as_str()
                .replace("/visit", "/screen?form=hunger-vital-sign"),
        )
        .await;
    let hidden = |name: &str| hidden_field(&form.body, name);
    let (csrf, id) = (hidden("csrf"), hidden("screening_id"));
    browser
        .post_form(
            &visit.url.as_str().replace("/visit", "/screen"),
            &[
                ("csrf", &csrf),
                ("screening_id", &id),
                ("form", "hunger-vital-sign"),
                ("lang", "en"),
                ("88122-7", "LA28397-0"),
                ("88123-5", "LA28397-0"),
            ],
        )
        .await
}

/// The fields of a referral page's form (`html`, unescaped) that refer the
/// patient for `domain` to the service the page proposes first.
pub fn referral_form(html: &str, domain: &str) -> Vec<(&'static str, String)> {
    vec![
        ("csrf", hidden_field(html, "csrf")),
        ("referral_id", hidden_field(html, "referral_id")),
        ("domain", domain.to_string()),
        ("service", hidden_field(html, "service")),
        ("action", "refer".to_string()),
    ]
}

/// A client of the launcher's FHIR endpoint with a Backend Services token
/// of `scope` (hfs enforces it), reading the patterns with `bulk`.
pub fn system_client(
    env: &SmartEnv,
    scope: &str,
    bulk: passerelle::fhir::bulk::BulkSettings,
) -> passerelle::fhir::FhirClient {
    passerelle::fhir::FhirClient::new(
        passerelle::fhir::FhirClient::http_client(),
        env.launcher.fhir_base(),
        passerelle::fhir::Limits {
            timeout: Duration::from_secs(60),
            bulk,
            ..passerelle::fhir::Limits::default()
        },
    )
    .with_authorizer(std::sync::Arc::new(passerelle::auth::StaticToken(
        env.launcher.system_token(scope),
    )))
}

/// What hfs 0.2.7 needs besides the per-type scopes to read an export:
/// it authorizes the status and file URLs (`/export-status/…`,
/// `/export-file/…`) as reads of resource types of those names, which a
/// SMART authorization server grants only through a wildcard.
pub fn hfs_bulk_scope() -> String {
    format!(
        "{} system/*.rs",
        passerelle::auth::smart::BackendConfig::DEFAULT_SCOPE
    )
}

/// Bulk Data settings for tests: a status poll every second at most.
pub fn quick_bulk() -> passerelle::fhir::bulk::BulkSettings {
    passerelle::fhir::bulk::BulkSettings {
        max_poll_interval: Duration::from_secs(1),
        ..Default::default()
    }
}

/// Every figure of two reports is the same (tables cell by cell, rates,
/// medians, repeated denials, trends, the raw counts), whatever read path
/// gave each and whenever it was computed.
pub fn assert_same_measures(
    a: &passerelle::domain::patterns::Report,
    b: &passerelle::domain::patterns::Report,
) {
    assert_eq!(a.period, b.period);
    assert_eq!(a.tables.len(), b.tables.len());
    for (x, y) in a.tables.iter().zip(&b.tables) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.cells.len(), y.cells.len(), "{}", x.id);
        for (c, d) in x.cells.iter().zip(&y.cells) {
            assert_eq!(c, d, "{} / {}", x.id, c.label);
        }
        assert_eq!(x.total, y.total, "{} total", x.id);
    }
    assert_eq!(a.rates, b.rates);
    assert_eq!(a.medians, b.medians);
    assert_eq!(a.repeated, b.repeated);
    assert_eq!(a.trends, b.trends);
    assert_eq!(a.counted, b.counted);
    assert!(a.counted.patients > 0, "no patient counted");
}
