//! `firstcome topics create`: the topics of the topology (`schemas::topology`)
//! and their ACLs (`platform::kafka::acl`: who may write and read each),
//! idempotently; `firstcome topics show`: the topology table; `firstcome
//! topics describe`: the live cluster beside the topology — each topic and
//! dead-letter topic as the brokers hold it (partitions, replicas, in-sync
//! replicas, records) with who writes and reads it, and where a topic's
//! configs drift from the topology (`admin::drift`: an existing topic is
//! never altered, so a retention set by hand stays until an operator acts).
//! `create` is an operator action: recorded in `operator_actions`
//! (`crate::audit_trail`) before it runs.

use std::fmt::Write;

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use platform::kafka::admin::{
    create_topics, pipeline_topics, Created, Drift, Layout, TopicSpec, BROKER_DEFAULT_REPLICATION,
};
use platform::kafka::lag;
use platform::settings::KafkaSettings;
use schemas::topology::{self, Route};

use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// Creates the missing topics; returns one line per topic for the operator,
/// then one per ACL, then one per way an existing topic differs from the
/// topology (`drift`: an existing topic is never altered).
pub async fn create(kafka: &KafkaSettings, layout: Layout) -> anyhow::Result<Vec<String>> {
    let specs = pipeline_topics(&kafka.topics(), layout);
    let created = create_topics(kafka, &specs).await?;
    // A broker that authenticates nobody (no SASL login configured) has no ACLs to set.
    let secured = kafka.security_properties().iter().any(|(key, _)| *key == "sasl.mechanism")
        || kafka.extra_properties().any(|(key, _)| key == "sasl.mechanism");
    // Each stage's principal as the deployment names it (`kafka.principals`).
    let acls = if secured { platform::kafka::acl::deployment_acls(kafka) } else { Vec::new() };
    platform::kafka::acl::create_acls(kafka, &acls).await?;
    let mut lines: Vec<String> = created
        .into_iter()
        .map(|c| match c {
            Created::New(name) => format!("created  {name}"),
            Created::Existing(name) => format!("exists   {name}"),
        })
        .collect();
    lines.extend(acls.iter().map(|acl| format!("allowed  {acl}")));
    lines.extend(drift(kafka, &specs).await?.iter().map(|d| format!("drift    {d}")));
    Ok(lines)
}

/// Where the existing topics differ from `specs` (`admin::drift`).
async fn drift(kafka: &KafkaSettings, specs: &[TopicSpec]) -> anyhow::Result<Vec<Drift>> {
    Ok(platform::kafka::admin::drift(kafka, specs).await?)
}

/// Drift of the live topics from the topology's configs (retention, timestamp
/// bounds, …) and replication as `layout` asks. Not the partition count: it
/// is the deployment's choice at `topics create` (`--partitions`), which
/// `describe` does not know.
pub async fn config_drift(kafka: &KafkaSettings, layout: Layout) -> anyhow::Result<Vec<Drift>> {
    let specs = pipeline_topics(&kafka.topics(), layout);
    let mut found = drift(kafka, &specs).await?;
    found.retain(|d| d.what != "partitions");
    Ok(found)
}

/// The topology table (topic → producer → consumer groups → dead letters) as
/// Markdown, with this deployment's topic prefix. With the standard names it is
/// exactly the table in README.md.
pub fn show(kafka: &KafkaSettings) -> String {
    schemas::topology::markdown(&kafka.topic_prefix)
}

/// One topic as the topology names it and as the cluster holds it.
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    pub topic: String,
    /// `event` or `dead letters`.
    pub role: &'static str,
    /// The stage that writes it (dead letters: any group that reads the source).
    pub produced_by: String,
    pub consumed_by: Vec<&'static str>,
    /// `None`: the topic does not exist on the cluster.
    pub live: Option<LiveTopic>,
    /// Where its configs differ from the topology (`config_drift`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

/// What the brokers report for a topic.
#[derive(Debug, Clone, Serialize)]
pub struct LiveTopic {
    pub partitions: usize,
    /// The fewest replicas of any partition.
    pub replication: usize,
    /// Partitions whose in-sync replicas are fewer than their replicas.
    pub under_replicated: usize,
    /// Partitions without a leader.
    pub leaderless: usize,
    /// Records the partitions hold now (high − low watermark, summed).
    pub records: i64,
}

/// Every topic of the topology and its dead-letter topic, live.
pub async fn describe(kafka: &KafkaSettings) -> anyhow::Result<Vec<TopicView>> {
    let topics = kafka.topics();
    let mut wanted = Vec::new();
    for route in topology::ROUTES.iter() {
        let Some(name) = topics.named(route.topic) else { continue };
        wanted.push((name.to_string(), route, false));
        wanted.push((schemas::Topics::dlq(name), route, true));
    }
    let kafka = kafka.clone();
    let views = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<TopicView>> {
        let consumer: BaseConsumer =
            platform::kafka::client_config(&kafka).set("client.id", "firstcome-describe").create()?;
        let mut views = Vec::new();
        for (name, route, dead) in wanted {
            views.push(TopicView {
                live: live_topic(&consumer, &name)?,
                role: if dead { "dead letters" } else { "event" },
                produced_by: if dead {
                    "any group reading the source (decode or validation failure)".into()
                } else {
                    route.producer.service().to_string()
                },
                consumed_by: if dead { vec!["operators (firstcome dlq)"] } else { groups_of(route) },
                topic: name,
                drift: Vec::new(),
            });
        }
        Ok(views)
    })
    .await??;
    Ok(views)
}

