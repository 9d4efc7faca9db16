//! The pipeline's topology in one table: for each event topic, the stage that
//! produces it, the consumer groups that read it, and its dead-letter topic.
//!
//! This table is the one home of "who talks to whom". `firstcome topics create`
//! creates its topics (`platform::kafka::admin::pipeline_topics`), the consumer
//! services subscribe to [`inputs_of`] their group, `firstcome topics show`
//! prints [`markdown`], and the README carries the same rendering (a test fails
//! when they differ). Services never call each other: these topics are the
//! only paths between them (docs/DESIGN.md, "Topics and events").
//!
//! Topic names here are the standard ones, without a deployment prefix; resolve
//! them with [`Topics::named`] (or [`inputs_in`]) on `Topics::with_prefix(..)`.

use crate::topics::{Topics, DLQ_SUFFIX};

/// A stage of the pipeline: the HTTP front or one consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The `ingest` HTTP service (no consumer group: it only produces).
    Ingest,
    /// Consumer group `stock` (crate `stock-processor`).
    Stock,
    /// Consumer group `recording` (crate `recorder`).
    Recording,
    /// Consumer group `dispatch` (crate `sender`).
    Dispatch,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 4] = [Stage::Ingest, Stage::Stock, Stage::Recording, Stage::Dispatch];

    /// The consumer group name (before the deployment prefix), if the stage consumes.
    pub const fn group(self) -> Option<&'static str> {
        match self {
            Stage::Ingest => None,
            Stage::Stock => Some(group::STOCK),
            Stage::Recording => Some(group::RECORDING),
            Stage::Dispatch => Some(group::DISPATCH),
        }
    }

    /// The crate / binary that runs the stage.
    pub const fn service(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Stock => "stock-processor",
            Stage::Recording => "recorder",
            Stage::Dispatch => "sender",
        }
    }

    /// The stage whose consumer group is `group` (without prefix).
    pub fn of_group(group: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.group() == Some(group))
    }
}

/// The consumer group names (without the deployment prefix; see
/// `platform::settings::KafkaSettings::group`).
pub mod group {
    pub const STOCK: &str = "stock";
    pub const RECORDING: &str = "recording";
    pub const DISPATCH: &str = "dispatch";
}

/// One row of the table: an event topic and who is on either side of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The topic name, without prefix.
    pub topic: &'static str,
    /// The record key (every event is keyed by member, to keep them in order).
    pub key: &'static str,
    /// The Avro record of the values (short name of `Event::NAME`).
    pub value: &'static str,
    /// The stage that writes the topic.
    pub producer: Stage,
    /// How it writes it (the delivery guarantee on the producing side).
    pub produced_by: &'static str,
    /// The stages (consumer groups) that read it, each as its own group.
    pub consumers: &'static [Stage],
    /// How the topic keeps and stamps its records; its dead-letter topic
    /// keeps [`DLQ_LOG`].
    pub log: LogPolicy,
}

/// How a topic's log keeps and stamps records: the topic configs `firstcome
/// topics create` sets (and reports drift from on an existing topic).
///
/// Timestamps are the producer's (`message.timestamp.type=CreateTime`):
/// an event's record carries when it happened (for an entry, the accept
/// time), which the stock stage merges partitions by and retention and
/// `offsets_for_times` count from. So the broker refuses a record stamped
/// too far from its own clock, a non-retriable produce error the producer
/// fails fast on: a partner's clock that is off, or a bug, cannot place a
/// record where time retention deletes it at once or where a seek by time
/// skips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPolicy {
    /// `retention.ms`: how long records are kept.
    pub retention_ms: u64,
    /// `message.timestamp.before.max.ms`: how far behind the broker's clock
    /// a record's timestamp may be.
    pub timestamp_before_max_ms: u64,
    /// `message.timestamp.after.max.ms`: how far ahead of the broker's clock
    /// a record's timestamp may be (clock skew).
    pub timestamp_after_max_ms: u64,
}

/// The timestamp type of every topic: the producer's.
pub const TIMESTAMP_TYPE: &str = "CreateTime";

const MINUTE_MS: u64 = 60 * 1000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;

/// Event topics: 7 days. A record may be stamped up to a day in the past
/// (a producer that buffered through an outage, an outbox relay catching
/// up; a day leaves six of the seven days' retention to read it) and a
/// minute in the future (clock skew between hosts).
pub const EVENT_LOG: LogPolicy =
    LogPolicy { retention_ms: 7 * DAY_MS, timestamp_before_max_ms: DAY_MS, timestamp_after_max_ms: MINUTE_MS };

