//! The shop's member database (members, phones, purchases), as firstcome
//! reads it: on a streaming replica, so an opening rush never loads the
//! shop's primary.
//!
//! - [`replica_pool`]: what the services and `event create` read from
//!   (`replica.*` settings; read-only sessions).
//! - [`primary_pool`]: the shop's primary, for `firstcome members seed` and
//!   test set-up only (`member_primary.*`).
//! - [`prepare`]: the shop's tables (`migrations/shop/members.sql`) in the
//!   configured schema of the primary; the standbys get them by replay.
//! - [`wait_replayed`]: after a write on the primary, wait until the replica
//!   has replayed it (`pg_last_wal_replay_lsn() >= pg_current_wal_lsn()` of
//!   the primary after the write).

use std::str::FromStr;
use std::time::{Duration, Instant};

use deadpool_postgres::{Pool, Runtime, Timeouts};
use secrecy::{ExposeSecret, SecretString};

use crate::db::DbError;
use crate::settings::{MemberPrimarySettings, ReplicaSettings, TlsSettings};

/// The shop's tables, idempotent (`CREATE … IF NOT EXISTS`).
pub const SHOP_SCHEMA: &str = include_str!("../../migrations/shop/members.sql");

/// Pool on the member replica; every session is read-only and sees the
/// configured schema.
pub fn replica_pool(settings: &ReplicaSettings) -> Result<Pool, DbError> {
    build(
        &settings.url,
        &settings.schema,
        settings.max_connections,
        settings.timeout_ms,
        settings.statement_timeout_ms,
        true,
        &settings.tls,
    )
}

/// Pool on the member primary (the shop's side: seeding, tests).
pub fn primary_pool(settings: &MemberPrimarySettings) -> Result<Pool, DbError> {
    build(
        &settings.url,
        &settings.schema,
        settings.max_connections,
        settings.timeout_ms,
        settings.statement_timeout_ms,
        false,
        &settings.tls,
    )
}

/// Whether `schema` is a plain identifier (lower-case letters, digits, `_`).
pub fn valid_schema(schema: &str) -> bool {
    schema.is_empty()
        || (schema.len() <= 63
            && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with(|c: char| c.is_ascii_digit()))
}

fn build(
    url: &SecretString,
    schema: &str,
    max_connections: usize,
    timeout_ms: u64,
    statement_timeout_ms: u64,
    read_only: bool,
    tls: &TlsSettings,
) -> Result<Pool, DbError> {
    if !valid_schema(schema) {
        return Err(DbError::Url(format!("member database schema {schema:?} is not a plain identifier")));
    }
    let mut config = tokio_postgres::Config::from_str(url.expose_secret()).map_err(|e| DbError::Url(e.to_string()))?;
    let mut options = format!("-c statement_timeout={statement_timeout_ms} -c lock_timeout={statement_timeout_ms}");
    if !schema.is_empty() {
        options.push_str(&format!(" -c search_path={schema}"));
    }
    if read_only {
        options.push_str(" -c default_transaction_read_only=on");
    }
    config.options(options);
    let manager = crate::db::manager(config, tls)?;
    let timeout = Some(Duration::from_millis(timeout_ms));
    Pool::builder(manager)
        .max_size(max_connections)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts { wait: timeout, create: timeout, recycle: timeout })
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// Creates the configured schema (if any) and the shop's tables in it, on
/// the primary.
pub async fn prepare(primary: &Pool, schema: &str) -> Result<(), DbError> {
    let client = primary.get().await?;
    if !schema.is_empty() {
        // `valid_schema` was checked when the pool was built.
        client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).await?;
    }
    client.batch_execute(SHOP_SCHEMA).await?;
    Ok(())
}

/// The primary's current WAL position (text form of a `pg_lsn`).
pub async fn primary_lsn(primary: &Pool) -> Result<String, DbError> {
    let client = primary.get().await?;
    let row = client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?;
    Ok(row.get(0))
}

/// Whether the replica has replayed the WAL up to `lsn`. A server that is
/// not in recovery (a replica setting pointing at a primary) is up to date.
pub async fn replayed(replica: &Pool, lsn: &str) -> Result<bool, DbError> {
    let client = replica.get().await?;
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)
                         ELSE true END",
            &[&lsn],
        )
        .await?;
    Ok(row.get(0))
}

/// The replica did not replay the primary's writes in time.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the member replica did not replay up to {lsn} within {timeout:?} (last error: {last_error})")]
    Timeout { lsn: String, timeout: Duration, last_error: String },
}

/// Waits until the replica has replayed everything the primary wrote so far
/// (polling every 20 ms); returns how long that took. Errors of the replica
/// (it may be restarting) are retried until `timeout`.
pub async fn wait_replayed(primary: &Pool, replica: &Pool, timeout: Duration) -> Result<Duration, ReplayError> {
    let lsn = primary_lsn(primary).await?;
    let started = Instant::now();
    let last_error = std::sync::Mutex::new(String::from("none"));
    let caught_up = crate::wait::poll_until(timeout, Duration::from_millis(20), || {
        let lsn = lsn.clone();
        let last_error = &last_error;
        async move {
            match replayed(replica, &lsn).await {
                Ok(done) => done,
                Err(error) => {
                    *last_error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
                    false
                }
            }
        }
    })
    .await;
    let last_error = last_error.into_inner().unwrap_or_else(|e| e.into_inner());
    if caught_up {
        Ok(started.elapsed())
    } else {
        Err(ReplayError::Timeout { lsn, timeout, last_error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_plain_identifiers() {
        assert!(valid_schema(""));
        assert!(valid_schema("t_0123abcd"));
        assert!(!valid_schema("t-1"));
        assert!(!valid_schema("x; DROP TABLE members"));
        assert!(!valid_schema("1abc"));
    }
}
