//! Dead letters: listed, and replayed once to their source topic. Every read
//! ends on the high watermarks taken at its start (a condition), never after
//! an idle spell, so a busy cluster or a slow first fetch loses nothing.

use std::time::Duration;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use firstcome_cli::commands::dlq;
use platform::kafka::admin::{create_topics, TopicSpec};
use schemas::Topics;

use crate::helpers::TestEnv;

fn dead_letter_headers(group: &str, offset: usize) -> OwnedHeaders {
    let offset = offset.to_string();
    OwnedHeaders::new()
        .insert(Header { key: "correlation-id", value: Some("corr-dlq") })
        .insert(Header { key: "dlq-error", value: Some("registry was down") })
        .insert(Header { key: "dlq-group", value: Some(group) })
        .insert(Header { key: "dlq-source-partition", value: Some("1") })
        .insert(Header { key: "dlq-source-offset", value: Some(offset.as_str()) })
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once_without_their_error_headers() {
    let env = TestEnv::new().await;
    let source = env.kafka.topics().survey_submitted;
    let producer: FutureProducer =
        platform::kafka::client_config(&testkit::kafka_admin(&env.kafka)).create().expect("producer");
    // The same source record dead-lettered by two groups (both read survey-submitted).
    for group in ["stock", "recording"] {
        producer
            .send(
                FutureRecord::to(&Topics::dlq(&source))
                    .key("member-9")
                    .payload("source bytes")
                    .headers(dead_letter_headers(group, 42)),
                Duration::from_secs(5),
            )
            .await
            .expect("dead letter written");
    }

    let shown = dlq::show(&env.kafka_admin(), &source, 10).await.expect("show");
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|d| d.error.as_deref() == Some("registry was down")));
    assert_eq!(shown[0].source.as_deref(), Some(format!("{source}[1]@42").as_str()));

    let first = dlq::replay(&env.kafka_admin(), &source, usize::MAX).await.expect("replay");
    assert_eq!((first.replayed, first.duplicates), (1, 1), "one source record, replayed once");
    assert_eq!(dlq::replay(&env.kafka_admin(), &source, usize::MAX).await.expect("replay").replayed, 0, "never again");

    // The replay awaited the acknowledgements: the source topic holds them now.
    let replayed = env.read_log(&source).await;
    assert_eq!(replayed.len(), 1, "exactly one record replayed to the source topic");
    let message = &replayed[0];
    assert_eq!(message.payload(), Some(&b"source bytes"[..]));
    assert_eq!(message.key(), Some(&b"member-9"[..]));
    let headers = message.headers().expect("headers kept");
    assert!(headers.iter().any(|h| h.key == "correlation-id" && h.value == Some(&b"corr-dlq"[..])));
    assert!(headers.iter().all(|h| !h.key.starts_with("dlq-")), "error headers removed");

    // A new dead letter is replayed by the next run, and only it.
    producer
        .send(
            FutureRecord::to(&Topics::dlq(&source))
                .key("member-7")
                .payload("later bytes")
                .headers(dead_letter_headers("stock", 43)),
            Duration::from_secs(5),
        )
        .await
        .expect("dead letter written");
    let next = dlq::replay(&env.kafka_admin(), &source, usize::MAX).await.expect("replay");
    assert_eq!((next.replayed, next.duplicates), (1, 0));
    assert_eq!(env.read_log(&source).await.len(), 2);
}

fn transactional(env: &TestEnv, id: &str) -> FutureProducer {
    let producer: FutureProducer = platform::kafka::client_config(&testkit::kafka_admin(&env.kafka))
        .set("transactional.id", format!("{}{id}", env.prefix))
        .create()
        .expect("transactional producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init transactions");
    producer
}

async fn send(producer: &FutureProducer, topic: &str, partition: i32, n: usize) {
    for i in 0..n {
        let key = format!("member-{partition}-{i}");
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload("bytes")
                    .headers(dead_letter_headers("stock", i)),
                Duration::from_secs(10),
            )
            .await
            .expect("dead letter written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_returns_every_committed_dead_letter_every_time_whatever_the_transactions() {
    let env = TestEnv::new().await;
    let source = format!("{}busy", env.prefix);
    let dlq_topic = Topics::dlq(&source);
    let spec = TopicSpec { name: dlq_topic.clone(), partitions: 4, replication: 1, configs: Vec::new() };
    create_topics(&env.kafka_admin(), &[spec]).await.expect("dlq topic");

    // Partition 0: plain dead letters. Partition 1: a committed transaction
    // (a commit marker, never delivered, ends the partition). Partition 2: an
    // aborted transaction only (records and a marker, nothing to show).
    // Partition 3: empty.
    let plain: FutureProducer =
        platform::kafka::client_config(&testkit::kafka_admin(&env.kafka)).create().expect("producer");
    send(&plain, &dlq_topic, 0, 10).await;
    let stage = transactional(&env, "stage-a");
    stage.begin_transaction().expect("begin");
    send(&stage, &dlq_topic, 1, 5).await;
    stage.commit_transaction(Duration::from_secs(30)).expect("commit");
    stage.begin_transaction().expect("begin");
    send(&stage, &dlq_topic, 2, 3).await;
    stage.abort_transaction(Duration::from_secs(30)).expect("abort");

    // A stage's transaction still open when the operator runs `show`: its
    // dead letters are not committed yet, so they are not part of what
    // `show` lists, and `show` does not wait for them.
    let busy = transactional(&env, "stage-b");
    busy.begin_transaction().expect("begin");
    send(&busy, &dlq_topic, 0, 2).await;
    let shown = dlq::show(&env.kafka_admin(), &source, usize::MAX).await.expect("show");
    assert_eq!(shown.len(), 15, "10 plain + 5 committed, none aborted or in flight: {shown:?}");
    assert!(shown.iter().all(|d| d.partition != 2), "aborted dead letters are not shown");
    let busy = tokio::task::spawn_blocking(move || busy.commit_transaction(Duration::from_secs(30)).map(|()| busy))
        .await
        .expect("join")
        .expect("commit");

    for round in 0..3 {
        let again = dlq::show(&env.kafka_admin(), &source, usize::MAX).await.expect("show");
        assert_eq!(again.len(), 17, "round {round}: every dead letter, every time");
        assert_eq!(again.iter().filter(|d| d.partition == 0).count(), 12);
    }
    assert_eq!(dlq::show(&env.kafka_admin(), &source, 4).await.expect("show").len(), 4, "max is honoured");
    drop(busy);
}
