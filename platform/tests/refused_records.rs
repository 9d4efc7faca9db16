//! A record the broker refuses for good — stamped outside its topic's
//! timestamp bounds, too large, not authorized — is not retried forever:
//! the send fails at once as non-retriable, and a consumer stage whose
//! output is refused stops with the cause, its batch uncommitted. Real
//! broker; the topics are the topology's (`pipeline_topics`), with the
//! bounds of `schemas::topology::EVENT_LOG`.

use std::time::{Duration, Instant};

use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::kafka::producer::{idempotent_config, is_refused_for_good};
use platform::kafka::{
    BatchHandler, BatchOutcome, ConsumerError, ConsumerLoop, Delivery, HandlerError, Order, OutRecord, Record,
    RecordContext, RecordSender,
};
use platform::settings::{Environment, KafkaSettings, Principal};
use platform::CancellationToken;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use schemas::topology::EVENT_LOG;
use schemas::Topics;

/// Far beyond the topics' bounds either way.
const AHEAD_MS: i64 = 10 * 60 * 1000;
const BEHIND_MS: i64 = 2 * 24 * 3600 * 1000;

/// This test's topics (the topology's, behind a prefix of its own), as the
/// administrator.
async fn topics(name: &str) -> (KafkaSettings, Topics) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = KafkaSettings { topic_prefix: format!("t-{name}-{}.", &id[..12]), ..Default::default() };
    if let Ok(brokers) = std::env::var("FIRSTCOME_KAFKA__BROKERS") {
        settings.brokers = brokers;
    }
    let settings = settings.for_principal(Environment::Local, Principal::ADMIN);
    let topics = settings.topics();
    let layout = Layout { partitions: 1, dlq_partitions: 1, replication: 1 };
    create_topics(&settings, &pipeline_topics(&topics, layout)).await.expect("topics created");
    (settings, topics)
}

fn record(topic: &str, timestamp_ms: i64) -> OutRecord {
    OutRecord {
        topic: topic.to_string(),
        key: "u1".into(),
        payload: b"a record".to_vec(),
        context: RecordContext::new_root("refused-test", None),
        timestamp_ms: Some(timestamp_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_outside_the_topic_bounds_is_refused_at_once_as_not_retriable() {
    let (settings, topics) = topics("stamps").await;
    let producer = idempotent_config(&settings, "refused-test").create().expect("producer");
    let sender = RecordSender::new(producer, Duration::from_secs(10));
    let now = schemas::now_millis();

    sender.send(&record(&topics.survey_submitted, now)).await.expect("a record stamped now is taken");
    let within = now - EVENT_LOG.timestamp_before_max_ms as i64 / 2;
    sender.send(&record(&topics.survey_submitted, within)).await.expect("a record within the bound is taken");

    for (what, stamp) in [("ahead", now + AHEAD_MS), ("behind", now - BEHIND_MS)] {
        let started = Instant::now();
        let error = sender.send(&record(&topics.survey_submitted, stamp)).await.expect_err("refused");
        assert_eq!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::InvalidTimestamp), "{what}: {error}");
        assert!(is_refused_for_good(&error), "{what}: {error} is classified as retriable");
        // Well inside the delivery timeout: librdkafka did not retry it.
        assert!(started.elapsed() < settings.delivery_timeout() / 2, "{what}: refused after {:?}", started.elapsed());
    }
}

/// Turns each record into an output on `to`, stamped `ahead_ms` from now.
struct Forward {
    to: String,
    ahead_ms: i64,
}

impl BatchHandler for Forward {
    async fn handle(&self, batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        let stamp = schemas::now_millis() + self.ahead_ms;
        Ok(BatchOutcome { produce: batch.iter().map(|_| record(&self.to, stamp)).collect(), ..Default::default() })
    }
}

/// Runs a loop of `delivery` over one record on `stock-decided` whose output
/// to `gift-dispatched` the broker refuses; what the loop returned, and the
/// group's committed offset.
async fn run_with_refused_output(
    name: &str,
    delivery: impl Fn(&str) -> Delivery,
) -> (Result<(), ConsumerError>, Offset) {
    let (settings, topics) = topics(name).await;
    let producer = idempotent_config(&settings, &format!("{name}-source")).create().expect("producer");
    let source = RecordSender::new(producer, Duration::from_secs(10));
    source.send(&record(&topics.stock_decided, schemas::now_millis())).await.expect("source record taken");

    let group = settings.group(name);
    let consumer =
        ConsumerLoop::new(&settings, &group, &[topics.stock_decided.as_str()], delivery(&group), Order::Arrival)
            .expect("consumer loop");
    let handler = Forward { to: topics.gift_dispatched.clone(), ahead_ms: AHEAD_MS };
    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(Duration::from_secs(60), consumer.run(&handler, shutdown.clone()))
        .await
        .expect("the loop ended by itself rather than retrying the refused output");

    let reader: BaseConsumer =
        platform::kafka::client_config(&settings).set("group.id", &group).create().expect("reader");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(&topics.stock_decided, 0);
    let committed = reader.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
    let offset = committed.find_partition(&topics.stock_decided, 0).expect("the partition").offset();
    (result, offset)
}

fn assert_stopped_with_the_cause(result: Result<(), ConsumerError>, topic_suffix: &str) {
    match result {
        Err(error @ ConsumerError::Refused { .. }) => {
            assert!(!error.is_rebuildable());
            let ConsumerError::Refused { topic, error } = error else { unreachable!() };
            assert!(topic.ends_with(topic_suffix), "names the topic: {topic}");
            assert_eq!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::InvalidTimestamp));
        }
        other => panic!("expected the loop to stop on the refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_least_once_stage_whose_output_is_refused_stops_with_the_cause_uncommitted() {
    let (result, committed) = run_with_refused_output("refused-alo", |_| Delivery::AtLeastOnce).await;
    assert_stopped_with_the_cause(result, "gift-dispatched");
    assert_eq!(committed, Offset::Invalid, "nothing committed: the batch replays once an operator acted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_stage_whose_output_is_refused_aborts_and_stops_with_the_cause() {
    let (result, committed) = run_with_refused_output("refused-txn", |group| Delivery::Transactional {
        transactional_id: format!("{group}-txn"),
    })
    .await;
    assert_stopped_with_the_cause(result, "gift-dispatched");
    assert_eq!(committed, Offset::Invalid, "the transaction was aborted: nothing committed");
}
