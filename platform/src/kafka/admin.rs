//! Topic administration: the topics of the pipeline's topology
//! (`schemas::topology`, docs/DESIGN.md "Topics and events"), created idempotently.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use schemas::{topology, Topics};

use super::base_config;
use crate::settings::KafkaSettings;

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub configs: Vec<(&'static str, String)>,
}

/// How the pipeline's topics are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Partitions of the event topics (survey-submitted: 12 by default).
    pub partitions: i32,
    /// Partitions of each dead-letter topic.
    pub dlq_partitions: i32,
    /// Replicas per partition; [`BROKER_DEFAULT_REPLICATION`] (the
    /// default) takes the cluster's `default.replication.factor`, and its
    /// `min.insync.replicas` with it: a hosted cluster says what it needs.
    pub replication: i32,
}

/// A replication factor of -1: the broker's `default.replication.factor`.
pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

impl Default for Layout {
    fn default() -> Self {
        Self { partitions: 12, dlq_partitions: 3, replication: BROKER_DEFAULT_REPLICATION }
    }
}

/// The event topics of `schemas::topology` (named as in `topics`) and their
/// dead-letter topics.
pub fn pipeline_topics(topics: &Topics, layout: Layout) -> Vec<TopicSpec> {
    // Two replicas must acknowledge on a cluster, so one broker may die
    // without losing an acknowledged entry. With the broker's replication
    // factor, its min.insync.replicas too.
    let min_isr = match layout.replication {
        BROKER_DEFAULT_REPLICATION => None,
        r if r >= 3 => Some(2),
        _ => Some(1),
    };
    let configs = |log: &topology::LogPolicy| {
        let mut configs: Vec<(&'static str, String)> =
            min_isr.map(|n| ("min.insync.replicas", n.to_string())).into_iter().collect();
        configs.extend([
            ("retention.ms", log.retention_ms.to_string()),
            // A batch stays in the codec its producer chose (a partner's zstd too).
            ("compression.type", "producer".to_string()),
            ("message.timestamp.type", topology::TIMESTAMP_TYPE.to_string()),
            ("message.timestamp.before.max.ms", log.timestamp_before_max_ms.to_string()),
            ("message.timestamp.after.max.ms", log.timestamp_after_max_ms.to_string()),
        ]);
        configs
    };
    let mut specs = Vec::new();
    for route in &topology::ROUTES {
        let topic = topics.named(route.topic).expect("every route names a known topic");
        specs.push(TopicSpec {
            name: topic.to_string(),
            partitions: layout.partitions,
            replication: layout.replication,
            configs: configs(&route.log),
        });
        specs.push(TopicSpec {
            name: Topics::dlq(topic),
            partitions: layout.dlq_partitions,
            replication: layout.replication,
            configs: configs(&topology::DLQ_LOG),
        });
    }
    specs
}

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(String),
    Existing(String),
}

pub fn admin_client(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    base_config(settings, "firstcome-admin").create()
}

