//! TLS to PostgreSQL and Redis through platform's own connection code
//! (`db::pool`, `member_db::replica_pool`, `redis::connect`), `verify-full`
//! against a throwaway CA, and the refusal of plaintext outside local.
//!
//! The servers are throwaway instances this test starts on unused ports
//! (a PostgreSQL cluster from `initdb`, a `redis-server` with a `tls-port`
//! only), so the shared stack other tests use is never reconfigured. Each
//! readiness wait polls the server, never a fixed sleep. Needs `openssl`,
//! the stack's PostgreSQL binaries and `redis-server` (`stack/bin/stack install`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use platform::settings::{
    DatabaseSettings, Environment, RedisSettings, ReplicaSettings, SettingsError, TlsMode, TlsSettings,
};
use secrecy::SecretString;
use tokio::process::{Child, Command};

const READY_WITHIN: Duration = Duration::from_secs(20);

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("firstcome-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(program: &str, args: &[&str], dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new(program).args(args).current_dir(dir).stdin(Stdio::null()).output().await?;
    if !out.status.success() {
        return Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// A CA (`<name>-ca.pem`) and, when `server`, a certificate it signs for
/// `localhost` and 127.0.0.1 (`server.pem`, `server.key`).
async fn authority(dir: &Path, name: &str, server: bool) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let (key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    let subject = format!("/CN=firstcome throwaway {name} CA");
    run(
        "openssl",
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subject, "-keyout", &key, "-out",
            &ca,
        ],
        dir,
    )
    .await?;
    if server {
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
            dir,
        )
        .await?;
        std::fs::write(dir.join("san.ext"), "subjectAltName = DNS:localhost, IP:127.0.0.1\n")?;
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                &ca,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
            dir,
        )
        .await?;
    }
    Ok(dir.join(ca))
}

/// The directory of the PostgreSQL server binaries, as `stack/bin/stack` finds it.
fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort_by_key(|d| d.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok()));
    dirs.into_iter().rev().map(|d| d.join("bin")).find(|bin| bin.join("initdb").exists())
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A throwaway PostgreSQL cluster with `ssl = on`, stopped on drop.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    root: bool,
    port: u16,
}

impl Postgres {
    /// PostgreSQL refuses to run as root: then the cluster belongs to `postgres`.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path).current_dir("/");
            command
        } else {
            Command::new(path)
        }
    }

    async fn start(dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let bin = pg_bin().ok_or("no PostgreSQL binaries under /usr/lib/postgresql (stack/bin/stack install)")?;
        let root = is_root();
        let port = platform::ports::unused_port()?;
        let pg = Self { bin, data: dir.join("pg"), root, port };
        // The server reads its key only when the key is its own and private.
        std::fs::copy(dir.join("server.pem"), dir.join("pg-server.pem"))?;
        std::fs::copy(dir.join("server.key"), dir.join("pg-server.key"))?;
        if root {
            run("chown", &["-R", "postgres:", "."], dir).await?;
            run("chmod", &["0755", "."], dir).await?;
        }
        run("chmod", &["0600", "pg-server.key"], dir).await?;
        let data = pg.data.to_string_lossy().to_string();
        let init = pg
            .command("initdb")
            .args(["-D", &data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .stdout(Stdio::null())
            .output()
            .await?;
        if !init.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&init.stderr)).into());
        }
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off -c ssl=on \
             -c ssl_cert_file={dir}/pg-server.pem -c ssl_key_file={dir}/pg-server.key",
            sockets = dir.display(),
            dir = dir.display(),
        );
        let log = dir.join("pg.log").to_string_lossy().to_string();
        let started = pg
            .command("pg_ctl")
            .args(["-D", &data, "-l", &log, "-w", "-t", "20", "-o", &options, "start"])
            .output()
            .await?;
        if !started.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("pg_ctl start: {}{log}", String::from_utf8_lossy(&started.stderr)).into());
        }
        Ok(pg)
    }

    fn settings(&self, tls: TlsSettings) -> DatabaseSettings {
        DatabaseSettings {
            url: SecretString::from(format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)),
            tls,
            timeout_ms: 5_000,
            ..Default::default()
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut command = if self.root {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl).current_dir("/");
            command
        } else {
            std::process::Command::new(pg_ctl)
        };
        let _ = command.arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}

