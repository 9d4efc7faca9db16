//! `firstcome db migrate`: audited like every operator action, with one
//! difference since it creates `operator_actions` (migrations/0011) itself:
//! on a database that already has the table the row is written before the
//! migrations run; on a fresh one, right after they ran
//! (`audit_trail::audited_migration`).

use platform::settings::DatabaseSettings;

use crate::audit_trail::{self, Action};
use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// Applies the pending migrations; returns how many ran. Unaudited: the
/// test kit and the lab call it; the operator's command is [`command`].
pub async fn migrate(database: &DatabaseSettings) -> anyhow::Result<usize> {
    let pool = platform::db::pool(database)?;
    Ok(platform::db::migrate(&pool).await?)
}

/// `firstcome db …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations.
    Migrate,
}

impl DbCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Database]
    }
}

pub async fn command(settings: &CliSettings, command: DbCommand) -> anyhow::Result<Output> {
    match command {
        DbCommand::Migrate => {
            let action = Action::new("db migrate", None, serde_json::json!({}));
            let applied = audit_trail::audited_migration(settings, action, migrate(&settings.database)).await?;
            Ok(Output::new(format!("{applied} migration(s) applied"), &serde_json::json!({ "applied": applied })))
        }
    }
}
