//! Runs the service binaries as child processes (the demo, the drill, and
//! the chaos suite, which SIGKILLs them): each with its own environment, its log
//! in a file, and a health check to wait on; the chaos suite also kills
//! them (SIGKILL), freezes them (SIGSTOP/SIGCONT) and restarts them alike.

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
    /// How it was started: [`restart`](Self::restart) starts it again alike.
    pub spec: ServiceSpec,
    child: Child,
    /// Starts so far (1 after `start`): each start appends to the same log.
    pub starts: u32,
}

/// How to start one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// A name for logs (`ingest-1`).
    pub name: String,
    /// The binary, next to `firstcome-lab` (`ingest`, `stock-processor`, …).
    pub binary: String,
    /// Its environment: `FIRSTCOME_CONFIG`, its settings file
    /// ([`ServiceSpec::new`]); the lab's own `FIRSTCOME_*` variables are not passed on.
    pub env: Vec<(String, String)>,
    /// `http://127.0.0.1:<port>/healthz`
    pub health_url: String,
}

/// Where the service binaries are: beside the running `firstcome-lab`, or in
/// `FIRSTCOME_BIN_DIR` when set.
pub fn binary_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FIRSTCOME_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("Failed to locate the firstcome-lab binary")?;
    exe.parent().map(Path::to_path_buf).context("firstcome-lab has no parent folder")
}

impl ServiceProcess {
    /// Starts `spec`, logging to `<log_dir>/<name>.log`.
    pub fn start(spec: &ServiceSpec, log_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{}.log", spec.name));
        let out = std::fs::File::create(&log).with_context(|| format!("Failed to create {}", log.display()))?;
        let child = spawn(spec, out)?;
        Ok(Self {
            name: spec.name.clone(),
            health_url: spec.health_url.clone(),
            log,
            spec: spec.clone(),
            child,
            starts: 1,
        })
    }

    /// Starts the same spec again after it died or was killed, appending to
    /// its log (a line marks each restart).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .with_context(|| format!("Failed to open {}", self.log.display()))?;
        self.starts += 1;
        writeln!(
            out,
            "\n===== restart {} of {} ({}) =====",
            self.starts - 1,
            self.name,
            chrono::Utc::now().to_rfc3339()
        )?;
        self.child = spawn(&self.spec, out)?;
        Ok(())
    }

    /// SIGKILL now and reap the process; the value stays, ready to
    /// [`restart`](Self::restart) (chaos).
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process, if it runs.
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self.child.id() else { bail!("{} is not running", self.name) };
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().await?;
        anyhow::ensure!(status.success(), "kill -{signal} {pid} ({}) failed", self.name);
        Ok(())
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Starts every spec, logging into `dir`, and waits until each answers
/// `/healthz`. A service that does not fails the start: those already
/// running are killed as the error drops them (`kill_on_drop`).
pub async fn start_all(specs: &[ServiceSpec], dir: &Path, timeout: Duration) -> anyhow::Result<Vec<ServiceProcess>> {
    let mut running = Vec::with_capacity(specs.len());
    // All started before any is waited on: they come up side by side.
    for spec in specs {
        running.push(ServiceProcess::start(spec, dir)?);
    }
    for service in &mut running {
        service.wait_healthy(timeout).await?;
        crate::say!(
            "  {:<16} healthy (pid {}, log {})",
            service.name,
            service.pid().unwrap_or(0),
            service.log.display()
        );
    }
    Ok(running)
}

/// Stops every service at once (each: SIGTERM, then SIGKILL after `grace`).
pub async fn stop_all(services: Vec<ServiceProcess>, grace: Duration) {
    futures::future::join_all(services.into_iter().map(|service| service.stop(grace))).await;
}

/// Spawns the binary of `spec` with its output into `out`.
fn spawn(spec: &ServiceSpec, out: std::fs::File) -> anyhow::Result<Child> {
    let binary = binary_dir()?.join(&spec.binary);
    if !binary.exists() {
        bail!("{} not built (cargo build --bins)", binary.display());
    }
    let mut command = Command::new(&binary);
    // The service reads its settings file alone: a variable of the lab's
    // environment would win over the file (the environment is the last layer).
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("FIRSTCOME_")) {
            command.env_remove(&key);
        }
    }
    let child = command
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("Failed to start {}", binary.display()))?;
    Ok(child)
}

impl ServiceProcess {
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
