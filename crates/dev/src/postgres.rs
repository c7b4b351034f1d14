//! A throw-away PostgreSQL server for the tests of Passerelle's shared store
//! (several instances on one database): `initdb` in a temporary folder,
//! then `postgres` on a free loopback port with its socket in that folder,
//! no system service. Trust authentication on loopback only, durability
//! off (`fsync=off`): test data, never kept. The server is stopped
//! (`SIGQUIT`, PostgreSQL's immediate shutdown, which also frees its shared
//! memory) when the handle is dropped, and sent the same signal by the
//! kernel if the test process dies.
//!
//! `initdb` and `postgres` refuse to run as root; run as root, the harness
//! starts them as the `postgres` user (Debian's package makes it), else
//! `nobody`, and makes the folder theirs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Where Debian's `postgresql-15` puts its programs (the set-up scripts
/// install it); `PASSERELLE_POSTGRES_BIN` names another folder.
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("PASSERELLE_POSTGRES_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "PostgreSQL was not found in {0} (initdb, postgres); run ./scripts/test once to install it (Debian package postgresql), or set PASSERELLE_POSTGRES_BIN"
    )]
    MissingBinary(String),
    #[error("PostgreSQL could not be started: {0}")]
    Spawn(String),
    #[error("{0} failed; its output:\n{1}")]
    Tool(&'static str, String),
    #[error("PostgreSQL was not ready after {0} s; its last lines:\n{1}")]
    NotReady(u64, String),
}

/// A running PostgreSQL server.
pub struct Postgres {
    child: Child,
    bin_dir: PathBuf,
    port: u16,
    dir: PathBuf,
    user: Option<(u32, u32)>,
}

/// The login the harness creates (superuser of the throw-away cluster).
const ROLE: &str = "passerelle";

impl Postgres {
    /// A server for a test, from [`default_bin_dir`]: a test without
    /// PostgreSQL fails here saying how to install it (it is never skipped).
    pub async fn for_tests() -> Postgres {
        Postgres::start(&default_bin_dir())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Make a cluster and start it; ready when it accepts connections.
    pub async fn start(bin_dir: &Path) -> Result<Postgres, PostgresError> {
        for tool in ["initdb", "postgres", "pg_isready", "createdb"] {
            if !bin_dir.join(tool).is_file() {
                return Err(PostgresError::MissingBinary(bin_dir.display().to_string()));
            }
        }
        let user = unprivileged_user()?;
        let dir = unique_dir()?;
        if let Some((uid, gid)) = user {
            chown(&dir, uid, gid)?;
        }
        let data = dir.join("data");
        let mut initdb = as_user(Command::new(bin_dir.join("initdb")), user);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C");
        run_tool("initdb", &mut initdb).await?;
        let port = crate::hfs::free_port().map_err(|e| PostgresError::Spawn(e.to_string()))?;
        let log = std::fs::File::create(dir.join("postgres.log"))
            .map_err(|e| PostgresError::Spawn(e.to_string()))?;
        if let Some((uid, gid)) = user {
            chown(&dir.join("postgres.log"), uid, gid)?;
        }
        let log_err = log
            .try_clone()
            .map_err(|e| PostgresError::Spawn(e.to_string()))?;
        let mut cmd = as_user(Command::new(bin_dir.join("postgres")), user);
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|e| PostgresError::Spawn(e.to_string()))?;
        let mut pg = Postgres {
            child,
            bin_dir: bin_dir.to_path_buf(),
            port,
            dir,
            user,
        };
        pg.wait_ready(Duration::from_secs(60)).await?;
        Ok(pg)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), PostgresError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(PostgresError::Spawn(format!(
                    "postgres stopped during start-up; its last lines:\n{}",
                    self.log_tail()
                )));
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
                .args(["-d", "postgres", "-q"])
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "PostgreSQL is ready"
                );
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(PostgresError::NotReady(limit.as_secs(), self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port)
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// A new, empty database (one per test, so tests on one server do not
    /// see each other's rows); returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, PostgresError> {
        let mut createdb = Command::new(self.bin_dir.join("createdb"));
        createdb
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .arg(name);
        run_tool("createdb", &mut createdb).await?;
        Ok(self.url_of(name))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the server runs as another user than this process.
    pub fn runs_as_other_user(&self) -> bool {
        self.user.is_some()
    }
}

impl Drop for Postgres {
    /// Immediate shutdown, waited for (a few hundred milliseconds) so the
    /// folder is removed after the server is gone; killed if it lingers.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
            let until = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `postgres` (else `nobody`) when this process is root, else none.
fn unprivileged_user() -> Result<Option<(u32, u32)>, PostgresError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: a NUL-terminated name; the record is read at once, before
        // any other getpw* call of this thread.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null, as getpwnam returned it.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Ok(Some((uid, gid)));
        }
    }
    Err(PostgresError::Spawn(
        "run as root, and neither a postgres nor a nobody user exists to run PostgreSQL as".into(),
    ))
}

/// `cmd`, to be run as `user` (gid first, then uid, then the parent-death
/// signal, which a change of credentials clears: `SIGQUIT`, PostgreSQL's
/// immediate shutdown).
fn as_user(mut cmd: Command, user: Option<(u32, u32)>) -> Command {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    cmd
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), PostgresError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| PostgresError::Spawn(format!("{}: {e}", path.display())))
}

fn unique_dir() -> Result<PathBuf, PostgresError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "passerelle-pg-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| PostgresError::Spawn(e.to_string()))?;
    Ok(dir)
}

/// Run one of PostgreSQL's tools to its end; what it printed is the error
/// when it fails.
async fn run_tool(tool: &'static str, cmd: &mut Command) -> Result<(), PostgresError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| PostgresError::Spawn(e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(PostgresError::Tool(
        tool,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_postgresql_is_named_with_how_to_install_it() {
        let e = Postgres::start(Path::new("/nonexistent/postgresql/bin"))
            .await
            .err()
            .expect("no server without its programs")
            .to_string();
        assert!(e.contains("/nonexistent/postgresql/bin"), "{e}");
        assert!(
            e.contains("./scripts/test") && e.contains("PASSERELLE_POSTGRES_BIN"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_server_starts_on_loopback_with_a_fresh_database_each_and_stops_on_drop() {
        let pg = Postgres::for_tests().await;
        let url = pg.create_database("one").await.unwrap();
        assert!(url.starts_with("postgres://passerelle@127.0.0.1:") && url.ends_with("/one"));
        assert!(pg.create_database("one").await.is_err(), "it exists");
        let dir = pg.dir.clone();
        let port = pg.port;
        drop(pg);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!dir.exists(), "its folder is removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "nothing listens any more"
        );
    }
}
