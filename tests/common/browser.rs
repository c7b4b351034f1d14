//! Headless Debian Chromium driven through chromedriver (fantoccini), with a
//! fresh profile and the flags this closed network needs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};

pub struct Browser {
    pub client: Client,
    _driver: Child,
    profile: PathBuf,
}

fn tool(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

impl Browser {
    pub async fn start() -> Browser {
        let driver_bin = tool("PASSERELLE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = tool("PASSERELLE_CHROMIUM", "/usr/bin/chromium");
        assert!(
            std::path::Path::new(&driver_bin).is_file()
                && std::path::Path::new(&chromium).is_file(),
            "chromium and chromedriver are needed: run ./scripts/test, which installs them"
        );
        let port = passerelle_dev::hfs::free_port().unwrap();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{url}/status")).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("passerelle-chrome-{}-{port}", std::process::id()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())
                ],
                // Downloads land in the profile, without asking.
                "prefs": {
                    "download.default_directory": profile.join("downloads").display().to_string(),
                    "download.prompt_for_download": false
                }
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
            profile,
        }
    }

    /// Where downloads land.
    pub fn downloads(&self) -> PathBuf {
        self.profile.join("downloads")
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
