//! `firstcome topics create`: the topics of DESIGN.md, idempotently.

use platform::kafka::admin::{create_topics, pipeline_topics, Created, Layout};
use platform::settings::KafkaSettings;

/// Creates the missing topics; returns one line per topic for the operator.
pub async fn create(kafka: &KafkaSettings, layout: Layout) -> anyhow::Result<Vec<String>> {
    let specs = pipeline_topics(&kafka.topics(), layout);
    let created = create_topics(kafka, &specs).await?;
    Ok(created
        .into_iter()
        .map(|c| match c {
            Created::New(name) => format!("created  {name}"),
            Created::Existing(name) => format!("exists   {name}"),
        })
        .collect())
}
