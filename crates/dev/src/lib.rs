//! Development and demo tooling, the crate `passerelle-dev`: a local FHIR
//! server ([`hfs`]), the development EHR launcher ([`launcher`]), and
//! `passerelle-dev demo` that wires them to the app with authorization on.
//! Not part of what `passerelle serve` runs: the app does not depend on it;
//! the tests and the benchmarks do.

pub mod config;
pub mod conformance;
pub mod hfs;
pub mod launcher;
pub mod medplum;
pub mod postgres;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use url::Url;

use crate::config::DemoArgs;
use launcher::{ClientAuth, Launcher, LauncherConfig, RegisteredClient};
use passerelle::auth::StaticToken;
use passerelle::auth::keys::SigningKey;
use passerelle::auth::smart::{EhrConfig, redirect_uri_for};
use passerelle::fhir::{FhirClient, Limits, SchemaValidator};
use passerelle::http::{self, Settings, SmartSettings};

/// `passerelle-dev demo`: the development EHR launcher, an hfs that checks the
/// launcher's tokens (seeded with the fixtures), and Passerelle registered
/// at the launcher as a `private_key_jwt` client. Prints the launcher's URL:
/// pick a patient there and Passerelle opens in the EHR's frame. Ctrl-C
/// stops everything.
pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let definitions = args.fhir.definitions_dir();
    let schema = SchemaValidator::load(&definitions)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let app_listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (choose another with --port)")
    })?;
    let app = Url::parse(&format!("http://{addr}/"))?;

    let launcher_listener = TcpListener::bind("127.0.0.1:0").await?;
    let fhir_base = Launcher::fhir_base_of(&launcher_listener)?;
    let launcher_origin = fhir_base.origin().ascii_serialization();
    let ehr: EhrConfig = serde_json::from_value(serde_json::json!({
        "name": "Development EHR",
        "iss": fhir_base.as_str(),
        "client_id": "passerelle",
        "client_auth": "private_key_jwt",
        "key_alg": "ES384",
        "frame_ancestors": [launcher_origin],
        // The coordinators' queue, read with Backend Services.
        "backend": {},
    }))?;
    let launcher = Launcher::start(
        launcher_listener,
        LauncherConfig::new(
            app.join("launch")?,
            vec![RegisteredClient {
                client_id: "passerelle".into(),
                // The EHR's own redirect URI, as Passerelle sends it.
                redirect_uris: vec![redirect_uri_for(&app, &ehr).map_err(anyhow::Error::msg)?],
                auth: ClientAuth::PrivateKeyJwt {
                    jwks_url: app.join(".well-known/jwks.json")?,
                },
            }],
        ),
    )
    .await?;
    let mut opts = hfs::options(args.hfs_bin.as_deref(), definitions);
    opts.auth = Some(launcher.hfs_auth());
    opts.public_base = Some(launcher.fhir_base());
    let server = hfs::Hfs::start(&opts).await?;
    launcher.set_upstream(server.base().clone());

    let limits = Limits {
        timeout: args.fhir.timeout(),
        max_response_bytes: args.fhir.fhir_max_response_bytes,
        ..Limits::default()
    };
    let seeding = FhirClient::new(
        FhirClient::http_client(),
        launcher.fhir_base(),
        Limits {
            timeout: Duration::from_secs(120),
            ..limits
        },
    )
    .with_authorizer(Arc::new(StaticToken(
        launcher.system_token("system/*.cruds"),
    )));
    let today = time::OffsetDateTime::now_utc().date();
    passerelle::seed::load(&seeding, &schema, None, args.generate, today).await?;

    let settings = Settings {
        open_servers: vec![],
        frame_ancestors: vec![],
        regimes: passerelle::domain::coverage::RegimeTable::shipped(),
        limits,
        smart: Some(SmartSettings {
            ehrs: vec![ehr],
            public_url: app.clone(),
            session_key: http::random_key(),
            keys: vec![
                SigningKey::generate_es384("passerelle-es384")?,
                SigningKey::generate_rsa("passerelle-rs384", jsonwebtoken::Algorithm::RS384)?,
            ],
            database_url: "sqlite::memory:".into(),
            idle: Duration::from_secs(30 * 60),
        }),
        schema: Some(schema),
        outbox_every: Duration::from_secs(10),
        server: passerelle::http::ServerLimits::default(),
        screening_interval_days: 365,
        screening_instruments: vec![],
        directory: std::sync::Arc::new(passerelle::domain::directory::Directory::shipped()),
        letters: std::sync::Arc::new(passerelle::domain::letter::LetterTemplates::shipped()),
        practice_organization: Some("Organization/pas-org-practice".into()),
    };
    println!(
        "Passerelle demo is ready: open {} (the development EHR: pick a patient and Passerelle opens in its frame); coordinators sign in at {}standalone",
        launcher.base(),
        app
    );
    http::run(app_listener, settings, http::shutdown_signal()).await?;
    launcher.shutdown().await;
    server.stop().await;
    println!("Passerelle demo stopped.");
    Ok(ExitCode::SUCCESS)
}
