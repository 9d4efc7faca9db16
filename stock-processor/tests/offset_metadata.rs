//! The stale-Redis check rests on one librdkafka behaviour: offset metadata
//! committed through `send_offsets_to_transaction` (and a plain commit) is
//! stored by the group coordinator and read back by `committed_offsets` from
//! another client of the same group that never joined it. Checked here
//! against the real broker, so an upgrade that breaks it fails loudly.

use std::time::Duration;

use platform::kafka::admin::{create_topics, delete_topics, TopicSpec};
use platform::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(20);

fn kafka() -> KafkaSettings {
    KafkaSettings { topic_prefix: format!("t-{}.", uuid::Uuid::new_v4()), ..testkit::stack_kafka_admin() }
}

fn consumer(kafka: &KafkaSettings, group: &str) -> BaseConsumer {
    platform::kafka::client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // librdkafka asks for stable offsets (KIP-447) when read_committed.
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer")
}

fn read_back(kafka: &KafkaSettings, group: &str, topic: &str) -> (Offset, String) {
    // A fresh client of the group that never subscribes, as the mark reader is.
    let reader = consumer(kafka, group);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let committed = reader.committed_offsets(wanted, WAIT).expect("committed offsets");
    let element = committed.find_partition(topic, 0).expect("partition 0");
    (element.offset(), element.metadata().to_string())
}

#[test]
fn transactional_and_plain_commits_keep_their_offset_metadata() {
    let kafka = kafka();
    let topic = format!("{}meta-check", kafka.topic_prefix);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(create_topics(
            &kafka,
            &[TopicSpec { name: topic.clone(), partitions: 1, replication: 1, configs: vec![] }],
        ))
        .expect("topic created");
    let group = kafka.group("meta-check");

    // The stock stage's way: offsets (with metadata) inside a transaction.
    let producer: ThreadedProducer<DefaultProducerContext> = platform::kafka::client_config(&kafka)
        .set("transactional.id", format!("{group}-tx"))
        .create()
        .expect("producer");
    producer.init_transactions(WAIT).expect("init transactions");
    // group_metadata needs a consumer of the group; it never has to join.
    let member = consumer(&kafka, &group);
    let metadata = member.group_metadata().expect("group metadata");
    producer.begin_transaction().expect("begin");
    producer.send(BaseRecord::to(&topic).key("k").payload("v")).map_err(|(error, _)| error).expect("send");
    let marks = r#"{"v":1,"marks":[["ev-1",42]]}"#;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(7)).expect("offset");
    offsets.find_partition(&topic, 0).expect("partition").set_metadata(marks);
    producer.send_offsets_to_transaction(&offsets, &metadata, WAIT).expect("send offsets");
    producer.commit_transaction(WAIT).expect("commit");
    assert_eq!(read_back(&kafka, &group, &topic), (Offset::Offset(7), marks.to_string()));

    // The at-least-once way: a plain synchronous commit with metadata.
    let marks = r#"{"v":1,"marks":[["ev-2",9],["ev-1",42]]}"#;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(8)).expect("offset");
    offsets.find_partition(&topic, 0).expect("partition").set_metadata(marks);
    member.commit(&offsets, CommitMode::Sync).expect("commit");
    assert_eq!(read_back(&kafka, &group, &topic), (Offset::Offset(8), marks.to_string()));

    drop(member);
    drop(producer);
    let _ = runtime.block_on(delete_topics(&kafka, &[topic.as_str()]));
}
