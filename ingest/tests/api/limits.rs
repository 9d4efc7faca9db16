//! Overload, hostile clients and outages: a full instance sheds at once (503
//! overloaded) but only after the token; stalled connections and slow bodies
//! are cut; a member over its rate gets 429; Kafka down is 503 and the retry
//! resumes the same entry.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

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
    // The slot is taken only after the token: anonymous and forged requests
    // are told 401, never 503, and can never hold a slot themselves.
    let forged = app
        .http
        .post(app.entries_url(&event_id))
        .bearer_auth(forged_token("m-2"))
        .json(&valid_body())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let anonymous = app.http.post(app.entries_url(&event_id)).json(&valid_body()).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    let first = tokio::time::timeout(DEADLINE, held).await.expect("ends").expect("joined").expect("answered");
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(first).await["error"], "unavailable");
    // The slot is free again: the next request gets a real answer.
    let response = app.enter(&event_id, "stranger").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let metrics = app.metrics().await;
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

/// Reads until the server closes the connection (or `deadline` passes);
/// `true` when it closed.
async fn closed_by_server(mut stream: TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn stalled_connections_are_closed_within_10s_and_never_delay_an_honest_member() {
    let app = TestApp::spawn(isolated_settings().await).await;
    assert!(app.settings.limits.header_read_timeout_ms <= 5_000, "the default cuts a stalled head within 5 s");
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let address = app.base_url.trim_start_matches("http://").to_string();

    // 200 clients send a request line and one header, then stall; 20 more
    // connect and send nothing at all.
    let started = tokio::time::Instant::now();
    let mut stalled = Vec::new();
    for i in 0..220 {
        let mut stream = TcpStream::connect(&address).await.expect("connects");
        if i < 200 {
            stream
                .write_all(format!("POST /api/events/{event_id}/entries HTTP/1.1\r\nHost: ingest\r\n").as_bytes())
                .await
                .expect("writes");
        }
        stalled.push(stream);
    }

    // Meanwhile an honest member is answered at once.
    let asked = tokio::time::Instant::now();
    let state = app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap();
    assert_eq!(state.status(), StatusCode::OK);
    let response = app.enter(&event_id, "stranger").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(2), "the honest member waited {waited:?} behind stalled clients");

    let deadline = started + Duration::from_secs(10);
    let closed = futures::future::join_all(stalled.into_iter().map(|s| closed_by_server(s, deadline))).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of 220 stalled connections still open 10 s after they stalled");
    app.stop().await;
}

#[tokio::test]
async fn a_slow_body_is_cut_at_its_deadline_with_408() {
    let mut settings = isolated_settings().await;
    settings.limits.body_read_timeout_ms = 1_000;
    let app = TestApp::spawn(settings).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let address = app.base_url.trim_start_matches("http://").to_string();

    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/events/{event_id}/entries HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"answers\": {{",
        app.token("m-1")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "the slow body was never cut");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "cut after {waited:?}");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None, "nothing admitted");
    app.stop().await;
}

#[tokio::test]
async fn a_member_over_its_rate_gets_429_before_any_redis_call() {
    let mut settings = isolated_settings().await;
    settings.limits.member_requests_per_sec = 1;
    settings.limits.member_burst = 2;
    let app = TestApp::spawn(settings).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;

    // Two requests spend m-1's burst (unknown entries: 404).
    for _ in 0..2 {
        assert_eq!(app.status_of(&Uuid::now_v7().to_string(), "m-1").await.status(), StatusCode::NOT_FOUND);
    }
    // The third is refused before anything is looked up: an event this
    // instance never saw (it would need Redis to answer 404) is 429, and
    // the member's real event is not admitted.
    let never_seen = format!("ev-{}", Uuid::new_v4());
    for target in [never_seen.as_str(), event_id.as_str()] {
        let response = app.enter(target, "m-1").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{target}");
        assert_eq!(header(&response, "retry-after"), Some("1"));
        assert_eq!(json_of(response).await["error"], "rate_limited");
    }
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None, "no admit script ran");
    // Another member has its own budget.
    assert_eq!(app.enter(&never_seen, "m-2").await.status(), StatusCode::NOT_FOUND);

    // After Retry-After the member is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED);
    let metrics = app.metrics().await;
    assert!(metrics.lines().any(|l| l.starts_with("firstcome_ingest_rate_limited_total")), "{metrics}");
    app.stop().await;
}
