//! The test harness: a real Helios FHIR Server seeded with the fixtures, and
//! Passerelle on port 0 (`spawn_app()`), plus a fault-injecting proxy
//! ([`proxy`]) to put failures between them.
#![allow(dead_code)] // the log-capture binaries use only a part of the harness

pub mod browser;
pub mod proxy;
pub mod smart;

use std::path::PathBuf;
use std::time::Duration;

use passerelle::domain::coverage::RegimeTable;
use passerelle::fhir::{FhirClient, Limits, SchemaValidator};
use passerelle::http::Settings;
use passerelle_dev::hfs::{Hfs, HfsOptions, default_hfs_bin};
use passerelle_dev::medplum::{Medplum, MedplumOptions, TransactionMode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

/// What the visit page of the fixture patient pas-p01 shows, whichever
/// server holds the fixtures: banner, encounter, coverage with its appeal
/// regime, screening, open referral and the denial with its reason code.
pub const P01_VISIT_PAGE: [&str; 15] = [
    "María José García",
    "MRN-P01",
    "Spanish",
    "Interpreter needed",
    "Office visit",
    "Sunrise Health Plan (Medicaid managed care)",
    "SHP-448812",
    "Sunrise Medicaid Gold",
    "Medicaid managed care: appeal within 60 days (42 CFR 438.402(c)(2)(ii))",
    "Food insecurity",
    "Referral to food pantry program",
    "in-progress",
    "MRI lumbar spine without contrast",
    "Prior authorization denied: conservative therapy of at least 6 weeks is not documented.",
    "<code>197</code> Precertification/authorization/notification/pre-treatment absent",
];

/// Where the set-up scripts put the definitions (or the environment says).
pub fn definitions_dir() -> PathBuf {
    std::env::var_os("PASSERELLE_DEFINITIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| passerelle::config::cache_dir().join("definitions"))
}

pub fn hfs_options() -> HfsOptions {
    let bin = std::env::var_os("PASSERELLE_HFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(default_hfs_bin);
    assert!(
        bin.is_file(),
        "hfs is not installed at {}: run ./scripts/test, which installs it",
        bin.display()
    );
    HfsOptions {
        bin,
        definitions_dir: definitions_dir(),
        auth: None,
        public_base: None,
        // Every test that writes is a conformance test: hfs refuses what
        // breaks R4 or a profile the resource claims.
        validation:
            Some(
                passerelle_dev::conformance::validation(
                    &passerelle_dev::medplum::default_medplum_dir(),
                )
                .expect("the published US Core definitions are installed by ./scripts/test"),
            ),
        bulk_export: true,
    }
}

pub fn schema() -> SchemaValidator {
    SchemaValidator::load(&definitions_dir())
        .expect("the FHIR schema is installed by ./scripts/test")
}

/// A running hfs, seeded with the fixtures (dates shifted to today).
pub async fn seeded_hfs() -> Hfs {
    let hfs = Hfs::start(&hfs_options()).await.expect("hfs starts");
    let client = fhir_client(hfs.base());
    let today = time::OffsetDateTime::now_utc().date();
    passerelle::seed::load(&client, &schema(), None, 0, today)
        .await
        .expect("fixtures load");
    hfs
}

/// Options for Medplum's FHIR engine; fails (never skips) when
/// `./scripts/test` has not installed it.
pub fn medplum_options(transactions: TransactionMode) -> MedplumOptions {
    let opts = MedplumOptions {
        transactions,
        ..MedplumOptions::default()
    };
    assert!(
        opts.dir.join("node_modules/@medplum/fhir-router").is_dir(),
        "Medplum's FHIR engine is not installed in {}: run ./scripts/test, which installs it (or set PASSERELLE_MEDPLUM_DIR)",
        opts.dir.display()
    );
    opts
}

/// A running Medplum engine (atomic transactions), seeded with the fixtures
/// by Passerelle's own `seed`, as [`seeded_hfs`] is.
pub async fn seeded_medplum() -> Medplum {
    let medplum = Medplum::start(&medplum_options(TransactionMode::Atomic))
        .await
        .expect("the Medplum engine starts");
    let client = fhir_client(medplum.base());
    let today = time::OffsetDateTime::now_utc().date();
    passerelle::seed::load(&client, &schema(), None, 0, today)
        .await
        .expect("fixtures load into Medplum");
    medplum
}

pub fn fhir_client(base: &Url) -> FhirClient {
    FhirClient::new(
        FhirClient::http_client(),
        base.clone(),
        Limits {
            timeout: Duration::from_secs(60),
            ..Limits::default()
        },
    )
}

/// The app under test.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub hfs: Hfs,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// An app started with [`start_app`] on `hfs`.
    pub fn from_parts(address: String, hfs: Hfs, shutdown: oneshot::Sender<()>) -> Self {
        TestApp {
            address,
            hfs,
            http: reqwest::Client::new(),
            shutdown: Some(shutdown),
        }
    }

    pub fn fhir_base(&self) -> &Url {
        self.hfs.base()
    }

    /// GET a path of the app; returns status and body, with the HTML
    /// entities of text decoded so tests compare what a person reads.
    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{}", self.address, path_and_query))
            .send()
            .await
            .expect("app answers");
        let status = r.status().as_u16();
        (status, unescape(&r.text().await.expect("body")))
    }

    /// The visit page of `patient` on `iss`.
    pub async fn open(&self, iss: &str, patient: &str) -> (u16, String) {
        self.get(&format!(
            "/launch/open?iss={}&patient={}",
            enc(iss),
            enc(patient)
        ))
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Everything the process logs from now on, at debug level, for tests that
/// check what the logs hold. Installs the global subscriber: one such test
/// per test binary.
pub fn capture_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = Captured(buffer.clone());
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    buffer
}

/// Decode the entities askama writes for text: named ones and every
/// numeric one (`&#38;`, `&#x27;`).
pub fn unescape(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let entity = &rest[1..e];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Options for [`spawn_app_with`].
pub struct AppOptions {
    /// Open servers besides the seeded hfs.
    pub extra_open_servers: Vec<Url>,
    pub limits: Limits,
    pub smart: Option<passerelle::http::SmartSettings>,
    pub server: passerelle::http::ServerLimits,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            extra_open_servers: vec![],
            limits: Limits {
                timeout: Duration::from_secs(10),
                ..Limits::default()
            },
            smart: None,
            server: passerelle::http::ServerLimits::default(),
        }
    }
}

/// hfs seeded with the fixtures, and the app serving it on port 0.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    passerelle::telemetry::init("warn");
    let hfs = seeded_hfs().await;
    let address = start_app(hfs.base(), opts).await;
    TestApp {
        address: address.0,
        hfs,
        http: reqwest::Client::new(),
        shutdown: Some(address.1),
    }
}

