//! The stall readers of `stock-decided` see after the stage is SIGKILLed in
//! the middle of a transaction, measured on the real binary.
//!
//! A read_committed reader cannot read past the first record of an open
//! transaction. Killed with a transaction open, the stage leaves one behind:
//! with a random transactional id per start the restart cannot abort it and
//! readers wait for the transaction timeout (30 s before the fix); with a
//! stable instance id the restart's `init_transactions` aborts it at once,
//! and the next decision shows up once the group has handed the partitions
//! over (the dead member's session timeout).
//!
//! Catching the stage inside a transaction deterministically: it is paused
//! (SIGSTOP) at moments chosen by the test until a paused stage holds a
//! transaction with records written (the read_committed end of a partition,
//! its last stable offset, is below the log end); then it is killed.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{entry, Producer};
use common::EventSetup;
use platform::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use stock_processor::Settings;
use testkit::{wait_for, TestEnv};

const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(10);

/// The stage binary on the test's topics, with its default instance id (a
/// restart on this host gets the same one: that is what is under test).
fn start_stage(kafka: &KafkaSettings, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_stock-processor"))
        .env("FIRSTCOME_KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("FIRSTCOME_KAFKA__BROKERS", &kafka.brokers)
        .env_remove("FIRSTCOME_INSTANCE_ID")
        .env("FIRSTCOME_HTTP__PORT", "0")
        .env("RUST_LOG", "warn,stock_processor=info,platform=info")
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the stock-processor binary starts")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("kill");
    assert!(status.success(), "kill -{name} failed");
}

fn watermark_client(kafka: &KafkaSettings, isolation: &str) -> BaseConsumer {
    platform::kafka::client_config(&testkit::kafka_admin(kafka))
        .set("group.id", kafka.group("sigkill-watermarks"))
        .set("isolation.level", isolation)
        .create()
        .expect("watermark client")
}

/// Per partition of `topic`: (last stable offset, log end offset).
fn ends(committed: &BaseConsumer, uncommitted: &BaseConsumer, topic: &str) -> Vec<(i64, i64)> {
    (0..PARTITIONS)
        .map(|p| {
            let (_, stable) = committed.fetch_watermarks(topic, p, WAIT).expect("stable end");
            let (_, end) = uncommitted.fetch_watermarks(topic, p, WAIT).expect("log end");
            (stable, end)
        })
        .collect()
}

fn has_open_transaction(ends: &[(i64, i64)]) -> bool {
    ends.iter().any(|(stable, end)| stable < end)
}

/// Entries for as long as `running`, so the stage is always busy.
fn flood(kafka: KafkaSettings, event_id: String, running: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let codec = Settings::default().registry.codec().expect("codec");
        let producer = Producer::new(&kafka);
        let topic = kafka.topics().survey_submitted;
        let mut sent = 0u64;
        while running.load(Ordering::Relaxed) && sent < 400_000 {
            let mut payloads = Vec::with_capacity(200);
            for n in 0..200 {
                let member = format!("m{}", (sent + n) % 5_000);
                let entry_id = common::new_entry_id();
                let record = entry(&event_id, &entry_id, &member, schemas::now_millis());
                payloads.push((member, codec.encode(&topic, &record).await.expect("encode")));
            }
            let sends = payloads.iter().map(|(member, payload)| producer.send(&topic, member, payload, "flood"));
            futures::future::join_all(sends).await;
            sent += 200;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_sigkill_readers_wait_for_the_restart_not_the_transaction_timeout() {
    let env = TestEnv::builder().without_database().build().await;
    let mut kafka = env.kafka.clone();
    if let Ok(brokers) = std::env::var("FIRSTCOME_KAFKA__BROKERS") {
        kafka.brokers = brokers;
    }
    let decided_topic = kafka.topics().stock_decided;
    let mut conn = common::redis().await;
    let event_id = common::new_event_id();
    let eligible: Vec<String> = (0..5_000).map(|i| format!("m{i}")).collect();
    EventSetup::open_now(&event_id, 1_000_000, &eligible).create(&mut conn).await;
    let log = std::env::temp_dir().join(format!("{}stock-sigkill.log", kafka.topic_prefix));
    println!("stage log: {}", log.display());

    let running = Arc::new(AtomicBool::new(true));
    let flooding = flood(kafka.clone(), event_id.clone(), running.clone());
    let mut stage = start_stage(&kafka, &log);
    let committed = watermark_client(&kafka, "read_committed");
    let uncommitted = watermark_client(&kafka, "read_uncommitted");

    // The stage is up and committing decisions.
    wait_for(&format!("a committed decision (see {})", log.display()), Duration::from_secs(90), || {
        assert!(stage.try_wait().expect("child").is_none(), "the stage exited; see {}", log.display());
        let decided = ends(&committed, &uncommitted, &decided_topic).iter().any(|(stable, _)| *stable > 0);
        async move { decided }
    })
    .await;

    // Pause it until it is caught holding a transaction with records written,
    // and make sure that transaction stays open (not one committing just then).
    let mut probes = 0;
    let stuck = loop {
        probes += 1;
        assert!(probes < 2_000, "never caught the stage inside a transaction");
        signal(&stage, "STOP");
        let seen = ends(&committed, &uncommitted, &decided_topic);
        if has_open_transaction(&seen) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let again = ends(&committed, &uncommitted, &decided_topic);
            if has_open_transaction(&again) && again.iter().zip(&seen).all(|(a, s)| a.0 == s.0) {
                break again;
            }
        }
        signal(&stage, "CONT");
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..15))).await;
    };
    stage.kill().expect("SIGKILL");
    let killed = Instant::now();
    stage.wait().expect("reaped");
    running.store(false, Ordering::Relaxed);
    let flooded = flooding.await.expect("flood");
    println!("caught inside a transaction after {probes} probes; {flooded} entries sent; ends {stuck:?}");

    // A reader parked at the stable offsets of the partitions the dead
    // transaction holds sees the next decision there only once it is aborted.
    let reader: StreamConsumer = platform::kafka::client_config(&testkit::kafka_admin(&kafka))
        .set("group.id", kafka.group("sigkill-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut positions = TopicPartitionList::new();
    for (partition, (stable, end)) in stuck.iter().enumerate() {
        if stable < end {
            positions
                .add_partition_offset(&decided_topic, partition as i32, Offset::Offset(*stable))
                .expect("position");
        }
    }
    reader.assign(&positions).expect("assign");

    let mut restarted = start_stage(&kafka, &log);
    let mut unstuck_after = None;
    let deadline = killed + Duration::from_secs(60);
    let next_decision_after = loop {
        match tokio::time::timeout(Duration::from_millis(200), reader.recv()).await {
            Ok(Ok(_)) => break killed.elapsed(),
            Ok(Err(error)) => panic!("reader failed: {error}"),
            Err(_) => {}
        }
        if unstuck_after.is_none() {
            let now = ends(&committed, &uncommitted, &decided_topic);
            if now.iter().zip(&stuck).all(|(n, s)| n.0 > s.0 || s.0 == s.1) {
                unstuck_after = Some(killed.elapsed());
            }
        }
        assert!(Instant::now() < deadline, "no decision 60 s after the kill; see {}", log.display());
        assert!(restarted.try_wait().expect("child").is_none(), "the restarted stage exited; see {}", log.display());
    };
    println!(
        "stall after SIGKILL: dead transaction aborted after {:?}, next committed decision after {:.1} s \
         (transaction timeout {} ms, session timeout {} ms)",
        unstuck_after,
        next_decision_after.as_secs_f64(),
        KafkaSettings::default().transaction_timeout_ms,
        KafkaSettings::default().session_timeout_ms,
    );
    assert!(
        next_decision_after < Duration::from_secs(20),
        "readers waited {next_decision_after:?} behind the dead transaction (30 s before the fix)"
    );

    restarted.kill().expect("stop the restarted stage");
    restarted.wait().expect("reaped");
    env.delete_topics().await;
    let _ = std::fs::remove_file(&log);
}
