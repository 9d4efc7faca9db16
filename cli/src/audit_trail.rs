//! Operator actions, audited: who did what to which event, and when.
//!
//! Every command that changes an event or a store (`event create`, `event
//! close`, `rebuild redis`, `rebuild projections`, `dlq replay`, `reconcile
//! --repair`, `topics create`, `schemas register`, `members seed`) runs
//! through [`audited`]: a row in `operator_actions` (migrations/0011) is
//! written *before* the action — an action that cannot be recorded does not
//! run — and completed with its outcome after, and a log line says the same
//! on stderr (target `operator_audit`, shown at the default verbosity). "Who"
//! is `--operator` (or `FIRSTCOME_OPERATOR_NAME`), else the OS user; the row
//! also keeps the database role the command logged in as.
//!
//! `db migrate` is the one exception to "recorded first", because it makes
//! the table: [`audited_migration`] records it before when `operator_actions`
//! already exists, and right after the migrations ran when they created it
//! (one finished row; a migration that failed there rolled the table back
//! with it, so that failure is only logged).
//!
//! Dry runs and read-only commands change nothing and leave no row.

use std::future::Future;

use anyhow::Context;
use serde_json::Value;

use crate::settings::CliSettings;

/// The log target of the audit lines (`firstcome`'s default filter shows it).
pub const LOG_TARGET: &str = "operator_audit";

/// Why an action was refused before it ran.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "refusing to {action} unaudited: the operator_actions row could not be written (is the database migrated?)"
    )]
    NotRecorded {
        action: &'static str,
        #[source]
        source: anyhow::Error,
    },
}

/// An action to record: what, on which event, with which arguments.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// `event create`, `dlq replay`, …
    pub what: &'static str,
    pub event_id: Option<&'a str>,
    /// The command's arguments (JSON object).
    pub detail: Value,
}

impl<'a> Action<'a> {
    pub fn new(what: &'static str, event_id: Option<&'a str>, detail: Value) -> Self {
        Self { what, event_id, detail }
    }
}

/// Who runs the command: `--operator` when given, else the OS user.
pub fn operator(settings: &CliSettings) -> String {
    settings.operator.clone().filter(|o| !o.trim().is_empty()).unwrap_or_else(os_user)
}

/// The OS user: `$USER`, `$LOGNAME`, else the numeric uid of this process.
pub fn os_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(var) {
            if !name.trim().is_empty() {
                return name;
            }
        }
    }
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").map(|m| format!("uid:{}", m.uid())).unwrap_or_else(|_| "unknown".into())
}

/// Records `action`, runs `work`, records how it ended; returns what `work`
/// returned. The row is written first: if it cannot be, `work` never runs.
/// A failure to complete the row afterwards is logged (the row stays
/// `started`) and does not hide the action's own result.
#[tracing::instrument(name = "operator_action", skip_all, fields(action = action.what, event_id = action.event_id))]
pub async fn audited<T, F>(settings: &CliSettings, action: Action<'_>, work: F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let who = operator(settings);
    let pool = platform::db::pool(&settings.database)?;
    let started =
        start(&pool, &who, &action).await.map_err(|source| AuditError::NotRecorded { action: action.what, source })?;
    tracing::info!(
        target: LOG_TARGET,
        id = started,
        operator = %who,
        action = action.what,
        event_id = action.event_id.unwrap_or("-"),
        detail = %action.detail,
        "operator action started: {} by {who}",
        action.what
    );
    let result = work.await;
    let (outcome, error) = match &result {
        Ok(_) => ("done", None),
        Err(e) => ("failed", Some(platform::error::chain(e.as_ref()).to_string())),
    };
    if let Err(e) = finish(&pool, started, outcome, error.as_deref()).await {
        tracing::warn!(target: LOG_TARGET, id = started, error = %format!("{e:#}"), "the operator action's outcome was not recorded");
    }
    tracing::info!(
        target: LOG_TARGET,
        id = started,
        operator = %who,
        action = action.what,
        event_id = action.event_id.unwrap_or("-"),
        outcome,
        error = error.as_deref().unwrap_or(""),
        "operator action {outcome}: {} by {who}",
        action.what
    );
    result
}

