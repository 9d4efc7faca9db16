//! A produce the broker refuses for good (here: the entry is larger than the
//! topic takes) is answered 503 at once, logged as an error naming what an
//! operator must look at and counted, not retried until the deadline.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use reqwest::StatusCode;

use crate::helpers::*;

/// Smaller than any entry record.
const TINY_MAX_MESSAGE_BYTES: &str = "16";

#[tokio::test]
async fn an_entry_the_broker_refuses_for_good_is_503_at_once_and_counted() {
    let settings = isolated_settings().await;
    let admin_settings =
        settings.kafka.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
    let topic = settings.kafka.topics().survey_submitted;
    let admin = platform::kafka::admin::admin_client(&admin_settings).expect("admin client");
    let shrink = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("max.message.bytes", TINY_MAX_MESSAGE_BYTES);
    let altered = admin.alter_configs([&shrink], &AdminOptions::new()).await.expect("alter configs");
    assert!(altered.iter().all(|r| r.is_ok()), "{altered:?}");

    let app = TestApp::spawn(settings.clone()).await;
    let mut conn = redis(&settings).await;
    let members: Vec<String> = (1..=20).map(|n| format!("m-{n}")).collect();
    let eligible: Vec<&str> = members.iter().map(String::as_str).collect();
    let event_id = create_event(&mut conn, EventSpec::open(&eligible)).await;

    // The broker may take a moment to apply the new limit: an entry still
    // taken whole says it is not yet in force, and the next member tries.
    let mut answered = None;
    for member in &members {
        let started = Instant::now();
        let response = app.enter(&event_id, member).await;
        if response.status() != StatusCode::ACCEPTED {
            answered = Some((response.status(), started.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, took) = answered.expect("the new limit came into force");

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < settings.kafka.delivery_timeout() / 2, "answered after {took:?}: retried, not refused at once");
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("firstcome_produce_refused_total{")
            && l.contains("MessageSizeTooLarge")
            && l.contains(&topic)),
        "the refusal is counted: {metrics}"
    );
    app.stop().await;
}
