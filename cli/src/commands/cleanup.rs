//! `firstcome cleanup-tests`: removes what test runs leave on a shared stack —
//! `t_*` databases, `t-*` topics and their registry subjects — so a developer
//! machine does not slow down run after run. Never touches anything else.

use std::time::Duration;

use anyhow::Context;

use crate::settings::CliSettings;

/// What was removed.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub databases: usize,
    /// `t_*` schemas of the member database (on its primary; the standbys follow).
    pub member_schemas: usize,
    pub topics: usize,
    pub subjects: usize,
}

/// Tests seed their members into a `t_<hex>` schema of the member primary.
async fn drop_member_schemas(settings: &CliSettings) -> anyhow::Result<usize> {
    let primary = platform::settings::MemberPrimarySettings { schema: String::new(), ..settings.member_primary.clone() };
    let pool = platform::member_db::primary_pool(&primary)?;
    let client = pool.get().await?;
    let names: Vec<String> = client
        .query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in &names {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE")).await?;
    }
    Ok(names.len())
}

/// Test databases are named `t_<hex>`, test topics `t-<hex>.<topic>`.
pub fn is_test_topic(name: &str) -> bool {
    name.starts_with("t-") && name.contains('.')
}

pub async fn run(settings: &CliSettings) -> anyhow::Result<Cleaned> {
    let mut cleaned = Cleaned::default();

    let admin_db = platform::db::pool(&settings.database.with_database("postgres"))?;
    let client = admin_db.get().await?;
    let names: Vec<String> = client
        .query("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in names {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            .await
            .with_context(|| format!("Failed to drop {name}"))?;
        cleaned.databases += 1;
    }

    match drop_member_schemas(settings).await {
        Ok(count) => cleaned.member_schemas = count,
        Err(error) => tracing::warn!(%error, "test schemas of the member database not removed"),
    }

    let admin = platform::kafka::admin::admin_client(&settings.kafka)?;
    let metadata = tokio::task::spawn_blocking(move || {
        let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10));
        (admin, metadata)
    })
    .await?;
    let topics: Vec<String> = metadata
        .1?
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| is_test_topic(name))
        .collect();
    for chunk in topics.chunks(200) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        platform::kafka::admin::delete_topics(&settings.kafka, &names).await?;
        cleaned.topics += names.len();
    }

    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let base = settings.registry.url.trim_end_matches('/');
    let subjects: Vec<String> = http.get(format!("{base}/subjects")).send().await?.error_for_status()?.json().await?;
    for subject in subjects.iter().filter(|s| is_test_topic(s)) {
        // Soft delete, then permanent, as the Confluent API asks.
        let url = format!("{base}/subjects/{subject}");
        // A registry with deletion off (the stack's, production's) keeps them: not counted.
        let _ = http.delete(&url).send().await;
        let deleted = http.delete(format!("{url}?permanent=true")).send().await;
        if deleted.is_ok_and(|response| response.status().is_success()) {
            cleaned.subjects += 1;
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_prefixed_test_topics_are_picked() {
        assert!(is_test_topic("t-0123456789ab.survey-submitted"));
        assert!(is_test_topic("t-0123456789ab.survey-submitted-value"));
        assert!(!is_test_topic("survey-submitted"));
        assert!(!is_test_topic("stack-test-marker"));
        assert!(!is_test_topic("t-without-dot"));
    }
}
