//! A local Medplum FHIR engine for the tests: the second, independently
//! written FHIR R4 server Passerelle is tested against (the first is
//! [`crate::hfs`]).
//!
//! It is Medplum's `FhirRouter` over its `MemoryRepository`
//! (`@medplum/fhir-router` [`MEDPLUM_VERSION`] from npm), behind the thin HTTP
//! wrapper `tests/engines/medplum/server.mjs`, which is embedded here so the
//! wrapper that runs is always the one this binary was built with. The npm
//! packages are installed once by `scripts/setup.sh` (`ensure_medplum`) into
//! `~/.cache/passerelle/medplum-<version>`; this runner writes the wrapper
//! into a fresh folder beside a link to that `node_modules`, starts `node` on
//! port 0, and reads the port from the wrapper's first line. The process is
//! killed when the handle is dropped, by the kernel if the test process dies
//! (`PR_SET_PDEATHSIG`), and the wrapper also exits when its standard input
//! (a pipe held by the handle) closes.
//!
//! No SMART: Medplum's in-memory engine has no authorization, so it is an
//! "open server" to Passerelle. Scope enforcement is tested against hfs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use url::Url;

/// The pinned Medplum version; `scripts/setup.sh` installs exactly this one
/// (from `tests/engines/medplum/package-lock.json`).
pub const MEDPLUM_VERSION: &str = "5.2.13";

/// The wrapper, `tests/engines/medplum/server.mjs`.
const SERVER_MJS: &str = include_str!("../../../tests/engines/medplum/server.mjs");

/// Where `ensure_medplum` installs the npm packages, unless
/// `PASSERELLE_MEDPLUM_DIR` says otherwise.
pub fn default_medplum_dir() -> PathBuf {
    std::env::var_os("PASSERELLE_MEDPLUM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            passerelle::config::cache_dir().join(format!("medplum-{MEDPLUM_VERSION}"))
        })
}

/// How Medplum runs a `transaction` Bundle (`FhirRequestConfig.transactions`
/// in `@medplum/fhir-router` `src/batch.ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionMode {
    /// Stop at the first failing entry and answer with its error. The
    /// in-memory repository cannot roll back, so earlier entries stay.
    Atomic,
    /// Process the entries one by one, as a batch: each gets its own status.
    Entries,
}

#[derive(Debug, Clone)]
pub struct MedplumOptions {
    /// The folder holding `node_modules/@medplum/...`.
    pub dir: PathBuf,
    /// The `node` binary (`PASSERELLE_NODE`, else `node` on the `PATH`).
    pub node: PathBuf,
    pub transactions: TransactionMode,
}

impl Default for MedplumOptions {
    fn default() -> Self {
        MedplumOptions {
            dir: default_medplum_dir(),
            node: std::env::var_os("PASSERELLE_NODE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("node")),
            transactions: TransactionMode::Atomic,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MedplumError {
    #[error(
        "Medplum's FHIR engine is not installed in {0}; run ./scripts/test once to install it (or set PASSERELLE_MEDPLUM_DIR)"
    )]
    NotInstalled(String),
    #[error("the Medplum engine could not be started: {0}")]
    Spawn(String),
    #[error("the Medplum engine stopped during start-up; its last lines:\n{0}")]
    Exited(String),
    #[error("the Medplum engine was not ready after {0} s; its last lines:\n{1}")]
    NotReady(u64, String),
}

/// A running Medplum engine.
pub struct Medplum {
    child: Child,
    /// Held open: the wrapper exits when it closes.
    _stdin: Option<ChildStdin>,
    base: Url,
    dir: PathBuf,
}

impl Medplum {
    /// Start the engine and wait until it listens.
    pub async fn start(opts: &MedplumOptions) -> Result<Medplum, MedplumError> {
        let modules = opts.dir.join("node_modules");
        if !modules.join("@medplum").join("fhir-router").is_dir() {
            return Err(MedplumError::NotInstalled(opts.dir.display().to_string()));
        }
        let dir = unique_dir()?;
        let spawn = |e: std::io::Error| MedplumError::Spawn(e.to_string());
        std::fs::write(dir.join("server.mjs"), SERVER_MJS).map_err(spawn)?;
        // Node resolves `@medplum/...` from the script's folder upwards.
        std::os::unix::fs::symlink(&modules, dir.join("node_modules")).map_err(spawn)?;
        let log = std::fs::File::create(dir.join("medplum.log")).map_err(spawn)?;
        let mut cmd = Command::new(&opts.node);
        if node_major(&opts.node).await.is_some_and(|m| m < 22) {
            // @medplum/core reads the global WebSocket when it loads; Node 20
            // has it only behind this flag (Node 22 has it by default).
            cmd.arg("--experimental-websocket");
        }
        cmd.arg(dir.join("server.mjs"))
            .arg("--port")
            .arg("0")
            .arg("--transactions")
            .arg(match opts.transactions {
                TransactionMode::Atomic => "atomic",
                TransactionMode::Entries => "entries",
            })
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the
        // engine when the process that started it dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(spawn)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut medplum = Medplum {
            child,
            _stdin: stdin,
            base: Url::parse("http://127.0.0.1/").expect("valid URL"),
            dir,
        };
        let limit = Duration::from_secs(60);
        let started = Instant::now();
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(limit, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => return Err(MedplumError::Exited(medplum.log_tail())),
            Err(_) => {
                return Err(MedplumError::NotReady(limit.as_secs(), medplum.log_tail()));
            }
        };
        let Some(base) = line
            .strip_prefix("listening ")
            .and_then(|u| Url::parse(u.trim()).ok())
        else {
            return Err(MedplumError::Exited(format!(
                "{line}\n{}",
                medplum.log_tail()
            )));
        };
        // Keep draining stdout so the wrapper never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        medplum.base = base;
        tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "the Medplum engine is ready"
        );
        Ok(medplum)
    }

    /// The FHIR base URL, with a trailing slash (`…/fhir/R4/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The last lines the engine wrote to stderr (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("medplum.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Medplum {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The major version of `node`, if it says.
async fn node_major(node: &std::path::Path) -> Option<u32> {
    let out = Command::new(node).arg("--version").output().await.ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.trim()
        .strip_prefix('v')?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn unique_dir() -> Result<PathBuf, MedplumError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "passerelle-medplum-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| MedplumError::Spawn(e.to_string()))?;
    Ok(dir)
}
