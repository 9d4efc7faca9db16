//! A Java partner no one here wrote: Kafka's Java client with Apicurio's own
//! Avro serde (`tests/java/partner`, built with Maven by its `build.sh`)
//! reads an entry firstcome wrote through the registry, then produces an
//! entry of its own (zstd, the Java partitioner, the registered schema), and
//! firstcome's stages decide and record it like any other.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use firstcome_lab::pipeline;
use platform::event_keys::write_event;
use platform::kafka::{EventProducer, RecordContext};
use platform::settings::{KafkaSettings, Principal};
use platform::CancellationToken;
use schemas::{ClientInfo, Outcome, StockDecision, SurveyAnswer, SurveySubmitted};
use testkit::TestEnv;

use super::java::repo_root;

/// Where `tests/java/partner/build.sh` leaves the classes and the classpath.
fn built() -> (PathBuf, String) {
    let root = repo_root();
    let status = Command::new(root.join("tests/java/partner/build.sh")).status().expect("build.sh ran");
    assert!(status.success(), "the Java partner builds (tests/java/partner/build.sh)");
    let out = root.join("target/java-partner");
    let classpath = std::fs::read_to_string(out.join("classpath")).expect("the partner's classpath");
    (out.join("classes"), classpath.trim().to_string())
}

/// The partner's Kafka login as Java client properties (`kafka.` keys) and
/// the registry's own API (not the Confluent-compatible one firstcome uses).
fn partner_properties(
    kafka: &KafkaSettings,
    registry_url: &str,
    topic: &str,
    event: &str,
    member: &str,
    entry: &str,
) -> String {
    // The settings' own login (librdkafka's config map hides the password).
    let login: std::collections::HashMap<&str, String> = kafka.security_properties().into_iter().collect();
    let mut lines = vec![format!("kafka.bootstrap.servers={}", kafka.brokers)];
    if let (Some(user), Some(password)) = (login.get("sasl.username"), login.get("sasl.password")) {
        let mechanism = &login["sasl.mechanism"];
        let module = if mechanism.starts_with("SCRAM") {
            "org.apache.kafka.common.security.scram.ScramLoginModule"
        } else {
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        };
        lines.push(format!("kafka.security.protocol={}", login["security.protocol"].to_uppercase()));
        lines.push(format!("kafka.sasl.mechanism={mechanism}"));
        lines.push(format!("kafka.sasl.jaas.config={module} required username=\"{user}\" password=\"{password}\";"));
    }
    let v3 = registry_url.replace("/apis/ccompat/v7", "/apis/registry/v3");
    lines.extend([
        format!("registry.url={v3}"),
        format!("topic={topic}"),
        format!("event.id={event}"),
        format!("member.id={member}"),
        format!("entry.id={entry}"),
    ]);
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_partner_with_the_registrys_serde_reads_our_entries_and_its_entry_is_decided_and_recorded() {
    let (classes, classpath) = built();
    let env = TestEnv::new().await;
    let topics = env.topics();
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let (ours, partners) = ("member-ours", "member-partner");
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let meta = testkit::open_event(&event_id, 10);
    assert!(write_event(&mut redis, &meta, &[ours.into(), partners.into()]).await.expect("event written"));

    let shutdown = CancellationToken::new();
    let stock = stock_processor::Application::build(pipeline::stock_settings(&env)).await.expect("stock-processor");
    let stock = tokio::spawn(stock.run_until_stopped(shutdown.clone()));
    let recorder = recorder::Application::build(pipeline::recorder_settings(&env)).await.expect("recorder");
    let recorder = tokio::spawn(recorder.run_until_stopped(shutdown.clone()));

    // Our entry, as ingest writes it.
    let producer =
        EventProducer::new(&env.kafka_as(Principal::INGEST), env.codec(), "java-partner-test").expect("producer");
    let our_entry = uuid::Uuid::new_v4().to_string();
    let now = schemas::now_millis();
    let entry = SurveySubmitted {
        event_id: event_id.clone(),
        entry_id: our_entry.clone(),
        user_id: ours.into(),
        answers: vec![SurveyAnswer { question: "satisfaction".into(), answer: "4".into() }],
        submitted_at: now,
        accepted_at: now,
        ticket: 1,
        client: ClientInfo { channel: "web".into(), user_agent: None },
    };
    producer.publish(&entry, RecordContext::new_root("java-partner-test", None)).await.expect("our entry");

    // The partner, in its own JVM.
    let partner_entry = uuid::Uuid::new_v4().to_string();
    let properties = std::env::temp_dir().join(format!("java-partner-{partner_entry}.properties"));
    let text = partner_properties(
        &env.kafka_admin(),
        &env.registry.url,
        &topics.survey_submitted,
        &event_id,
        partners,
        &partner_entry,
    );
    std::fs::write(&properties, text).expect("properties written");
    let output = tokio::task::spawn_blocking(move || {
        let run = Command::new("java")
            .arg("-cp")
            .arg(format!("{}:{classpath}", classes.display()))
            .arg("dev.firstcome.partner.Partner")
            .arg(&properties)
            .output();
        let _ = std::fs::remove_file(&properties);
        run
    })
    .await
    .expect("joined")
    .expect("java started");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "the partner failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains(&format!("consumed {our_entry} {ours} web")),
        "the registry's serde read our entry: {stdout}"
    );
    assert!(stdout.contains("produced "), "{stdout}");

    // Decided by the stock stage and recorded by the recorder, like ours.
    let decided = testkit::wait_until(Duration::from_secs(60), || async {
        let decisions: Vec<StockDecision> = env.read_events(&topics.stock_decided).await;
        decisions.iter().any(|d| d.entry_id == partner_entry && d.outcome == Outcome::Won)
            && decisions.iter().any(|d| d.entry_id == our_entry)
    })
    .await;
    assert!(decided, "the partner's entry won like any other");
    let recorded = testkit::wait_until(Duration::from_secs(60), || async {
        let db = env.pool().get().await.expect("db");
        let id = uuid::Uuid::parse_str(&partner_entry).expect("uuid");
        let row = db
            .query_opt("SELECT client_channel, outcome FROM event_entries WHERE entry_id = $1", &[&id])
            .await
            .expect("query");
        row.is_some_and(|row| {
            row.get::<_, Option<String>>(0).as_deref() == Some("partner")
                && row.get::<_, Option<String>>(1).as_deref() == Some("WON")
        })
    })
    .await;
    assert!(recorded, "the partner's entry was recorded with its channel and outcome");

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), stock).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), recorder).await;
}
