//! Topic administration and reading by time against the real broker: an
//! existing topic that differs from the topology is reported (not silently
//! accepted), and a log read from a time skips what was stamped before it.

use std::time::Duration;

use platform::kafka::admin::{create_topics, drift, TopicSpec};
use platform::kafka::producer::idempotent_config;
use platform::kafka::{LogReader, OutRecord, RecordContext, RecordSender};
use platform::settings::{Environment, KafkaSettings, Principal};
use rdkafka::message::Message;

fn admin() -> KafkaSettings {
    let mut settings = KafkaSettings::default();
    if let Ok(brokers) = std::env::var("FIRSTCOME_KAFKA__BROKERS") {
        settings.brokers = brokers;
    }
    settings.for_principal(Environment::Local, Principal::ADMIN)
}

fn topic(name: &str) -> String {
    format!("t-{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn spec(name: &str, partitions: i32, retention_ms: u64) -> TopicSpec {
    TopicSpec {
        name: name.to_string(),
        partitions,
        replication: 1,
        configs: vec![("retention.ms", retention_ms.to_string()), ("message.timestamp.type", "CreateTime".into())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_topic_that_differs_from_its_spec_is_reported_as_drift() {
    let settings = admin();
    let name = topic("drift");
    create_topics(&settings, &[spec(&name, 2, 86_400_000)]).await.expect("created");

    assert_eq!(drift(&settings, &[spec(&name, 2, 86_400_000)]).await.expect("compared"), vec![], "as specified");
    let found = drift(&settings, &[spec(&name, 6, 604_800_000)]).await.expect("compared");
    let what: Vec<(&str, &str, &str)> =
        found.iter().map(|d| (d.what.as_str(), d.expected.as_str(), d.actual.as_str())).collect();
    assert_eq!(what, vec![("partitions", "6", "2"), ("retention.ms", "604800000", "86400000")]);
    assert!(
        drift(&settings, &[spec(&topic("missing"), 1, 1)]).await.expect("compared").is_empty(),
        "missing is not drift"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_read_since_a_time_starts_each_partition_at_its_first_record_from_then() {
    let settings = admin();
    let name = topic("since");
    let mut created = spec(&name, 3, 7 * 86_400_000);
    created.configs.push(("message.timestamp.before.max.ms", (2 * 86_400_000u64).to_string()));
    create_topics(&settings, &[created]).await.expect("created");
    let sender = RecordSender::new(
        idempotent_config(&settings, "since-test").create().expect("producer"),
        Duration::from_secs(10),
    );
    let now = schemas::now_millis();
    let opened = now - 3_600_000;
    // An older event's records (a day ago), then this one's, as a log holds them.
    for (label, stamp) in [("old", now - 86_400_000), ("new", opened), ("new", now)] {
        for member in 0..9 {
            let record = OutRecord {
                topic: name.clone(),
                key: format!("m{member}"),
                payload: label.as_bytes().to_vec(),
                context: RecordContext::new_root("since-test", None),
                timestamp_ms: Some(stamp),
            };
            sender.send(&record).await.expect("taken");
        }
    }

    let mut reader =
        LogReader::open_since(&settings, &format!("{name}-reader"), &[name.as_str()], opened).await.expect("reader");
    let mut read = Vec::new();
    while let Some(message) = reader.next().await.expect("read") {
        read.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string());
    }
    assert_eq!(read.len(), 18, "every record since the opening: {read:?}");
    assert!(read.iter().all(|label| label == "new"), "nothing stamped before the opening: {read:?}");

    let mut whole = LogReader::open(&settings, &format!("{name}-whole"), &[name.as_str()]).await.expect("reader");
    let mut all = 0;
    while whole.next().await.expect("read").is_some() {
        all += 1;
    }
    assert_eq!(all, 27, "a read from the beginning sees the older event too");
}
