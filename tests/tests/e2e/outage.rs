//! Redis going away under ingest: 503 with Retry-After, and nothing
//! half-written — the refused entry never reaches Kafka. Uses a Redis server
//! of its own (a real `redis-server` process), so the shared one stays up for
//! the other tests.

use std::process::Stdio;
use std::time::Duration;

use platform::event_keys::write_event;
use platform::settings::{HttpSettings, RedisSettings};
use platform::CancellationToken;
use schemas::SurveySubmitted;

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
        let admin =
            settings.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
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
    let secret = ingest::Settings::default().auth.token_secret;
    let http = reqwest::Client::new();
    let enter = |member: &'static str| {
        let token = ingest::mint(&secret, member, Duration::from_secs(60)).expect("token");
        http.post(&url).bearer_auth(token).json(&serde_json::json!({"answers": {"satisfaction": "5"}})).send()
    };

    // While Redis is up the member gets in — as a member would, honouring Retry-After: on a
    // cold stack (right after `stack up`) the first publish can outlast its deadline and be
    // answered 503, and the retry resumes the same entry.
    let mut first = enter("m-1").await.expect("answer");
    for _ in 0..5 {
        if first.status().as_u16() != 503 {
            break;
        }
        let retry_after = first.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        first = enter("m-1").await.expect("answer");
    }
    assert_eq!(first.status().as_u16(), 202, "works while Redis is up");
    let first: serde_json::Value = first.json().await.expect("json");
    let entry_id = first["entry_id"].as_str().expect("entry id").to_string();

    // Redis goes away.
    let _ = redis::cmd("SHUTDOWN").arg("NOSAVE").query_async::<()>(&mut conn).await;
    let _ = own.child.wait().await;
    let response = enter("m-2").await.expect("answer");
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"], "unavailable");

    // Kafka holds the accepted entry and nothing of the refused member (read to the
    // watermarks: the 503 was answered before any produce). A retried publish may have put
    // the one entry there twice, under its one entry id.
    let submitted: Vec<SurveySubmitted> =
        testkit::read_events(&env.kafka, &env.codec(), &env.topics().survey_submitted).await;
    assert!(!submitted.is_empty(), "the accepted entry is in the log");
    for record in &submitted {
        assert_eq!(
            (record.user_id.as_str(), record.entry_id.as_str()),
            ("m-1", entry_id.as_str()),
            "the 503 entry never reached Kafka"
        );
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}
