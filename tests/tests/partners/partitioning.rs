//! One member, one partition, whoever produces: firstcome's producer places
//! keyed records where Kafka's Java producer does (murmur2), so a partner's
//! `SurveySubmitted` for a member shares the partition (and the order) of
//! ingest's records for that member.

use std::collections::HashMap;

use futures::future::join_all;
use platform::kafka::{EventProducer, RecordContext};
use platform::settings::Principal;
use schemas::{ClientInfo, SurveyAnswer, SurveySubmitted};
use testkit::TestEnv;

/// Enough members to cover every partition many times over: a CRC32
/// partitioner agrees with murmur2 on about one key in twelve.
const MEMBERS: usize = 1_000;
const PARTITIONS: i32 = 12;

fn entry(event_id: &str, user_id: &str) -> SurveySubmitted {
    SurveySubmitted {
        event_id: event_id.into(),
        entry_id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.into(),
        answers: vec![SurveyAnswer { question: "satisfaction".into(), answer: "5".into() }],
        submitted_at: schemas::now_millis(),
        accepted_at: schemas::now_millis(),
        ticket: 0,
        client: ClientInfo { channel: "test".into(), user_agent: None },
    }
}

/// Member ids of the shapes the tools and partners use.
fn member_ids() -> Vec<String> {
    (0..MEMBERS)
        .map(|n| match n % 3 {
            0 => format!("m{n}"),
            1 => format!("member-{n:06}"),
            _ => uuid::Uuid::new_v4().to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_places_every_member_where_kafkas_java_producer_does() {
    let env = TestEnv::builder().partitions(PARTITIONS).without_database().build().await;
    // Ingest's producer, as ingest builds it (its principal, its config).
    let producer = EventProducer::new(&env.kafka_as(Principal::INGEST), env.codec(), "partitioning-test")
        .expect("ingest's producer");
    let members = member_ids();

    let deliveries = join_all(members.iter().map(|member| {
        let producer = producer.clone();
        async move {
            let context = RecordContext::new_root("partitioning-test", None);
            let delivery = producer.publish(&entry("ev-partitioning", member), context).await;
            (member.clone(), delivery.expect("acknowledged").partition)
        }
    }))
    .await;
    let ours: HashMap<String, i32> = deliveries.into_iter().collect();

    let keys: String = members.iter().map(|m| format!("{m}\n")).collect();
    let java = super::java::run_with_kafka_classpath(
        "tests/java/partitioner/JavaPartition.java",
        &[&PARTITIONS.to_string()],
        &keys,
    );
    let java: HashMap<String, i32> = java
        .lines()
        .map(|line| {
            let (key, partition) = line.split_once('\t').expect("key<TAB>partition");
            (key.to_string(), partition.parse().expect("a partition number"))
        })
        .collect();

    assert_eq!(java.len(), MEMBERS, "the Java producer placed every member");
    let differ: Vec<_> = members.iter().filter(|m| java[*m] != ours[*m]).collect();
    assert!(
        differ.is_empty(),
        "{} of {MEMBERS} members on another partition than Kafka's Java producer puts them, e.g. {:?}",
        differ.len(),
        differ.iter().take(3).map(|m| (m, ours[*m], java[*m])).collect::<Vec<_>>()
    );
    let used: std::collections::HashSet<_> = ours.values().collect();
    assert_eq!(used.len(), PARTITIONS as usize, "the members spread over every partition");
}