/// Start the app with `base` (and the extra servers) as open servers.
pub async fn start_app(base: &Url, opts: AppOptions) -> (String, oneshot::Sender<()>) {
    let mut open_servers = vec![base.clone()];
    open_servers.extend(opts.extra_open_servers);
    let settings = Settings {
        open_servers: open_servers
            .iter()
            .map(passerelle::http::normalise_base)
            .collect(),
        frame_ancestors: vec![],
        regimes: RegimeTable::shipped(),
        limits: opts.limits,
        smart: opts.smart,
        schema: Some(schema()),
        outbox_every: Duration::from_secs(10),
        server: opts.server,
        screening_interval_days: 365,
        screening_instruments: vec![],
        directory: std::sync::Arc::new(passerelle::domain::directory::Directory::shipped()),
        letters: std::sync::Arc::new(passerelle::domain::letter::LetterTemplates::shipped()),
        practice_organization: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local address"));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(passerelle::http::run(listener, settings, async {
        let _ = rx.await;
    }));
    (address, tx)
}

/// The `passerelle-dev` binary (the demo as the README starts it), beside
/// the `passerelle` binary cargo built for these tests. It belongs to another
/// package of the workspace, so cargo does not build it for this one's
/// tests: `./scripts/test` builds it first, and a run without it fails here
/// saying so, instead of testing something else.
pub fn dev_binary() -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_passerelle"))
        .with_file_name(format!("passerelle-dev{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p passerelle-dev` first (./scripts/test does)",
        bin.display()
    );
    bin
}
