//! Overload and outages: a full instance sheds at once (503 overloaded);
//! Kafka down is 503 and the retry resumes the same entry.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn a_full_instance_sheds_entries_at_once_with_503_overloaded() {
    let mut settings = isolated_settings().await;
    settings.limits.max_in_flight = 1;
    // Kafka unreachable: an admitted request waits out the publish deadline.
    settings.kafka.brokers = format!("127.0.0.1:{}", testkit::unused_port());
    settings.kafka.delivery_timeout_ms = 3_000;
    let app = TestApp::spawn(settings).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;

    let held = tokio::spawn(
        app.http.post(app.entries_url(&event_id)).bearer_auth(app.token("m-1")).json(&valid_body()).send(),
    );
    // Its pending mark is set: the request now waits on Kafka, holding the slot.
    let in_flight = testkit::wait_until(DEADLINE, || {
        let mut conn = conn.clone();
        let event_id = event_id.clone();
        async move { entered_mark(&mut conn, &event_id, "m-1").await.is_some() }
    })
    .await;
    assert!(in_flight, "the first request never reached the admit script");

    let started = tokio::time::Instant::now();
    let response = app.enter(&event_id, "m-2").await;
    let waited = started.elapsed();
    assert!(!held.is_finished(), "the first request must still hold the slot");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    assert_eq!(json_of(response).await["error"], "overloaded");
    assert!(waited < Duration::from_secs(1), "shed at once, not queued: {waited:?}");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-2").await, None, "shed before Redis");

    let first = tokio::time::timeout(DEADLINE, held).await.expect("ends").expect("joined").expect("answered");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(first).await["error"], "unavailable");
    // The slot is free again: the next request gets a real answer.
    let response = app.enter(&event_id, "stranger").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let metrics = app.http.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("firstcome_ingest_requests_total{") && l.contains(r#"outcome="overloaded""#)),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn kafka_down_is_503_and_the_retry_resumes_the_same_entry() {
    let settings = isolated_settings().await;
    let broken = {
        let mut broken = settings.clone();
        broken.kafka.brokers = format!("127.0.0.1:{}", testkit::unused_port());
        broken
    };
    let down = TestApp::spawn(broken).await;
    let mut conn = redis(&settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;

    let response = down.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = header(&response, "retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=3).contains(&retry_after), "retry after {retry_after}");
    assert_eq!(json_of(response).await["error"], "unavailable");
    let mark = entered_mark(&mut conn, &event_id, "m-1").await.expect("the pending mark stays");
    let pending_entry = mark.split('|').nth(1).expect("P|entry|ms").to_string();
    assert!(mark.starts_with("P|"), "{mark}");
    down.stop().await;

    // The member retries against a working instance: first told to wait while
    // the failed request could still be in flight, then resumed.
    let up = TestApp::spawn(settings).await;
    let resumed = testkit::wait_until(DEADLINE, || async {
        let response = up.enter(&event_id, "m-1").await;
        let status = response.status();
        let body = json_of(response).await;
        assert_eq!(body["entry_id"], pending_entry.as_str(), "every answer names the one entry");
        match status {
            StatusCode::ACCEPTED => true,
            StatusCode::CONFLICT => {
                assert_eq!(body["error"], "entry_in_progress");
                false
            }
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await;
    assert!(resumed, "the retry was never resumed");
    let (record, _) = consume_entry(&up.settings, &pending_entry).await;
    assert_eq!(record.user_id, "m-1");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, Some(format!("A|{pending_entry}")));
    up.stop().await;
}
