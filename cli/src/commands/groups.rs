//! `firstcome groups describe`: where each consumer group of the topology
//! stands — its state and members as the group coordinator reports them,
//! and per partition of each input its committed offset, the log end and
//! the lag (`platform::kafka::lag`, the dashboard's reading too).

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::bail;
use rdkafka::consumer::Consumer;
use serde::Serialize;

use platform::kafka::lag::{self, PartitionLag};
use platform::settings::KafkaSettings;
use schemas::topology::{self, Stage};

use crate::exit::Usage;
use crate::output::Output;
use crate::reach::Need;
use crate::settings::CliSettings;

/// One consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// The topology's name (`stock`, `recording`, `dispatch`).
    pub group: String,
    /// The name on the cluster (with the deployment's prefix).
    pub id: String,
    /// `Stable`, `PreparingRebalance`, `Empty`, `Dead`… as the coordinator
    /// says; `not found` when it has never existed.
    pub state: String,
    pub members: usize,
    /// Records written to its inputs and not committed by it.
    pub lag: i64,
    pub partitions: Vec<PartitionLag>,
}

/// The groups of the topology (or only `only`), each with its lag.
pub async fn describe(kafka: &KafkaSettings, only: Option<&str>) -> anyhow::Result<Vec<GroupView>> {
    let groups: Vec<&'static str> =
        Stage::ALL.iter().filter_map(|stage| stage.group()).filter(|g| only.is_none_or(|o| o == *g)).collect();
    if groups.is_empty() {
        let known: Vec<&str> = Stage::ALL.iter().filter_map(|s| s.group()).collect();
        bail!(Usage(format!("no group {} in the topology (groups: {})", only.unwrap_or(""), known.join(", "))));
    }
    let kafka = kafka.clone();
    let views = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<GroupView>> {
        let topics = kafka.topics();
        // Several groups read one topic: its watermarks are read once.
        let mut ends = BTreeMap::new();
        let mut views = Vec::new();
        for group in groups {
            let id = kafka.group(group);
            let consumer = lag::group_reader(&kafka, &id, "firstcome-groups")?;
            let listed = consumer.fetch_group_list(Some(&id), lag::CALL_TIMEOUT)?;
            let (state, members) = listed
                .groups()
                .iter()
                .find(|g| g.name() == id)
                .map(|g| (g.state().to_string(), g.members().len()))
                .unwrap_or_else(|| ("not found".into(), 0));
            let inputs = topology::inputs_in(&topics, group);
            let partitions = lag::lag_of(&consumer, group, &inputs, &mut ends, lag::CALL_TIMEOUT)?;
            let lag = partitions.iter().map(|p| p.lag).sum();
            views.push(GroupView { group: group.to_string(), id, state, members, lag, partitions });
        }
        Ok(views)
    })
    .await??;
    Ok(views)
}

/// The groups for people: one header line per group, one line per partition.
pub fn describe_text(views: &[GroupView]) -> String {
    let mut out = String::new();
    for v in views {
        let _ = writeln!(out, "group {} ({}): {}, {} members, lag {}", v.group, v.id, v.state, v.members, v.lag);
        let _ = writeln!(out, "  {:<36} {:>9} {:>12} {:>12} {:>8}", "topic", "partition", "committed", "end", "lag");
        for p in &v.partitions {
            let committed = p.committed.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            let _ = writeln!(out, "  {:<36} {:>9} {:>12} {:>12} {:>8}", p.topic, p.partition, committed, p.end, p.lag);
        }
    }
    out
}

/// `firstcome groups …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum GroupsCommand {
    /// Each consumer group of the topology: state, members, and lag per partition of its inputs.
    Describe {
        /// Only this group (`stock`, `recording`, `dispatch`).
        #[arg(long)]
        group: Option<String>,
    },
}

impl GroupsCommand {
    pub fn needs(&self) -> &'static [Need] {
        &[Need::Kafka]
    }
}

pub async fn command(settings: &CliSettings, command: GroupsCommand) -> anyhow::Result<Output> {
    let GroupsCommand::Describe { group } = command;
    let views = describe(&settings.kafka, group.as_deref()).await?;
    Ok(Output::new(describe_text(&views), &views))
}
