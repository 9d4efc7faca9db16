//! Dead letters: listed, checked against their source record, and replayed
//! once to their source topic. Every read ends on the high watermarks taken
//! at its start (a condition), never after an idle spell, so a busy cluster
//! or a slow first fetch loses nothing.

use std::time::Duration;

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use firstcome_cli::commands::dlq::{self, Filter, ReplayOptions, Unverified};
use platform::kafka::admin::{create_topics, TopicSpec};
use platform::kafka::consumer::dead_letter::header as dlq_header;
use schemas::Topics;

use crate::helpers::TestEnv;

/// Error headers as the consumer loop writes them, naming `source[partition]@offset`.
fn dead_letter_headers(group: &str, source: &str, partition: i32, offset: i64) -> OwnedHeaders {
    let (partition, offset) = (partition.to_string(), offset.to_string());
    OwnedHeaders::new()
        .insert(Header { key: "correlation-id", value: Some("corr-dlq") })
        .insert(Header { key: dlq_header::TOPIC, value: Some(source) })
        .insert(Header { key: dlq_header::PARTITION, value: Some(partition.as_str()) })
        .insert(Header { key: dlq_header::OFFSET, value: Some(offset.as_str()) })
        .insert(Header { key: dlq_header::CONNECTOR_NAME, value: Some(group) })
        .insert(Header { key: dlq_header::STAGE, value: Some("VALUE_CONVERTER") })
        .insert(Header { key: dlq_header::EXCEPTION_MESSAGE, value: Some("registry was down") })
        .insert(Header { key: dlq_header::ERROR, value: Some("registry was down") })
        .insert(Header { key: dlq_header::GROUP, value: Some(group) })
}

fn producer(env: &TestEnv) -> FutureProducer {
    platform::kafka::client_config(&testkit::kafka_admin(&env.kafka)).create().expect("producer")
}

/// Writes a record to `source` (partition 1): where it landed.
async fn source_record(producer: &FutureProducer, source: &str, key: &str, payload: &str) -> (i32, i64) {
    let headers = OwnedHeaders::new().insert(Header { key: "correlation-id", value: Some("corr-dlq") });
    let delivered = producer
        .send(FutureRecord::to(source).partition(1).key(key).payload(payload).headers(headers), Duration::from_secs(5))
        .await
        .expect("source record written");
    (delivered.partition, delivered.offset)
}

/// Writes a dead letter of `source` claiming `key`/`payload` came from `at`.
async fn dead_letter(producer: &FutureProducer, source: &str, group: &str, key: &str, payload: &str, at: (i32, i64)) {
    producer
        .send(
            FutureRecord::to(&Topics::dlq(source))
                .partition(0)
                .key(key)
                .payload(payload)
                .headers(dead_letter_headers(group, source, at.0, at.1)),
            Duration::from_secs(5),
        )
        .await
        .expect("dead letter written");
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once_without_their_error_headers() {
    let env = TestEnv::new().await;
    let source = env.kafka.topics().survey_submitted;
    let producer = producer(&env);
    let at = source_record(&producer, &source, "member-9", "source bytes").await;
    // The same source record dead-lettered by two groups (both read survey-submitted).
    for group in ["stock", "recording"] {
        dead_letter(&producer, &source, group, "member-9", "source bytes", at).await;
    }

    let shown = dlq::show(&env.kafka_admin(), &source, 10).await.expect("show");
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|d| d.error.as_deref() == Some("registry was down")));
    assert_eq!(shown[0].source.as_deref(), Some(format!("{source}[{}]@{}", at.0, at.1).as_str()));
    assert_eq!(shown[1].group.as_deref(), Some("recording"));
    assert_eq!(shown[0].stage.as_deref(), Some("VALUE_CONVERTER"));

    let first = dlq::replay(&env.kafka_admin(), &source, ReplayOptions::default()).await.expect("replay");
    assert_eq!((first.replayed, first.duplicates), (1, 1), "one source record, replayed once");
    assert!(first.refused.is_empty(), "{:?}", first.refused);
    let again = dlq::replay(&env.kafka_admin(), &source, ReplayOptions::default()).await.expect("replay");
    assert_eq!(again.replayed, 0, "never again");

    // The replay awaited the acknowledgements: the source topic holds them now.
    let log = env.read_log(&source).await;
    assert_eq!(log.len(), 2, "the source record and exactly one replay of it");
    for message in &log {
        assert_eq!((message.partition(), message.payload()), (at.0, Some(&b"source bytes"[..])));
        assert_eq!(message.key(), Some(&b"member-9"[..]));
        let headers = message.headers().expect("headers kept");
        assert!(headers.iter().any(|h| h.key == "correlation-id" && h.value == Some(&b"corr-dlq"[..])));
        assert!(headers.iter().all(|h| !dlq_header::is_error_header(h.key)), "error headers removed");
    }

    // A new dead letter is replayed by the next run, and only it.
    let later = source_record(&producer, &source, "member-7", "later bytes").await;
    dead_letter(&producer, &source, "stock", "member-7", "later bytes", later).await;
    let next = dlq::replay(&env.kafka_admin(), &source, ReplayOptions::default()).await.expect("replay");
    assert_eq!((next.replayed, next.duplicates), (1, 0));
    assert_eq!(env.read_log(&source).await.len(), 4);
}

