//! Runs the service binaries as child processes (the demo, and later the
//! chaos drills, which SIGKILL them): each with its own environment, its log
//! in a file, and a health check to wait on.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// One running service process.
pub struct ServiceProcess {
    pub name: String,
    pub health_url: String,
    pub log: PathBuf,
    child: Child,
}

/// How to start one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// A name for logs (`ingest-1`).
    pub name: String,
    /// The binary, next to `firstcome` (`ingest`, `stock-processor`, …).
    pub binary: String,
    /// Environment on top of ours (`FIRSTCOME_…`).
    pub env: Vec<(String, String)>,
    /// `http://127.0.0.1:<port>/healthz`
    pub health_url: String,
}

/// Where the service binaries are: beside the running `firstcome`.
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("Failed to locate the firstcome binary")?;
    exe.parent().map(Path::to_path_buf).context("firstcome has no parent folder")
}

impl ServiceProcess {
    /// Starts `spec`, logging to `<log_dir>/<name>.log`.
    pub fn start(spec: &ServiceSpec, log_dir: &Path) -> anyhow::Result<Self> {
        let binary = binary_dir()?.join(&spec.binary);
        if !binary.exists() {
            bail!("{} not built (cargo build --bins)", binary.display());
        }
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{}.log", spec.name));
        let out = std::fs::File::create(&log).with_context(|| format!("Failed to create {}", log.display()))?;
        let child = Command::new(&binary)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("Failed to start {}", binary.display()))?;
        Ok(Self { name: spec.name.clone(), health_url: spec.health_url.clone(), log, child })
    }

    /// Waits until `/healthz` answers 200; fails naming the log otherwise.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).no_proxy().build()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}); see {}", self.name, self.log.display());
            }
            if let Ok(response) = client.get(&self.health_url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{} not healthy after {:?}; see {}", self.name, timeout, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    /// SIGKILL now (chaos).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
