//! The command line's contract, on the built `firstcome` binary: one JSON
//! document on stdout with `--format json`, nothing logged before a
//! command's output, exit statuses that tell a failed check (1) from bad
//! usage (2) from an unreachable service (3, named with its address), and
//! the describe commands against a test's own topics on the real Kafka.

use std::process::Output;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestEnv;

/// Runs `firstcome` with the stack's settings (inherited) and `env` on top.
fn firstcome(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_firstcome"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("firstcome runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn json_output_is_one_document_and_nothing_is_logged_before_it() {
    let output = firstcome(&["topics", "show", "--format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(json(&output).as_array().map(Vec::len), Some(schemas::topology::ROUTES.len()));
    assert_eq!(stderr(&output), "", "quiet by default: no log line");

    let verbose = firstcome(&["topics", "show", "-v"], &[]);
    assert!(stderr(&verbose).contains("INFO"), "-v logs: {}", stderr(&verbose));
}

#[test]
fn bad_usage_is_exit_2() {
    assert_eq!(firstcome(&["topics", "nope"], &[]).status.code(), Some(2));
    assert_eq!(firstcome(&["token", "m-1", "--ttl-secs", "0"], &[]).status.code(), Some(2));
    assert_eq!(firstcome(&["topics", "show", "--format", "yaml"], &[]).status.code(), Some(2));
    // The lab's commands are firstcome-lab's.
    assert_eq!(firstcome(&["chaos"], &[]).status.code(), Some(2));
}

#[test]
fn an_unreachable_service_is_exit_3_and_named_with_its_address() {
    let port = testkit::unused_port().to_string();
    let brokers = format!("127.0.0.1:{port}");
    let output = firstcome(&["groups", "describe"], &[("FIRSTCOME_KAFKA__BROKERS", &brokers)]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains(&brokers), "names the brokers: {}", stderr(&output));
    assert!(output.stdout.is_empty());

    let redis = format!("redis://127.0.0.1:{port}");
    let output = firstcome(&["event", "show", "ev-1"], &[("FIRSTCOME_REDIS__URL", &redis)]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stderr(&output).contains(&redis), "names Redis: {}", stderr(&output));
}

#[tokio::test]
async fn topics_and_groups_are_described_from_the_live_cluster() {
    let env = TestEnv::builder().without_database().build().await;
    let topics = env.topics();
    // Three records on partition 0 of survey-submitted: the groups reading it lag by 3 there.
    let producer: FutureProducer = platform::kafka::client_config(&env.kafka_admin()).create().expect("producer");
    for n in 0..3 {
        let key = format!("m-{n}");
        let record = FutureRecord::to(&topics.survey_submitted).partition(0).key(&key).payload("not avro");
        producer.send(record, Duration::from_secs(10)).await.expect("produced");
    }
    let prefix = [("FIRSTCOME_KAFKA__TOPIC_PREFIX", env.prefix.as_str())];

    let described = firstcome(&["topics", "describe", "--format", "json"], &prefix);
    assert_eq!(described.status.code(), Some(0), "{}", stderr(&described));
    let views = json(&described);
    let submitted = views
        .as_array()
        .and_then(|v| v.iter().find(|t| t["topic"] == topics.survey_submitted.as_str()))
        .unwrap_or_else(|| panic!("{} described: {views}", topics.survey_submitted));
    assert_eq!(submitted["live"]["partitions"], testkit::PARTITIONS);
    assert_eq!(submitted["live"]["records"], 3);
    assert_eq!(submitted["consumed_by"], serde_json::json!(["stock", "recording"]));

    let groups = firstcome(&["groups", "describe", "--group", "stock", "--format", "json"], &prefix);
    assert_eq!(groups.status.code(), Some(0), "{}", stderr(&groups));
    let stock = &json(&groups)[0];
    assert_eq!(stock["id"], env.group("stock"));
    assert_eq!(stock["lag"], 3, "{stock}");
    let lagging: Vec<&serde_json::Value> =
        stock["partitions"].as_array().expect("partitions").iter().filter(|p| p["lag"] != 0).collect();
    assert_eq!(lagging.len(), 1, "{stock}");
    assert_eq!(
        (&lagging[0]["topic"], &lagging[0]["partition"]),
        (&serde_json::json!(topics.survey_submitted), &serde_json::json!(0))
    );

    // A group that is not in the topology is bad usage.
    assert_eq!(firstcome(&["groups", "describe", "--group", "nope"], &prefix).status.code(), Some(2));

    // A topic the cluster lacks is a failed check.
    env.delete_topics().await;
    let missing = || async {
        let after = firstcome(&["topics", "describe"], &prefix);
        after.status.code() == Some(1) && String::from_utf8_lossy(&after.stdout).contains("MISSING")
    };
    testkit::wait_for(
        "topics describe to report the deleted topics missing (exit 1)",
        Duration::from_secs(30),
        missing,
    )
    .await;
}