/// Dead-letter topics: 30 days, for operators to look and replay. A dead
/// letter keeps its source record's timestamp, which may be as old as the
/// source topic keeps records.
pub const DLQ_LOG: LogPolicy = LogPolicy {
    retention_ms: 30 * DAY_MS,
    timestamp_before_max_ms: EVENT_LOG.retention_ms,
    timestamp_after_max_ms: MINUTE_MS,
};

impl Route {
    /// The dead-letter topic beside this topic (without prefix).
    pub fn dlq(&self) -> String {
        Topics::dlq(self.topic)
    }

    /// Whether `group` (without prefix) consumes this topic.
    pub fn is_consumed_by(&self, group: &str) -> bool {
        self.consumers.iter().any(|stage| stage.group() == Some(group))
    }
}

/// The table, in pipeline order.
pub const ROUTES: [Route; 4] = [
    Route {
        topic: Topics::SURVEY_SUBMITTED,
        key: "user_id",
        value: "SurveySubmitted",
        producer: Stage::Ingest,
        produced_by: "ingest (idempotent producer, acks=all; 202 after the ack)",
        consumers: &[Stage::Stock, Stage::Recording],
        log: EVENT_LOG,
    },
    Route {
        topic: Topics::STOCK_DECIDED,
        key: "user_id",
        value: "StockDecision",
        producer: Stage::Stock,
        produced_by: "group `stock` (Kafka transaction with its input offsets)",
        consumers: &[Stage::Recording, Stage::Dispatch],
        log: EVENT_LOG,
    },
    Route {
        topic: Topics::GIFT_DISPATCHED,
        key: "user_id",
        value: "GiftDispatch",
        producer: Stage::Dispatch,
        produced_by: "group `dispatch` via its outbox relay",
        consumers: &[Stage::Recording],
        log: EVENT_LOG,
    },
    Route {
        topic: Topics::STOCK_RELEASED,
        key: "user_id",
        value: "StockRelease",
        producer: Stage::Dispatch,
        produced_by: "group `dispatch` via its outbox relay (compensation)",
        consumers: &[Stage::Stock],
        log: EVENT_LOG,
    },
];

/// The route of `topic` (without prefix).
pub fn route(topic: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|route| route.topic == topic)
}

/// The event topics, in pipeline order (without prefix).
pub fn topics() -> Vec<&'static str> {
    ROUTES.iter().map(|route| route.topic).collect()
}

/// The topics consumer group `group` (without prefix) subscribes to, in
/// pipeline order, without prefix. Empty for an unknown group.
pub fn inputs_of(group: &str) -> Vec<&'static str> {
    ROUTES.iter().filter(|route| route.is_consumed_by(group)).map(|route| route.topic).collect()
}

/// The topics `stage` produces, without prefix.
pub fn outputs_of(stage: Stage) -> Vec<&'static str> {
    ROUTES.iter().filter(|route| route.producer == stage).map(|route| route.topic).collect()
}

/// The consumer groups (without prefix) that read `topic` (without prefix).
pub fn consumers_of(topic: &str) -> Vec<&'static str> {
    route(topic).map(|route| route.consumers.iter().filter_map(|stage| stage.group()).collect()).unwrap_or_default()
}

/// [`inputs_of`] resolved against a deployment's topic names: what the
/// consumer of `group` passes to its subscription.
pub fn inputs_in(topics: &Topics, group: &str) -> Vec<String> {
    inputs_of(group)
        .into_iter()
        .map(|topic| topics.named(topic).expect("every route names a known topic").to_string())
        .collect()
}

/// The table as Markdown, topic and group names with `prefix` in front (empty
/// for the standard names, as in the README). Ends with a newline.
pub fn markdown(prefix: &str) -> String {
    let code = |name: &str| format!("`{prefix}{name}`");
    let mut out = String::from(
        "| topic | key | value | produced by | consumed by (groups) | dead letters |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for route in &ROUTES {
        let consumers: Vec<String> = route.consumers.iter().filter_map(|stage| stage.group()).map(&code).collect();
        let produced_by = match prefix {
            "" => route.produced_by.to_string(),
            // Group names in the description carry the prefix too.
            _ => route.produced_by.replacen("group `", &format!("group `{prefix}"), 1),
        };
        out.push_str(&format!(
            "| {} | `{}` | `{}` | {} | {} | {} |\n",
            code(route.topic),
            route.key,
            route.value,
            produced_by,
            consumers.join(", "),
            code(&route.dlq()),
        ));
    }
    out.push_str(&format!(
        "\nAny group: a record it cannot decode or validate goes to `<topic>{DLQ_SUFFIX}` \
         (source bytes + error headers), for operators (`firstcome dlq show` / `replay`).\n"
    ));
    out
}