fn groups_of(route: &Route) -> Vec<&'static str> {
    route.consumers.iter().filter_map(|stage| stage.group()).collect()
}

/// The topic's metadata and watermarks; `None` when the cluster does not know it.
fn live_topic(consumer: &BaseConsumer, name: &str) -> anyhow::Result<Option<LiveTopic>> {
    let metadata = consumer.fetch_metadata(Some(name), lag::CALL_TIMEOUT)?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == name) else { return Ok(None) };
    if topic.error().is_some() || topic.partitions().is_empty() {
        return Ok(None);
    }
    let partitions = topic.partitions();
    let mut records = 0;
    for p in partitions {
        records += lag::watermark(consumer, name, p.id(), lag::CALL_TIMEOUT)?.records();
    }
    Ok(Some(LiveTopic {
        partitions: partitions.len(),
        replication: partitions.iter().map(|p| p.replicas().len()).min().unwrap_or(0),
        under_replicated: partitions.iter().filter(|p| p.isr().len() < p.replicas().len()).count(),
        leaderless: partitions.iter().filter(|p| p.leader() < 0).count(),
        records,
    }))
}

/// The table for people.
pub fn describe_text(views: &[TopicView]) -> String {
    let mut out = format!(
        "{:<36} {:<12} {:>10} {:>11} {:>16} {:>10}  {:<16} consumed by\n",
        "topic", "role", "partitions", "replication", "under-replicated", "records", "produced by"
    );
    for v in views {
        let consumers = v.consumed_by.join(", ");
        let producer = if v.role == "event" { v.produced_by.as_str() } else { "(groups)" };
        match &v.live {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "{:<36} {:<12} {:>10} {:>11} {:>16} {:>10}  {:<16} {consumers}",
                    v.topic, v.role, l.partitions, l.replication, l.under_replicated, l.records, producer
                );
            }
            None => {
                let _ = writeln!(out, "{:<36} {:<12} {:>10}  {:<16} {consumers}", v.topic, v.role, "MISSING", producer);
            }
        }
    }
    out
}

/// `firstcome topics …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create the pipeline's topics and their dead-letter topics (idempotent).
    Create {
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        #[arg(long, default_value_t = 3)]
        dlq_partitions: i32,
        /// Replicas per partition; unset: the broker's `default.replication.factor`
        /// (and its `min.insync.replicas`), what a hosted cluster requires.
        #[arg(long)]
        replication: Option<i32>,
    },
    /// Print the topology: each topic, who produces it, which groups consume it, its dead letters.
    Show,
    /// The live cluster beside the topology: each topic's partitions, replicas, in-sync
    /// replicas and records, with who writes and reads it (exit 1 when one is missing,
    /// under-replicated or without a leader).
    Describe,
}

impl TopicsCommand {
    pub fn needs(&self) -> &'static [Need] {
        match self {
            TopicsCommand::Show => &[],
            // The database: `create` is an operator action, recorded in operator_actions.
            TopicsCommand::Create { .. } => &[Need::Kafka, Need::Database],
            TopicsCommand::Describe => &[Need::Kafka],
        }
    }
}

pub async fn command(settings: &CliSettings, command: TopicsCommand) -> anyhow::Result<Output> {
    match command {
        TopicsCommand::Create { partitions, dlq_partitions, replication } => {
            let layout =
                Layout { partitions, dlq_partitions, replication: replication.unwrap_or(BROKER_DEFAULT_REPLICATION) };
            let detail = serde_json::json!({
                "topic_prefix": settings.kafka.topic_prefix, "partitions": partitions,
                "dlq_partitions": dlq_partitions, "replication": replication,
            });
            let action = crate::audit_trail::Action::new("topics create", None, detail);
            let lines = crate::audit_trail::audited(settings, action, create(&settings.kafka, layout)).await?;
            Ok(Output::new(lines.join("\n"), &lines))
        }
        TopicsCommand::Show => {
            let routes: Vec<_> = topology::ROUTES
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "topic": format!("{}{}", settings.kafka.topic_prefix, r.topic),
                        "key": r.key,
                        "value": r.value,
                        "produced_by": r.produced_by,
                        "consumed_by": groups_of(r),
                        "dead_letters": format!("{}{}", settings.kafka.topic_prefix, r.dlq()),
                    })
                })
                .collect();
            Ok(Output::new(show(&settings.kafka), &routes))
        }
        TopicsCommand::Describe => {
            let mut views = describe(&settings.kafka).await?;
            let drifted = config_drift(&settings.kafka, Layout::default()).await?;
            for view in &mut views {
                view.drift = drifted.iter().filter(|d| d.topic == view.topic).map(|d| d.to_string()).collect();
            }
            let unwell: Vec<&str> = views
                .iter()
                .filter(|v| {
                    v.live.as_ref().is_none_or(|l| l.under_replicated > 0 || l.leaderless > 0) || !v.drift.is_empty()
                })
                .map(|v| v.topic.as_str())
                .collect();
            let why = format!("topics missing, under-replicated, without a leader or drifted: {}", unwell.join(", "));
            let mut text = describe_text(&views);
            for d in &drifted {
                let _ = writeln!(text, "drift    {d}");
            }
            Ok(Output::new(text, &views).failed_if(!unwell.is_empty(), why))
        }
    }
}