/// Creates the topics that are missing; existing ones are left as they are.
pub async fn create_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<Vec<Created>, KafkaError> {
    let admin = admin_client(settings)?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.configs.iter().fold(
                NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replication)),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut out = Vec::new();
    for result in results {
        match result {
            Ok(name) => out.push(Created::New(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push(Created::Existing(name)),
            Err((name, code)) => {
                tracing::error!(topic = %name, ?code, "topic creation failed");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(out)
}

/// How an existing topic differs from what the pipeline would create:
/// `create_topics` leaves an existing topic as it is, so a topic made by
/// hand, by an older version or by a hosted cluster's defaults keeps its
/// partitions and configs; this says where they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub topic: String,
    /// `partitions`, `replication` or a config name.
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} is {}, expected {}", self.topic, self.what, self.actual, self.expected)
    }
}

/// Compares each topic of `specs` that exists with its spec: partition
/// count, replication factor (unless the spec takes the broker's) and every
/// config the spec sets. A missing topic is not drift (creating it is).
pub async fn drift(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<Vec<Drift>, KafkaError> {
    let admin = admin_client(settings)?;
    let mut out = Vec::new();
    let mut existing = Vec::new();
    for spec in specs {
        let metadata = admin.inner().fetch_metadata(Some(&spec.name), Duration::from_secs(10))?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == spec.name) else { continue };
        if topic.error().is_some() || topic.partitions().is_empty() {
            continue;
        }
        existing.push(spec);
        let mut differ = |what: &str, expected: String, actual: String| {
            if expected != actual {
                out.push(Drift { topic: spec.name.clone(), what: what.to_string(), expected, actual });
            }
        };
        differ("partitions", spec.partitions.to_string(), topic.partitions().len().to_string());
        if spec.replication != BROKER_DEFAULT_REPLICATION {
            let replicas = topic.partitions().iter().map(|p| p.replicas().len()).min().unwrap_or(0);
            differ("replication", spec.replication.to_string(), replicas.to_string());
        }
    }
    let resources: Vec<ResourceSpecifier<'_>> = existing.iter().map(|s| ResourceSpecifier::Topic(&s.name)).collect();
    if resources.is_empty() {
        return Ok(out);
    }
    let described = admin.describe_configs(resources.iter(), &AdminOptions::new()).await?;
    for (spec, result) in existing.iter().zip(described) {
        let resource = result.map_err(KafkaError::AdminOp)?;
        for (key, expected) in &spec.configs {
            let actual = resource.get(key).and_then(|entry| entry.value.clone()).unwrap_or_else(|| "(unset)".into());
            if &actual != expected {
                out.push(Drift { topic: spec.name.clone(), what: key.to_string(), expected: expected.clone(), actual });
            }
        }
    }
    Ok(out)
}

/// The value of config `key` of `topic` as the cluster has it (its own or
/// the broker's default; `None` when the topic reports no such config). A
/// missing topic is `KafkaError::AdminOp(UnknownTopicOrPartition)`.
pub async fn topic_config(settings: &KafkaSettings, topic: &str, key: &str) -> Result<Option<String>, KafkaError> {
    let admin = admin_client(settings)?;
    let resource = ResourceSpecifier::Topic(topic);
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin.describe_configs([&resource], &options).await?;
    let result = described.into_iter().next().ok_or(KafkaError::AdminOp(RDKafkaErrorCode::UnknownTopicOrPartition))?;
    let resource = result.map_err(KafkaError::AdminOp)?;
    Ok(resource.get(key).and_then(|entry| entry.value.clone()))
}

/// Deletes topics (test clean-up).
pub async fn delete_topics(settings: &KafkaSettings, names: &[&str]) -> Result<(), KafkaError> {
    let admin = admin_client(settings)?;
    admin.delete_topics(names, &AdminOptions::new()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_topic_has_a_dead_letter_topic() {
        let specs = pipeline_topics(&Topics::default(), Layout::default());
        assert_eq!(specs.len(), 8);
        let survey = specs.iter().find(|s| s.name == "survey-submitted").unwrap();
        assert_eq!(survey.partitions, 12);
        assert!(specs.iter().any(|s| s.name == "survey-submitted.dlq"));
    }

    #[test]
    fn the_topics_are_those_of_the_topology_with_the_prefix() {
        let specs = pipeline_topics(&Topics::with_prefix("t1."), Layout::default());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        for route in &topology::ROUTES {
            assert!(names.contains(&format!("t1.{}", route.topic).as_str()));
            assert!(names.contains(&format!("t1.{}", route.dlq()).as_str()));
        }
    }

    #[test]
    fn by_default_the_topics_take_the_brokers_replication_and_min_in_sync() {
        let specs = pipeline_topics(&Topics::default(), Layout::default());
        assert!(specs.iter().all(|s| s.replication == BROKER_DEFAULT_REPLICATION));
        assert!(specs.iter().all(|s| s.configs.iter().all(|(key, _)| *key != "min.insync.replicas")));
    }

    #[test]
    fn a_cluster_requires_two_replicas_in_sync() {
        let specs = pipeline_topics(&Topics::default(), Layout { replication: 3, ..Default::default() });
        assert!(specs.iter().all(|s| s.configs.contains(&("min.insync.replicas", "2".to_string()))));
    }
}
