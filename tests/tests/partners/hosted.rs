//! A hosted cluster's client settings on the real broker: the consumer loop
//! joins its group with the KIP-848 consumer protocol (`kafka.group_protocol
//! = consumer`: librdkafka refuses the classic session, heartbeat and
//! assignment properties with it), as a static member, under a client id
//! that stays the same at every start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform::kafka::{BatchHandler, BatchOutcome, ConsumerLoop, Delivery, HandlerError, Order, Record};
use platform::settings::GroupProtocol;
use platform::CancellationToken;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestEnv;

#[derive(Clone, Default)]
struct Count(Arc<Mutex<usize>>);

impl BatchHandler for Count {
    async fn handle(&self, batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += batch.len();
        Ok(BatchOutcome::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_loop_reads_under_the_kip_848_protocol_as_a_static_member() {
    let env = TestEnv::builder().partitions(3).without_database().build().await;
    let topic = env.topics().survey_submitted;
    let producer: FutureProducer = platform::kafka::client_config(&env.kafka_admin()).create().expect("producer");
    for n in 0..6 {
        let key = format!("m-{n}");
        producer
            .send(FutureRecord::to(&topic).key(&key).payload("not avro"), Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("record acknowledged: {e}"));
    }

    let mut kafka = env.kafka_admin();
    kafka.group_protocol = GroupProtocol::Consumer;
    kafka.group_instance_id = Some(format!("{}stock-0", env.prefix));
    kafka.client_id = Some("firstcome-hosted-test".into());
    let handler = Count::default();
    let consumer = ConsumerLoop::new(&kafka, &env.group("kip848"), &[&topic], Delivery::AtLeastOnce, Order::Arrival)
        .expect("a consumer loop with group.protocol=consumer");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        async move { consumer.run(&handler, shutdown).await }
    });
    let seen = handler.0.clone();
    let all_read = testkit::wait_until(Duration::from_secs(30), || {
        let seen = seen.clone();
        async move { *seen.lock().unwrap_or_else(|e| e.into_inner()) >= 6 }
    })
    .await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;
    assert!(all_read, "read {} of 6 records within 30 s", *handler.0.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the loop stopped cleanly: {stopped:?}");
}
