//! `firstcome db migrate`.

use platform::settings::DatabaseSettings;

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// Applies the pending migrations; returns how many ran.
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
            let applied = migrate(&settings.database).await?;
            Ok(Output::new(format!("{applied} migration(s) applied"), &serde_json::json!({ "applied": applied })))
        }
    }
}