/// [`audited`] for `db migrate`, which creates `operator_actions` itself.
///
/// The rule: if the table exists before `work` runs, the action is recorded
/// first, exactly as [`audited`] does. If it does not (a fresh database), the
/// migrations run unrecorded and the row is written right after them, already
/// finished, its `started_at` set back by the time they took; if the table
/// still does not exist then (the migrations failed and rolled back), the
/// failure is only logged.
#[tracing::instrument(name = "operator_action", skip_all, fields(action = action.what))]
pub async fn audited_migration<T, F>(settings: &CliSettings, action: Action<'_>, work: F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let pool = platform::db::pool(&settings.database)?;
    if table_exists(&pool).await? {
        return audited(settings, action, work).await;
    }
    let who = operator(settings);
    let began = std::time::Instant::now();
    let result = work.await;
    let (outcome, error) = match &result {
        Ok(_) => ("done", None),
        Err(e) => ("failed", Some(platform::error::chain(e.as_ref()).to_string())),
    };
    let recorded = match table_exists(&pool).await {
        Ok(true) => record_finished(&pool, &who, &action, began.elapsed(), outcome, error.as_deref()).await.map(Some),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    match recorded {
        Ok(id) => tracing::info!(
            target: LOG_TARGET,
            id,
            operator = %who,
            action = action.what,
            outcome,
            error = error.as_deref().unwrap_or(""),
            "operator action {outcome}: {} by {who} (recorded after it ran: it created operator_actions)",
            action.what
        ),
        Err(e) => tracing::warn!(
            target: LOG_TARGET,
            operator = %who,
            action = action.what,
            outcome,
            error = %format!("{e:#}"),
            "operator action {outcome}: {} by {who}, not recorded",
            action.what
        ),
    }
    result
}

/// Whether `operator_actions` exists in the database's search path.
async fn table_exists(pool: &deadpool_postgres::Pool) -> anyhow::Result<bool> {
    let client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    let row = client
        .query_one("SELECT to_regclass('operator_actions') IS NOT NULL", &[])
        .await
        .context("Failed to look for the operator_actions table")?;
    Ok(row.get(0))
}

/// One row for an action that already ran (`took` long, by the local clock;
/// both ends on the database's).
async fn record_finished(
    pool: &deadpool_postgres::Pool,
    who: &str,
    action: &Action<'_>,
    took: std::time::Duration,
    outcome: &str,
    error: Option<&str>,
) -> anyhow::Result<i64> {
    let client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    let row = client
        .query_one(
            "INSERT INTO operator_actions (started_at, finished_at, operator, action, event_id, detail, outcome, error)
             VALUES (now() - make_interval(secs => $1), now(), $2, $3, $4, $5, $6, $7) RETURNING id",
            &[&took.as_secs_f64(), &who, &action.what, &action.event_id, &action.detail, &outcome, &error],
        )
        .await
        .context("Failed to insert the operator_actions row")?;
    Ok(row.get(0))
}

async fn start(pool: &deadpool_postgres::Pool, who: &str, action: &Action<'_>) -> anyhow::Result<i64> {
    let client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    let row = client
        .query_one(
            "INSERT INTO operator_actions (operator, action, event_id, detail) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&who, &action.what, &action.event_id, &action.detail],
        )
        .await
        .context("Failed to insert the operator_actions row")?;
    Ok(row.get(0))
}

async fn finish(pool: &deadpool_postgres::Pool, id: i64, outcome: &str, error: Option<&str>) -> anyhow::Result<()> {
    let client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    client
        .execute(
            "UPDATE operator_actions SET outcome = $2, error = $3, finished_at = now() WHERE id = $1",
            &[&id, &outcome, &error],
        )
        .await
        .context("Failed to complete the operator_actions row")?;
    Ok(())
}

/// One recorded action, as `event show` and the tests read it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    pub id: i64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub operator: String,
    pub db_user: String,
    pub action: String,
    pub event_id: Option<String>,
    pub detail: Value,
    pub outcome: String,
    pub error: Option<String>,
}

/// The actions recorded for `event_id` (every action when `None`), oldest first.
pub async fn recorded(settings: &CliSettings, event_id: Option<&str>) -> anyhow::Result<Vec<Recorded>> {
    let pool = platform::db::pool(&settings.database)?;
    let client = pool.get().await.context("Failed to connect to PostgreSQL")?;
    let rows = client
        .query(
            "SELECT id, started_at, finished_at, operator, db_user, action, event_id, detail, outcome, error
             FROM operator_actions WHERE $1::text IS NULL OR event_id = $1 ORDER BY id",
            &[&event_id],
        )
        .await
        .context("Failed to read operator_actions")?;
    Ok(rows
        .iter()
        .map(|r| Recorded {
            id: r.get(0),
            started_at: r.get(1),
            finished_at: r.get(2),
            operator: r.get(3),
            db_user: r.get(4),
            action: r.get(5),
            event_id: r.get(6),
            detail: r.get(7),
            outcome: r.get(8),
            error: r.get(9),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_named_on_the_command_line_wins_over_the_os_user() {
        let settings = CliSettings { operator: Some("alice".into()), ..Default::default() };
        assert_eq!(operator(&settings), "alice");
        let blank = CliSettings { operator: Some("  ".into()), ..Default::default() };
        assert_eq!(operator(&blank), os_user());
        assert!(!os_user().is_empty());
    }
}
