//! The drain deadline, against the real broker: on shutdown the batch in work
//! finishes and commits if it can within `kafka.drain_timeout_ms`, and is
//! abandoned uncommitted otherwise — the loop returns either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use platform::kafka::admin::{create_topics, TopicSpec};
use platform::kafka::producer::idempotent_config;
use platform::kafka::{
    BatchHandler, BatchOutcome, ConsumerLoop, Delivery, HandlerError, Order, OutRecord, Record, RecordContext,
    RecordSender,
};
use platform::settings::KafkaSettings;
use platform::CancellationToken;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

/// Takes `work` per batch, after saying it started.
struct SlowHandler {
    started: Arc<Notify>,
    work: Duration,
}

impl BatchHandler for SlowHandler {
    async fn handle(&self, _batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        self.started.notify_one();
        tokio::time::sleep(self.work).await;
        Ok(BatchOutcome::default())
    }
}

/// A topic and group of this test only, holding one record.
struct Fixture {
    settings: KafkaSettings,
    topic: String,
    group: String,
}

impl Fixture {
    async fn new(drain_timeout_ms: u64) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut settings =
            KafkaSettings { topic_prefix: format!("t-drain-{id}."), drain_timeout_ms, ..Default::default() };
        if let Ok(brokers) = std::env::var("FIRSTCOME_KAFKA__BROKERS") {
            settings.brokers = brokers;
        }
        // The brokers authenticate every client: this test's own are the admin's.
        let settings =
            settings.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
        settings.validate().expect("valid settings");
        let topic = format!("{}records", settings.topic_prefix);
        let spec = TopicSpec { name: topic.clone(), partitions: 1, replication: 1, configs: Vec::new() };
        create_topics(&settings, &[spec]).await.expect("topic created");
        let producer = idempotent_config(&settings, &format!("drain-test-{id}")).create().expect("producer");
        let sender = RecordSender::new(producer, Duration::from_secs(10));
        let record = OutRecord {
            topic: topic.clone(),
            key: "u1".into(),
            payload: b"one record".to_vec(),
            context: RecordContext::new_root("drain-test", None),
            timestamp_ms: None,
        };
        sender.send(&record).await.expect("record acknowledged");
        let group = settings.group("drain");
        Self { settings, topic, group }
    }

    /// Runs the loop with `handler`, cancels it once the batch is in work,
    /// and returns how long the loop took to return after the cancellation.
    async fn stop_during(&self, work: Duration) -> Duration {
        let started = Arc::new(Notify::new());
        let handler = SlowHandler { started: started.clone(), work };
        let consumer = ConsumerLoop::new(
            &self.settings,
            &self.group,
            &[self.topic.as_str()],
            Delivery::AtLeastOnce,
            Order::Arrival,
        )
        .expect("consumer loop");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { consumer.run(&handler, shutdown).await }
        });
        tokio::time::timeout(Duration::from_secs(60), started.notified()).await.expect("the batch reached the handler");
        let cancelled = Instant::now();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), running)
            .await
            .expect("the loop returned")
            .expect("task joined")
            .expect("the loop stopped cleanly");
        cancelled.elapsed()
    }

    /// The group's committed offset of the topic's partition.
    fn committed(&self) -> Offset {
        let consumer: BaseConsumer = platform::kafka::client_config(&self.settings)
            .set("group.id", &self.group)
            .create()
            .expect("offset reader");
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition(&self.topic, 0);
        let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).expect("committed offsets");
        committed.find_partition(&self.topic, 0).expect("the partition").offset()
    }
}

/// Leaving the group after the drain: bounded, a little time on a live broker.
const CLOSE_ALLOWANCE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_slow_handler_returns_within_the_drain_deadline_and_commits_nothing() {
    let fixture = Fixture::new(1_000).await;
    let drain = fixture.settings.drain_timeout();

    let stopped_in = fixture.stop_during(Duration::from_secs(120)).await;

    assert!(stopped_in >= drain, "the batch was given its drain time: stopped in {stopped_in:?}");
    assert!(stopped_in < drain + CLOSE_ALLOWANCE, "stopped in {stopped_in:?}, drain deadline {drain:?}");
    assert_eq!(fixture.committed(), Offset::Invalid, "the abandoned batch is not committed: it replays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_finishes_within_the_drain_deadline_is_committed() {
    let fixture = Fixture::new(5_000).await;

    let stopped_in = fixture.stop_during(Duration::from_millis(500)).await;

    assert!(stopped_in < fixture.settings.drain_timeout(), "stopped in {stopped_in:?}");
    assert_eq!(fixture.committed(), Offset::Offset(1), "the batch finished during the drain is committed");
}
