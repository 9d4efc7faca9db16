//! PostgreSQL pool and migrations.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use secrecy::ExposeSecret;
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;
use tokio_postgres_rustls_improved::MakeRustlsConnect;

use crate::settings::{DatabaseSettings, TlsMode, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database url: {0}")]
    Url(String),
    #[error("failed to build the pool: {0}")]
    Build(String),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration {name} failed: {source}")]
    Migration { name: &'static str, source: tokio_postgres::Error },
    #[error("grants (migrations/grants.sql) failed — do the service roles exist? (docs/operations.md): {0}")]
    Grants(tokio_postgres::Error),
    #[error("TLS settings: {0}")]
    Tls(#[from] TlsError),
}

/// A TLS setting that cannot be turned into a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read the CA file {path}: {source}")]
    CaFile { path: String, source: rustls::pki_types::pem::Error },
    #[error("the CA file {path} holds no certificate it can trust: {reason}")]
    NoRoots { path: String, reason: String },
    #[error("no system root certificates to verify the server against (set tls.ca_file): {0}")]
    SystemRoots(String),
}

/// The root certificates `tls` trusts: its `ca_file`, else the system's.
pub fn root_store(tls: &TlsSettings) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let named = |path: &Path| path.display().to_string();
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| TlsError::CaFile { path: named(path), source })?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(TlsError::NoRoots { path: named(path), reason: "no parsable certificate".into() });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if let Some(error) = found.errors.first() {
                tracing::warn!(%error, "some system root certificates were not read");
            }
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(TlsError::SystemRoots("none found".into()));
            }
        }
    }
    Ok(roots)
}

/// A rustls client configuration that verifies the server's chain against
/// [`root_store`] and its name against the host dialled.
pub fn client_config(tls: &TlsSettings) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder().with_root_certificates(root_store(tls)?).with_no_client_auth())
}

/// The pool manager for `config`, in plaintext or verified TLS as `tls` says.
/// In TLS the session is `sslmode=require` whatever the URL says: the URL's
/// `prefer` would fall back to plaintext when the server offers no TLS.
pub(crate) fn manager(mut config: tokio_postgres::Config, tls: &TlsSettings) -> Result<Manager, DbError> {
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Verified };
    Ok(match tls.mode {
        TlsMode::Disable => Manager::from_config(config, NoTls, recycling),
        TlsMode::VerifyFull => {
            config.ssl_mode(SslMode::Require);
            let connector = MakeRustlsConnect::new(client_config(tls)?);
            Manager::from_config(config, connector, recycling)
        }
    })
}

/// The SQL migrations of `migrations/`, applied in order, each once.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_events_and_replica", include_str!("../../migrations/0001_events_and_replica.sql")),
    ("0002_entries_and_ledger", include_str!("../../migrations/0002_entries_and_ledger.sql")),
    ("0003_dispatch_and_outbox", include_str!("../../migrations/0003_dispatch_and_outbox.sql")),
    ("0004_ledger_counts_any_order", include_str!("../../migrations/0004_ledger_counts_any_order.sql")),
    ("0005_payout_guard", include_str!("../../migrations/0005_payout_guard.sql")),
    ("0006_entries_one_row_per_entry", include_str!("../../migrations/0006_entries_one_row_per_entry.sql")),
    ("0007_dispatch_figures", include_str!("../../migrations/0007_dispatch_figures.sql")),
    ("0008_parked_gifts", include_str!("../../migrations/0008_parked_gifts.sql")),
    ("0009_entry_tickets", include_str!("../../migrations/0009_entry_tickets.sql")),
    ("0010_no_member_tables", include_str!("../../migrations/0010_no_member_tables.sql")),
    ("0011_operator_actions", include_str!("../../migrations/0011_operator_actions.sql")),
    ("0012_event_gift", include_str!("../../migrations/0012_event_gift.sql")),
    ("0013_refused_dispatches", include_str!("../../migrations/0013_refused_dispatches.sql")),
    ("0014_event_shuffles", include_str!("../../migrations/0014_event_shuffles.sql")),
    ("0015_event_line_depth", include_str!("../../migrations/0015_event_line_depth.sql")),
];

/// Every service role's privileges, applied after the migrations on every
/// run of [`migrate`] (idempotent, the whole set each time).
pub const GRANTS: &str = include_str!("../../migrations/grants.sql");

/// Builds a pool with every timeout set (a pool without them hangs forever
/// when the server is gone) and connections verified on recycle.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, DbError> {
    let mut config =
        tokio_postgres::Config::from_str(settings.url.expose_secret()).map_err(|e| DbError::Url(e.to_string()))?;
    // Credentials in the URL win; the separate fields fill what it leaves out.
    if config.get_user().is_none() {
        if let Some(user) = &settings.user {
            config.user(user);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = &settings.password {
            config.password(password.expose_secret());
        }
    }
    // A statement stuck on a lock would stall a consume loop with no error:
    // bound every statement and lock wait on the server side.
    config.options(format!(
        "-c statement_timeout={} -c lock_timeout={}",
        settings.statement_timeout_ms, settings.statement_timeout_ms
    ));
    let manager = manager(config, &settings.tls)?;
    let timeout = Some(Duration::from_millis(settings.timeout_ms));
    Pool::builder(manager)
        .max_size(settings.max_connections)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts { wait: timeout, create: timeout, recycle: timeout })
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// Applies the migrations not yet applied, then [`GRANTS`]. Safe to run from
/// several processes at once: an advisory lock serialises them. Runs as the
/// database owner (`firstcome db migrate`, the test kit), never as a service.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(727274);
         CREATE TABLE IF NOT EXISTS schema_migrations (
             name text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let mut applied = 0;
    for (name, sql) in MIGRATIONS {
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE name = $1", &[name]).await?.is_some();
        if done {
            continue;
        }
        tx.batch_execute(sql).await.map_err(|source| DbError::Migration { name, source })?;
        tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name]).await?;
        tracing::info!(migration = name, "applied");
        applied += 1;
    }
    tx.batch_execute(GRANTS).await.map_err(DbError::Grants)?;
    tx.commit().await?;
    Ok(applied)
}

/// Creates database `name` on the server of `settings` if it is missing
/// (tests and fresh installs).
pub async fn create_database(settings: &DatabaseSettings, name: &str) -> Result<(), DbError> {
    let admin = pool(&settings.with_database("postgres"))?;
    let client = admin.get().await?;
    let exists = client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some();
    if !exists {
        // Identifiers cannot be bound as parameters; `name` is quoted.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client.batch_execute(&format!("CREATE DATABASE {quoted}")).await?;
    }
    Ok(())
}