/// Markers around the generated table in README.md.
pub const README_BEGIN: &str =
    "<!-- topology:begin (generated by `firstcome topics show`; a test compares it with schemas/src/topology.rs) -->";
pub const README_END: &str = "<!-- topology:end -->";

/// The part of `text` between [`README_BEGIN`] and [`README_END`] (without the
/// marker lines), if both are present.
pub fn between_markers(text: &str) -> Option<&str> {
    let start = text.find(README_BEGIN)? + README_BEGIN.len();
    let end = start + text[start..].find(README_END)?;
    Some(text[start..end].trim_start_matches(['\r', '\n']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, GiftDispatch, StockDecision, StockRelease, SurveySubmitted};

    #[test]
    fn every_group_reads_what_the_pipeline_says() {
        assert_eq!(inputs_of(group::STOCK), vec!["survey-submitted", "stock-released"]);
        assert_eq!(inputs_of(group::RECORDING), vec!["survey-submitted", "stock-decided", "gift-dispatched"]);
        assert_eq!(inputs_of(group::DISPATCH), vec!["stock-decided"]);
        assert!(inputs_of("nobody").is_empty());
        assert_eq!(outputs_of(Stage::Dispatch), vec!["gift-dispatched", "stock-released"]);
        assert_eq!(consumers_of("survey-submitted"), vec!["stock", "recording"]);
    }

    #[test]
    fn the_table_covers_every_topic_once_and_every_topic_is_read() {
        let topics = topics();
        assert_eq!(topics, Topics::default().all().to_vec());
        for route in &ROUTES {
            assert!(!route.consumers.is_empty(), "{} has no consumer", route.topic);
            assert!(!route.consumers.contains(&Stage::Ingest), "ingest consumes nothing");
            assert!(!route.consumers.contains(&route.producer), "{} feeds its own producer", route.topic);
        }
        // Every consuming stage reads something.
        for stage in Stage::ALL {
            if let Some(group) = stage.group() {
                assert!(!inputs_of(group).is_empty(), "{group} reads nothing");
                assert_eq!(Stage::of_group(group), Some(stage));
            }
        }
    }

    #[test]
    fn the_value_column_names_the_event_type_of_each_topic() {
        fn check<E: Event>() {
            let topics = Topics::default();
            let route = route(E::topic(&topics)).expect("a route per event topic");
            assert!(E::NAME.ends_with(&format!(".{}", route.value)), "{} on {}", E::NAME, route.topic);
        }
        check::<SurveySubmitted>();
        check::<StockDecision>();
        check::<GiftDispatch>();
        check::<StockRelease>();
    }

    #[test]
    fn inputs_resolve_against_a_prefix() {
        let topics = Topics::with_prefix("t1.");
        assert_eq!(inputs_in(&topics, group::STOCK), vec!["t1.survey-submitted", "t1.stock-released"]);
    }

    #[test]
    fn the_markdown_has_one_row_per_topic_with_the_prefix() {
        let text = markdown("t1.");
        assert!(text.contains("| `t1.stock-decided` | `user_id` | `StockDecision` | group `t1.stock` ("));
        assert!(text.contains("`t1.recording`, `t1.dispatch` | `t1.stock-decided.dlq` |"));
        assert_eq!(text.lines().filter(|l| l.starts_with("| `")).count(), ROUTES.len());
    }

    /// README.md carries the table between the markers; it must be exactly
    /// what the code says (regenerate with `firstcome topics show`).
    #[test]
    fn the_readme_table_is_the_code_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md at the repository root");
        let in_readme = between_markers(&readme).expect("README.md has the topology markers");
        assert_eq!(
            in_readme.trim_end(),
            markdown("").trim_end(),
            "README.md's topology table differs from schemas/src/topology.rs: \
             paste the output of `firstcome topics show` between the markers"
        );
    }
}
