//! `firstcome rebuild`: Kafka is the log of record; the stores that derive
//! from it can be rebuilt from it.
//!
//! - [`redis`]: one event's stock state (counter, winners, decisions, returned
//!   units, waitlist, first-entry marks) from the three stock topics.
//! - [`projections`]: the PostgreSQL projections (entries, outcomes, ledger,
//!   dispatch outcomes) into fresh tables, to compare with the live ones.

pub mod projections;
pub mod redis;

use serde_json::json;

use crate::audit_trail::{audited, Action};
use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// `firstcome rebuild …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RebuildCommand {
    /// Rebuild one event's stock state in Redis from survey-submitted, stock-decided and
    /// stock-released (read_committed, from 10 minutes before its opening) and swap it in
    /// atomically.
    Redis { event_id: String },
    /// Rebuild the PostgreSQL projections from Kafka into fresh tables and compare them
    /// with the live ones (exit 1 when they differ).
    Projections,
}

impl RebuildCommand {
    pub fn needs(&self) -> &'static [Need] {
        match self {
            RebuildCommand::Redis { .. } => &[Need::Redis, Need::Database, Need::Replica, Need::Kafka, Need::Registry],
            RebuildCommand::Projections => &[Need::Database, Need::Kafka, Need::Registry],
        }
    }
}

pub async fn command(settings: &CliSettings, command: RebuildCommand) -> anyhow::Result<Output> {
    match command {
        RebuildCommand::Redis { event_id } => {
            let report = audited(
                settings,
                Action::new("rebuild redis", Some(&event_id), json!({})),
                redis::rebuild(settings, &event_id),
            )
            .await?;
            Ok(Output::new(serde_json::to_string_pretty(&report)?, &report))
        }
        RebuildCommand::Projections => {
            let outcome =
                audited(settings, Action::new("rebuild projections", None, json!({})), projections::rebuild(settings))
                    .await?;
            let equal = outcome.comparison.is_equal();
            Ok(Output::new(projections::render(&outcome), &projections::json(&outcome)).failed_if(
                !equal,
                format!(
                    "the projections rebuilt from Kafka differ from the live tables (rebuilt tables kept in schema {})",
                    outcome.rebuilt.schema
                ),
            ))
        }
    }
}
