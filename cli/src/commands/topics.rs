//! `firstcome topics create`: the topics of the topology (`schemas::topology`)
//! and their ACLs (`platform::kafka::acl`: who may write and read each),
//! idempotently; `firstcome topics show`: the topology table.

use platform::kafka::admin::{create_topics, pipeline_topics, Created, Layout};
use platform::settings::KafkaSettings;

/// Creates the missing topics; returns one line per topic for the operator.
pub async fn create(kafka: &KafkaSettings, layout: Layout) -> anyhow::Result<Vec<String>> {
    let specs = pipeline_topics(&kafka.topics(), layout);
    let created = create_topics(kafka, &specs).await?;
    // A broker that authenticates nobody (no SASL login configured) has no ACLs to set.
    let secured = kafka.security_properties().iter().any(|(key, _)| *key == "sasl.mechanism");
    let acls = if secured { platform::kafka::acl::pipeline_acls(&kafka.topic_prefix) } else { Vec::new() };
    platform::kafka::acl::create_acls(kafka, &acls).await?;
    let mut lines: Vec<String> = created
        .into_iter()
        .map(|c| match c {
            Created::New(name) => format!("created  {name}"),
            Created::Existing(name) => format!("exists   {name}"),
        })
        .collect();
    lines.extend(acls.iter().map(|acl| format!("allowed  {acl}")));
    Ok(lines)
}

/// The topology table (topic → producer → consumer groups → dead letters) as
/// Markdown, with this deployment's topic prefix. With the standard names it is
/// exactly the table in README.md.
pub fn show(kafka: &KafkaSettings) -> String {
    schemas::topology::markdown(&kafka.topic_prefix)
}
