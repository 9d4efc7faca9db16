//! `firstcome db migrate`.

use platform::settings::DatabaseSettings;

/// Applies the pending migrations; returns how many ran.
pub async fn migrate(database: &DatabaseSettings) -> anyhow::Result<usize> {
    let pool = platform::db::pool(database)?;
    Ok(platform::db::migrate(&pool).await?)
}
