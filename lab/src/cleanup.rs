//! `firstcome-lab cleanup-tests`: removes what test runs leave on a shared stack —
//! `t_*` databases and member schemas, `t-*` topics, their registry subjects
//! and ACLs, and the `chaos_*` databases and member schemas a failed chaos run
//! keeps for its post-mortem — so a developer machine does not slow down run
//! after run. Never touches anything else.

use std::time::Duration;

use anyhow::Context;

use firstcome_cli::CliSettings;
use platform::kafka::acl::{self, Acl};

use crate::NotLocal;

/// The clean-up deletes by name pattern: on a deployment a `t-*` topic or a
/// `chaos_*` database may be somebody's, so it runs on the local stack only.
fn refuse_outside_local(settings: &CliSettings) -> Result<(), NotLocal> {
    crate::refuse_outside_local(settings, "cleanup-tests", "it deletes by name pattern")
}

/// What was removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Cleaned {
    pub databases: usize,
    /// `t_*` schemas of the member database (on its primary; the standbys follow).
    pub member_schemas: usize,
    pub topics: usize,
    pub subjects: usize,
    /// ACL bindings on test topics, groups and transactional ids.
    pub acls: usize,
}

/// The SQL condition on `column` naming what test runs create, as databases and member
/// schemas: `t_<hex>` per test, `chaos_<seed>_<id>` per chaos run.
fn test_names(column: &str) -> String {
    format!("({column} LIKE 't\\_%' OR {column} LIKE 'chaos\\_%')")
}

/// Tests seed their members into a `t_<hex>` schema of the member primary (a chaos run
/// into `chaos_<seed>_<id>`).
async fn drop_member_schemas(settings: &CliSettings) -> anyhow::Result<usize> {
    let primary =
        platform::settings::MemberPrimarySettings { schema: String::new(), ..settings.member_primary.clone() };
    let pool = platform::member_db::primary_pool(&primary)?;
    let client = pool.get().await?;
    let names: Vec<String> = client
        .query(&format!("SELECT nspname FROM pg_namespace WHERE {}", test_names("nspname")), &[])
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

/// An ACL the test kit created for a test's prefix: on its topics and groups
/// (`t-<hex>.…`) or its stock stage's transactional ids.
pub fn is_test_acl(acl: &Acl) -> bool {
    let name = match acl.resource {
        acl::Resource::TransactionalId => {
            acl.name.strip_prefix(&acl::stock_transactional_prefix("")).unwrap_or(&acl.name)
        }
        acl::Resource::Topic | acl::Resource::Group => &acl.name,
    };
    is_test_topic(name)
}

pub async fn run(settings: &CliSettings) -> anyhow::Result<Cleaned> {
    refuse_outside_local(settings)?;
    let mut cleaned = Cleaned::default();

    let admin_db = platform::db::pool(&settings.database.with_database("postgres"))?;
    let client = admin_db.get().await?;
    let names: Vec<String> = client
        .query(&format!("SELECT datname FROM pg_database WHERE {}", test_names("datname")), &[])
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
    let topics: Vec<String> =
        metadata.1?.topics().iter().map(|t| t.name().to_string()).filter(|name| is_test_topic(name)).collect();
    for chunk in topics.chunks(200) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        platform::kafka::admin::delete_topics(&settings.kafka, &names).await?;
        cleaned.topics += names.len();
    }

    let acls: Vec<Acl> = acl::describe_acls(&settings.kafka).await?.into_iter().filter(is_test_acl).collect();
    cleaned.acls = acl::delete_acls(&settings.kafka, &acls).await?;

    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let base = settings.registry.url.trim_end_matches('/');
    let list = || async {
        let subjects: Vec<String> =
            http.get(format!("{base}/subjects")).send().await?.error_for_status()?.json().await?;
        anyhow::Ok(subjects.into_iter().filter(|s| is_test_topic(s)).collect::<Vec<_>>())
    };
    let subjects = list().await?;
    for subject in &subjects {
        // Soft delete, then permanent, as the Confluent API asks.
        let url = format!("{base}/subjects/{subject}");
        let _ = http.delete(&url).send().await;
        let _ = http.delete(format!("{url}?permanent=true")).send().await;
    }
    // Counted by listing again: what the registry answered is not what it kept (a
    // registry behind authorization refuses the deletes).
    if !subjects.is_empty() {
        cleaned.subjects = subjects.len().saturating_sub(list().await?.len());
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::settings::Environment;

    #[test]
    fn the_clean_up_is_refused_outside_local() {
        assert!(refuse_outside_local(&CliSettings::default()).is_ok());
        let production = CliSettings { environment: Environment::Production, ..Default::default() };
        assert!(refuse_outside_local(&production).is_err());
    }

    #[test]
    fn only_prefixed_test_topics_are_picked() {
        assert!(is_test_topic("t-0123456789ab.survey-submitted"));
        assert!(is_test_topic("t-0123456789ab.survey-submitted-value"));
        assert!(!is_test_topic("survey-submitted"));
        assert!(!is_test_topic("stack-test-marker"));
        assert!(!is_test_topic("t-without-dot"));
    }

    #[test]
    fn only_the_acls_of_test_prefixes_are_picked() {
        let test = acl::pipeline_acls("t-0123456789ab.");
        assert!(test.iter().all(is_test_acl), "{:?}", test.iter().find(|a| !is_test_acl(a)));
        assert!(test.iter().any(|a| a.resource == acl::Resource::TransactionalId));
        let deployment = acl::pipeline_acls("");
        assert!(!deployment.iter().any(is_test_acl), "{:?}", deployment.iter().find(|a| is_test_acl(a)));
        assert!(!acl::pipeline_acls("shop.").iter().any(is_test_acl));
    }
}