/// A group that may write a dead-letter topic plants records there: the
/// replay, which writes the source topic as the operator, must not launder
/// them into it. Only a dead letter whose key and bytes are the record at its
/// source position is replayed.
#[tokio::test]
async fn a_planted_dead_letter_is_refused_and_never_reaches_the_source_topic() {
    let env = TestEnv::new().await;
    let source = env.kafka.topics().survey_submitted;
    let producer = producer(&env);
    let genuine = source_record(&producer, &source, "member-1", "genuine bytes").await;
    let victim = source_record(&producer, &source, "member-2", "member-2's entry").await;
    dead_letter(&producer, &source, "stock", "member-1", "genuine bytes", genuine).await;
    // Forgeries: another member's win under a real record's position, a
    // real record's bytes under another key, a position past the log's end,
    // another topic, and no source at all.
    dead_letter(&producer, &source, "stock", "member-2", "forged WON for member-2", victim).await;
    dead_letter(&producer, &source, "stock", "member-666", "member-2's entry", victim).await;
    dead_letter(&producer, &source, "stock", "member-3", "forged", (genuine.0, genuine.1 + 1_000)).await;
    let elsewhere = env.kafka.topics().stock_decided;
    let headers = dead_letter_headers("stock", &elsewhere, 0, 0);
    producer
        .send(
            FutureRecord::to(&Topics::dlq(&source)).partition(0).key("member-4").payload("forged").headers(headers),
            Duration::from_secs(5),
        )
        .await
        .expect("planted");
    producer
        .send(
            FutureRecord::<str, str>::to(&Topics::dlq(&source)).partition(0).key("member-5").payload("forged"),
            Duration::from_secs(5),
        )
        .await
        .expect("planted");
    let before = env.read_log(&source).await.len();

    let done = dlq::replay(&env.kafka_admin(), &source, ReplayOptions::default()).await.expect("replay");
    assert_eq!(done.replayed, 1, "only the genuine dead letter: {done:?}");
    let whys: Vec<Unverified> = done.refused.iter().map(|r| r.why.clone()).collect();
    assert_eq!(
        whys,
        vec![
            Unverified::BytesDiffer,
            Unverified::KeyDiffers,
            Unverified::PastTheEnd { end: victim.1 + 1 },
            Unverified::OtherTopic(elsewhere),
            Unverified::NoSource,
        ],
        "{:#?}",
        done.refused
    );
    let log = env.read_log(&source).await;
    assert_eq!(log.len(), before + 1, "one record replayed");
    assert_eq!(log.iter().filter(|m| m.payload() == Some(&b"genuine bytes"[..])).count(), 2);
    assert!(log.iter().all(|m| !m.payload().is_some_and(|p| p.starts_with(b"forged"))), "no forgery laundered");

    // Refused for good: the next replay does not look at them again.
    let next = dlq::replay(&env.kafka_admin(), &source, ReplayOptions::default()).await.expect("replay");
    assert_eq!((next.replayed, next.refused.len()), (0, 0), "{next:?}");
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_a_filter_replays_only_what_it_selects() {
    let env = TestEnv::new().await;
    let source = env.kafka.topics().survey_submitted;
    let producer = producer(&env);
    for i in 0..3 {
        let (key, payload) = (format!("member-{i}"), format!("bytes {i}"));
        let at = source_record(&producer, &source, &key, &payload).await;
        dead_letter(&producer, &source, "recording", &key, &payload, at).await;
    }
    dead_letter(&producer, &source, "recording", "member-9", "forged", (1, 0)).await;

    let dry = ReplayOptions { dry_run: true, ..Default::default() };
    for _ in 0..2 {
        let planned = dlq::replay(&env.kafka_admin(), &source, dry).await.expect("dry run");
        assert!(planned.dry_run);
        assert_eq!((planned.replayed, planned.refused.len()), (3, 1), "{planned:?}");
        let offsets: Vec<i64> = planned.planned.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [0, 1, 2], "the dead letters it would replay, by their own position");
        assert_eq!(env.read_log(&source).await.len(), 3, "a dry run produces nothing");
    }

    // The dead-letter topic's partition 0 up to offset 1: two of them.
    let first_two = Filter { partition: Some(0), from_offset: None, to_offset: Some(1) };
    let done = dlq::replay(&env.kafka_admin(), &source, ReplayOptions { filter: first_two, ..Default::default() })
        .await
        .expect("replay");
    assert_eq!((done.replayed, done.skipped, done.refused.len()), (2, 2, 0), "{done:?}");
    let copies = |log: &[rdkafka::message::OwnedMessage], payload: &str| {
        log.iter().filter(|m| m.payload() == Some(payload.as_bytes())).count()
    };
    let log = env.read_log(&source).await;
    assert_eq!((copies(&log, "bytes 0"), copies(&log, "bytes 1"), copies(&log, "bytes 2")), (2, 2, 1));

    // Another partition selects nothing here; the rest go on the next full replay.
    let none = Filter { partition: Some(7), ..Default::default() };
    let nothing = dlq::replay(&env.kafka_admin(), &source, ReplayOptions { filter: none, ..Default::default() })
        .await
        .expect("replay");
    assert_eq!((nothing.replayed, nothing.skipped), (0, 2));
    let rest = dlq::replay(&env.kafka_admin(), &source, ReplayOptions::default()).await.expect("replay");
    assert_eq!((rest.replayed, rest.refused.len()), (1, 1), "{rest:?}");
    let log = env.read_log(&source).await;
    assert_eq!((log.len(), copies(&log, "bytes 2")), (6, 2));
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
                    .headers(dead_letter_headers("stock", topic, 0, i as i64)),
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