/// A throwaway `redis-server` listening on a `tls-port` only, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let port = platform::ports::unused_port()?;
        let file = |name: &str| dir.join(name).to_string_lossy().to_string();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &file("server.pem"), "--tls-key-file", &file("server.key")])
            .args(["--tls-ca-cert-file", &file("stack-ca.pem"), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no", "--dir", &dir.to_string_lossy()])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child, port })
    }

    fn settings(&self, tls: TlsSettings) -> RedisSettings {
        RedisSettings { url: format!("redis://127.0.0.1:{}", self.port), tls, ..Default::default() }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `attempt` until it succeeds or [`READY_WITHIN`] passes (the
/// server is still starting: connection refused).
async fn until_ready<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    mut attempt: impl FnMut() -> F,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if start.elapsed() > READY_WITHIN => return Err(error.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn postgres_and_redis_are_reached_in_verified_tls_and_a_foreign_ca_is_refused() -> TestResult {
    let scratch = Scratch::new()?;
    let dir = &scratch.0;
    let ca = authority(dir, "stack", true).await?;
    // A CA that signed nothing here: verification against it must fail.
    let foreign = authority(dir, "foreign", false).await?;
    let redis = Redis::start(dir).await?;
    let pg = Postgres::start(dir).await?;

    // PostgreSQL: the session is encrypted (pg_stat_ssl), through db::pool.
    let pool = platform::db::pool(&pg.settings(TlsSettings::verify_full(&ca)))?;
    let client = until_ready(|| pool.get()).await?;
    let ssl: bool = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?.get(0);
    assert!(ssl, "the session is TLS");
    // The member replica's pool goes through the same connector.
    let replica = ReplicaSettings {
        url: SecretString::from(format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port)),
        tls: TlsSettings::verify_full(&ca),
        ..Default::default()
    };
    let replica = platform::member_db::replica_pool(&replica)?.get().await?;
    let ssl: bool = replica.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?.get(0);
    assert!(ssl, "the replica session is TLS");
    // Plaintext still works on the same server (the local default).
    let plain = platform::db::pool(&pg.settings(TlsSettings::default()))?.get().await?;
    let ssl: bool = plain.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await?.get(0);
    assert!(!ssl, "tls.mode = disable is plaintext");
    let refused = platform::db::pool(&pg.settings(TlsSettings::verify_full(&foreign)))?.get().await;
    let error = refused.err().ok_or("a server certificate from another CA was accepted")?;
    assert!(format!("{error:?}").to_lowercase().contains("certificate"), "{error:?}");

    // Redis: only the TLS port listens, so a command answered is TLS.
    let verified = redis.settings(TlsSettings::verify_full(&ca));
    let mut connection = until_ready(|| platform::redis::connect(&verified)).await?;
    let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
    assert_eq!(pong, "PONG");
    let _: () = redis::cmd("SET").arg("tls-probe").arg("1").query_async(&mut connection).await?;
    let value: String = redis::cmd("GET").arg("tls-probe").query_async(&mut connection).await?;
    assert_eq!(value, "1");
    let foreign_redis = platform::redis::connect(&redis.settings(TlsSettings::verify_full(&foreign))).await;
    assert!(foreign_redis.is_err(), "a Redis certificate from another CA was accepted");
    Ok(())
}

#[test]
fn plaintext_to_the_stores_is_refused_outside_local() {
    let prod = Environment::Production;
    let database = DatabaseSettings {
        url: SecretString::from("postgres://app:Zq9-long-random@db.internal:5432/firstcome"),
        ..Default::default()
    };
    assert_eq!(database.tls.mode, TlsMode::Disable, "the default runs the local stack");
    let refused: Result<(), SettingsError> = prod.check_database("database", &database);
    assert!(refused.is_err_and(|e| e.to_string().contains("database.tls.mode")));
    assert!(Environment::Local.check_database("database", &database).is_ok());
    let redis = RedisSettings { url: "redis://cache.internal:6379".into(), ..Default::default() };
    assert!(prod.check_redis("redis", &redis).is_err_and(|e| e.to_string().contains("redis.tls.mode")));
    let verified = RedisSettings { tls: TlsSettings::verify_full("/etc/ssl/cache-ca.pem"), ..redis };
    assert!(prod.check_redis("redis", &verified).is_ok());
}
