//! Whatever codec a partner's producer picks, the consumer loop reads it:
//! Kafka offers gzip, snappy, lz4 and zstd, and a batch in a codec librdkafka
//! was built without is a fetch error the loop never gets past.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::kafka::{BatchHandler, BatchOutcome, ConsumerLoop, Delivery, HandlerError, Order, Record};
use platform::CancellationToken;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestEnv;

/// Every codec a Kafka producer may set (`compression.type`), Java's included.
const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// Keeps the payload of every record it is handed.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Vec<u8>>>>);

impl BatchHandler for Collect {
    async fn handle(&self, batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(batch.iter().map(|r| r.payload().unwrap_or_default().to_vec()));
        Ok(BatchOutcome::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_loop_reads_a_partner_batch_in_every_codec_kafka_offers() {
    let env = TestEnv::builder().partitions(1).without_database().build().await;
    let topic = env.topics().survey_submitted;

    // A partner's producers, one per codec; the bytes need not be Avro here:
    // the loop hands records to the handler before anything decodes them.
    for codec in CODECS {
        let producer: FutureProducer = platform::kafka::client_config(&env.kafka_admin())
            .set("compression.type", codec)
            .create()
            .unwrap_or_else(|e| panic!("a producer compressing with {codec}: {e}"));
        // The topics keep a batch in the producer's codec (`compression.type=producer`),
        // so the consumer gets it as the partner sent it.
        let payload = format!("{codec}:{}", "partner entry ".repeat(64));
        producer
            .send(FutureRecord::to(&topic).key("partner-member").payload(&payload), Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("the {codec} record acknowledged: {e}"));
    }

    let handler = Collect::default();
    let consumer =
        ConsumerLoop::new(&env.kafka_admin(), &env.group("codecs"), &[&topic], Delivery::AtLeastOnce, Order::Arrival)
            .expect("consumer loop");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        async move { consumer.run(&handler, shutdown).await }
    });

    let seen = handler.0.clone();
    let all_read = testkit::wait_until(Duration::from_secs(30), || {
        let seen = seen.clone();
        async move { seen.lock().unwrap_or_else(|e| e.into_inner()).len() >= CODECS.len() }
    })
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;

    let seen = handler.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let codecs_read: Vec<String> =
        seen.iter().filter_map(|p| std::str::from_utf8(p).ok()?.split_once(':').map(|(c, _)| c.to_string())).collect();
    assert!(all_read, "the loop read only {codecs_read:?} of {CODECS:?} within 30 s");
    assert_eq!(codecs_read, CODECS, "every record read once, in order");
}
