//! The dev tools' settings, the same way the app's are: one `clap` tree,
//! every flag also a `PASSERELLE_…` environment variable, `passerelle-dev
//! <command> --help` the reference.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use passerelle::config::{FhirArgs, LogArgs};
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "passerelle-dev",
    version,
    about = "Passerelle's development tools: the demo and the development EHR launcher",
    long_about = None
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local FHIR server (hfs) behind the development EHR launcher, seed it with the fixtures and serve the app on it.
    Demo(DemoArgs),
    /// Development EHR launcher: a SMART authorization server and EHR page in front of a FHIR server.
    Launcher(LauncherArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The `hfs` binary (Helios FHIR Server). Defaults to the one the set-up scripts install.
    #[arg(long, env = "PASSERELLE_HFS_BIN")]
    pub hfs_bin: Option<PathBuf>,

    /// Port for the app (the FHIR server takes a free port of its own).
    #[arg(long, env = "PASSERELLE_DEMO_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Extra generated patients (with Tasks) on top of the fixtures.
    #[arg(long, env = "PASSERELLE_DEMO_GENERATE", default_value_t = 0)]
    pub generate: usize,

    #[command(flatten)]
    pub fhir: FhirArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LauncherArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "PASSERELLE_LAUNCHER_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub listen: SocketAddr,

    /// The FHIR server the launcher stands in front of (its `/fhir/` proxies to it).
    #[arg(long, env = "PASSERELLE_LAUNCHER_FHIR_UPSTREAM")]
    pub fhir_upstream: Url,

    /// The app's launch URL, where the EHR page sends an EHR launch (`iss` and `launch` appended).
    #[arg(
        long,
        env = "PASSERELLE_LAUNCHER_APP_LAUNCH_URL",
        default_value = "http://127.0.0.1:8080/launch"
    )]
    pub app_launch_url: Url,

    /// The registered client id.
    #[arg(
        long,
        env = "PASSERELLE_LAUNCHER_CLIENT_ID",
        default_value = "passerelle"
    )]
    pub client_id: String,

    /// The registered redirect URIs (repeat the flag, or separate with commas), each compared
    /// exactly with the requests' `redirect_uri`. Defaults to the one Passerelle sends for an
    /// EHR entry with this launcher's FHIR base and no `id`: `{app}/callback/{key}`, e.g.
    /// `http://127.0.0.1:8080/callback/127-0-0-1-9090-fhir`.
    #[arg(long, env = "PASSERELLE_LAUNCHER_REDIRECT_URI", value_delimiter = ',')]
    pub redirect_uri: Vec<Url>,

    /// The client's JWKS URL, for `private_key_jwt` (else the client is public or uses a secret).
    #[arg(long, env = "PASSERELLE_LAUNCHER_CLIENT_JWKS_URL")]
    pub client_jwks_url: Option<Url>,

    /// The client's secret, for `client_secret_basic` (or `client_secret_post`, below).
    #[arg(
        long,
        env = "PASSERELLE_LAUNCHER_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<String>,

    /// The client sends its secret in the form (`client_secret_post`), not with HTTP Basic.
    #[arg(long, env = "PASSERELLE_LAUNCHER_CLIENT_SECRET_POST")]
    pub client_secret_post: bool,

    /// Sign id_tokens without a `kid` header (the launcher has one key; OpenID Connect Core §10.1 allows it).
    #[arg(long, env = "PASSERELLE_LAUNCHER_ID_TOKEN_WITHOUT_KID")]
    pub id_token_without_kid: bool,
}
