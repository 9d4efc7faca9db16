//! A transactional consumer loop that starts while the broker is not there
//! yet (a broker restarted a moment ago: its transaction coordinator moving
//! or loading) keeps asking for its producer id instead of failing the
//! service's start. Seen in the chaos suite: a stock instance restarted
//! seconds after a broker kill exited on "Failed to initialize Producer ID:
//! Broker: Not coordinator", and the stage ran one instance short.
//!
//! The broker's address is reached through a gate that opens only after a
//! few of the loop's `init_transactions` calls have timed out; the real
//! broker answers behind it.

use std::time::{Duration, Instant};

use platform::kafka::admin::{create_topics, pipeline_topics, Layout};
use platform::kafka::{ConsumerLoop, Delivery, Order};
use platform::settings::{Environment, KafkaSettings, Principal};
use tokio::net::{TcpListener, TcpStream};

/// How long the gate stays shut: several `init_transactions` calls.
const SHUT_FOR: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_loop_started_before_its_broker_is_back_waits_for_it() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = KafkaSettings { topic_prefix: format!("t-txinit-{}.", &id[..12]), ..Default::default() };
    if let Ok(brokers) = std::env::var("FIRSTCOME_KAFKA__BROKERS") {
        settings.brokers = brokers;
    }
    let admin = settings.for_principal(Environment::Local, Principal::ADMIN);
    let topics = admin.topics();
    let layout = Layout { partitions: 1, dlq_partitions: 1, replication: 1 };
    create_topics(&admin, &pipeline_topics(&topics, layout)).await.expect("topics created");

    // The gate: a port nobody listens on until SHUT_FOR has passed, then a
    // plain TCP relay to the first broker.
    let broker = admin.brokers.split(',').next().expect("a broker").trim().to_string();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("its address").port()
    };
    let gate = tokio::spawn(async move {
        tokio::time::sleep(SHUT_FOR).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the gate's port");
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { return };
            let broker = broker.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&broker).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });

    // Calls that time out quickly while the gate is shut (the transaction
    // timeout must exceed the delivery timeout).
    let gated = KafkaSettings {
        brokers: format!("127.0.0.1:{port}"),
        delivery_timeout_ms: 500,
        transaction_timeout_ms: 1_000,
        ..admin.clone()
    };
    let group = format!("{}txinit", gated.topic_prefix);
    let topic = topics.survey_submitted.clone();
    let started = Instant::now();
    let built = tokio::task::spawn_blocking(move || {
        ConsumerLoop::new(
            &gated,
            &group,
            &[topic.as_str()],
            Delivery::Transactional { transactional_id: format!("{group}-0") },
            Order::Arrival,
        )
    })
    .await
    .expect("the build's thread");
    gate.abort();
    let waited = started.elapsed();
    if let Err(error) = built {
        panic!("the loop failed its start after {waited:?} instead of waiting: {}", platform::error::chain(&error));
    }
    assert!(waited >= SHUT_FOR, "built after {waited:?}, before the broker could be reached");
}
