//! Redis going away under ingest: 503 with Retry-After, and nothing
//! half-written — the refused entry never reaches Kafka. Uses a Redis server
//! of its own (a real `redis-server` process), so the shared one stays up for
//! the other tests.

use std::process::Stdio;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};

use platform::event_keys::write_event;
use platform::settings::{HttpSettings, RedisSettings};
use platform::CancellationToken;

use crate::helpers::{wait_until, TestEnv};

/// A throw-away Redis on a free loopback port, with the stack's users
/// (`stack/redis/users.acl`): `settings` names none (for the services, which
/// log in as their own), `admin` is the test's.
struct OwnRedis {
    child: tokio::process::Child,
    settings: RedisSettings,
    admin: RedisSettings,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = testkit::unused_port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--aclfile", concat!(env!("CARGO_MANIFEST_DIR"), "/../stack/redis/users.acl")])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs");
        let settings = RedisSettings { url: format!("redis://127.0.0.1:{port}"), ..Default::default() };
        let admin = settings.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
        let up = wait_until(Duration::from_secs(10), || async {
            match platform::redis::connect(&admin).await {
                Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        assert!(up, "own redis started");
        Self { child, settings, admin }
    }
}

#[tokio::test]
async fn with_redis_down_ingest_answers_503_and_writes_nothing() {
    let env = TestEnv::new().await;
    let mut own = OwnRedis::start().await;
    let event_id = format!("ev-{}", uuid::Uuid::new_v4());
    let meta = testkit::open_event(&event_id, 10);
    let mut conn = platform::redis::connect(&own.admin).await.expect("redis");
    assert!(write_event(&mut conn, &meta, &["m-1".into(), "m-2".into()]).await.expect("event written"));

    let app = ingest::Application::build(ingest::Settings {
        http: HttpSettings::on_port(0),
        ops: HttpSettings::on_port(0),
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        redis: own.settings.clone(),
        database: env.database.clone(),
        ..Default::default()
    })
    .await
    .expect("ingest");
    let url = format!("{}/api/events/{event_id}/entries", app.base_url());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let secret = firstcome_cli::CliSettings::default().auth.token_secret;
    let http = reqwest::Client::new();
    let enter = |member: &'static str| {
        let token = ingest::mint(&secret, member, Duration::from_secs(60)).expect("token");
        http.post(&url).bearer_auth(token).json(&serde_json::json!({"answers": {"satisfaction": "5"}})).send()
    };

    assert_eq!(enter("m-1").await.expect("answer").status().as_u16(), 202, "works while Redis is up");

    // Redis goes away.
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query_async::<()>(&mut conn).await;
    let _ = own.child.wait().await;
    let response = enter("m-2").await.expect("answer");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unavailable");

    // Kafka holds exactly the one accepted entry.
    let consumer: StreamConsumer = platform::kafka::client_config(&testkit::kafka_admin(&env.kafka))
        .set("group.id", format!("{}outage-check", env.prefix))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let topic = env.kafka.topics().survey_submitted;
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut records = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
        records += 1;
    }
    assert_eq!(records, 1, "the 503 entry never reached Kafka");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}
