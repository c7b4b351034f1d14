//! Development and demo tooling: a local FHIR server ([`hfs`]) and the
//! `passerelle demo` command that wires it to the app.

pub mod hfs;
pub mod launcher;

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::config::DemoArgs;
use crate::fhir::{FhirClient, Limits, SchemaValidator};
use crate::http::{self, Settings};

/// `passerelle demo`: start hfs, seed it, serve the app on it, print the URL
/// to open; Ctrl-C stops everything.
pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let definitions = args.fhir.definitions_dir();
    let schema = SchemaValidator::load(&definitions)?;
    let opts = hfs::options(args.hfs_bin.as_deref(), definitions);
    let server = hfs::Hfs::start(&opts).await?;
    let limits = Limits {
        timeout: args.fhir.timeout(),
        max_response_bytes: args.fhir.fhir_max_response_bytes,
    };
    let seeding = FhirClient::new(
        FhirClient::http_client(),
        server.base().clone(),
        Limits {
            timeout: std::time::Duration::from_secs(120),
            ..limits
        },
    );
    let today = time::OffsetDateTime::now_utc().date();
    crate::seed::load(&seeding, &schema, None, args.generate, today).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (choose another with --port)")
    })?;
    let settings = Settings {
        open_servers: vec![server.base().clone()],
        frame_ancestors: vec![],
        regimes: crate::domain::coverage::RegimeTable::shipped(),
        limits,
        smart: None,
    };
    let url = format!(
        "http://{addr}/launch/open?iss={}",
        url::form_urlencoded::byte_serialize(server.base().as_str().as_bytes()).collect::<String>()
    );
    println!("Passerelle demo is ready: open {url}");
    http::run(listener, settings, http::shutdown_signal()).await?;
    server.stop().await;
    println!("Passerelle demo stopped.");
    Ok(ExitCode::SUCCESS)
}
