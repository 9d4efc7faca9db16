//! The ingest API against the real local stack (Kafka, registry, Redis,
//! PostgreSQL). Each test has its own topics, database, event and port.

#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use helpers::*;
use platform::event_keys::{EventKeys, EventStatus, StateChange, STATE_CHANNEL};
use platform::trace_context::TraceParent;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn an_accepted_entry_is_answered_202_and_is_in_kafka() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let trace = TraceParent::new_root();

    let before = schemas::now_millis();
    let response = app
        .http
        .post(app.entries_url(&event_id))
        .bearer_auth(app.token("m-1"))
        .header("X-Correlation-Id", "corr-accepted-1")
        .header("traceparent", trace.to_string())
        .header("User-Agent", "ingest-test/1")
        // Raw text: `json!` would sort the keys, and the order is what is tested.
        .header("Content-Type", "application/json")
        .body(r#"{"answers": {"q2": "b", "q1": "a", "extra": "c"}}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&response, "x-correlation-id"), Some("corr-accepted-1"));
    let location = header(&response, "location").map(str::to_string);
    let body = json_of(response).await;
    let entry_id = body["entry_id"].as_str().expect("entry id").to_string();
    let parsed = Uuid::parse_str(&entry_id).expect("entry id is a UUID");
    assert_eq!(parsed.get_version_num(), 7, "entry ids are UUIDv7");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["status_url"], format!("/api/entries/{entry_id}"));
    assert_eq!(location.as_deref(), Some(format!("/api/entries/{entry_id}").as_str()));

    let (record, context) = consume_entry(&app.settings, &entry_id).await;
    assert_eq!(record.event_id, event_id);
    assert_eq!(record.user_id, "m-1");
    let answers: Vec<(&str, &str)> =
        record.answers.iter().map(|a| (a.question.as_str(), a.answer.as_str())).collect();
    assert_eq!(answers, [("q2", "b"), ("q1", "a"), ("extra", "c")], "answers in the order given");
    assert_eq!(record.client.channel, "web");
    assert_eq!(record.client.user_agent.as_deref(), Some("ingest-test/1"));
    assert!(record.submitted_at >= before && record.submitted_at <= schemas::now_millis());
    assert!(record.accepted_at >= before - 1_000, "accepted_at is the admit time");
    assert!(Uuid::parse_str(&context.message_id).is_ok(), "message-id header is a UUID");
    assert_eq!(context.correlation_id, "corr-accepted-1");
    let record_trace = TraceParent::parse(&context.traceparent).expect("traceparent header");
    assert_eq!(record_trace.trace_id, trace.trace_id, "the record continues the request's trace");

    // Acknowledged: the mark is final and the entry is known as pending.
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, Some(format!("A|{entry_id}")));
    let status = app.http.get(format!("{}/api/entries/{entry_id}", app.base_url)).send().await.unwrap();
    assert_eq!(status.status(), StatusCode::OK);
    let status = json_of(status).await;
    assert_eq!(status["status"], "pending");
    assert_eq!(status["event_id"], event_id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_second_entry_is_refused_with_the_first_entry_id() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;

    let first = app.enter(&event_id, "m-1").await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first_id = json_of(first).await["entry_id"].as_str().unwrap().to_string();

    let second = app.enter(&event_id, "m-1").await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let body = json_of(second).await;
    assert_eq!(body["error"], "already_entered");
    assert_eq!(body["entry_id"], first_id.as_str());
    // Exactly one entry for the member in Redis.
    let entries: i64 = redis::cmd("HLEN").arg(EventKeys::new(&event_id).entries).query_async(&mut conn).await.unwrap();
    assert_eq!(entries, 1);
}

#[tokio::test]
async fn concurrent_entries_of_one_member_admit_exactly_one() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;

    let requests = (0..8).map(|_| app.enter(&event_id, "m-1"));
    let responses = futures::future::join_all(requests).await;
    let mut accepted = Vec::new();
    let mut refused_ids = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::ACCEPTED => accepted.push(json_of(response).await["entry_id"].as_str().unwrap().to_string()),
            StatusCode::CONFLICT => refused_ids.push(json_of(response).await["entry_id"].as_str().unwrap().to_string()),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(accepted.len(), 1, "exactly one admitted");
    assert!(refused_ids.iter().all(|id| *id == accepted[0]), "every 409 names the one entry");
}

#[tokio::test]
async fn a_member_who_did_not_buy_is_refused_403() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;

    let response = app.enter(&event_id, "stranger").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(response).await["error"], "not_eligible");
    assert_eq!(entered_mark(&mut conn, &event_id, "stranger").await, None, "nothing marked");
}

#[tokio::test]
async fn missing_forged_or_expired_tokens_are_refused_401() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;

    let forged = app
        .http
        .post(app.entries_url(&event_id))
        .bearer_auth(forged_token("m-1"))
        .json(&valid_body())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(forged).await["error"], "unauthorized");

    let missing = app.http.post(app.entries_url(&event_id)).json(&valid_body()).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);

    // The token is checked before anything else, even for an unknown event.
    let unknown = app
        .http
        .post(app.entries_url("no-such-event"))
        .bearer_auth("garbage")
        .json(&valid_body())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None);
}

#[tokio::test]
async fn an_unknown_event_is_404() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let response = app.enter(&format!("ev-{}", Uuid::new_v4()), "m-1").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(response).await["error"], "not_found");
}

#[tokio::test]
async fn before_open_is_425_with_retry_after() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let now = schemas::now_millis();
    let event_id = create_event(
        &mut conn,
        EventSpec { open_at_ms: now + 90_000, close_at_ms: now + 3_600_000, ..EventSpec::open(&["m-1"]) },
    )
    .await;

    let response = app.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::TOO_EARLY);
    let retry_after: u64 = header(&response, "retry-after").expect("Retry-After").parse().unwrap();
    assert!((85..=91).contains(&retry_after), "retry after {retry_after} s");
    assert_eq!(json_of(response).await["error"], "too_early");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None);

    let state = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
    assert_eq!(state["status"], "upcoming");
    assert_eq!(state["questions"], json!(["q1", "q2"]));
}

#[tokio::test]
async fn after_close_is_410_closed() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let now = schemas::now_millis();
    let past = create_event(
        &mut conn,
        EventSpec { open_at_ms: now - 7_200_000, close_at_ms: now - 1_000, ..EventSpec::open(&["m-1"]) },
    )
    .await;
    let closed_by_operator =
        create_event(&mut conn, EventSpec { status: EventStatus::Closed, ..EventSpec::open(&["m-1"]) }).await;

    for event_id in [past, closed_by_operator] {
        let response = app.enter(&event_id, "m-1").await;
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(json_of(response).await["error"], "closed");
        assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None);
    }
}

#[tokio::test]
async fn no_stock_left_is_410_sold_out() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec { stock: 0, ..EventSpec::open(&["m-1", "m-2"]) }).await;

    for member in ["m-1", "m-2"] {
        let response = app.enter(&event_id, member).await;
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(json_of(response).await["error"], "sold_out");
        assert_eq!(entered_mark(&mut conn, &event_id, member).await, None);
    }
}

#[tokio::test]
async fn the_admit_script_refuses_once_the_counter_hits_zero() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    // The cache has the event as open...
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED);
    // ...then the stock group takes the last unit, and nobody told ingest yet.
    let _: () = redis::cmd("SET").arg(EventKeys::new(&event_id).stock).arg(0).query_async(&mut conn).await.unwrap();

    let response = app.enter(&event_id, "m-2").await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(json_of(response).await["error"], "sold_out");
    let state = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
    assert_eq!(state["status"], "sold_out", "the local cache learnt it");
}

#[tokio::test]
async fn a_published_sold_out_reaches_every_instance_within_a_second() {
    let mut settings = isolated_settings().await;
    // No periodic re-read during the test: only pub/sub can deliver the change.
    settings.state_refresh_ms = 60_000;
    let a = TestApp::spawn(settings.clone()).await;
    settings.database.migrate_on_start = false;
    let b = TestApp::spawn(settings).await;
    let mut conn = redis(&a.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    for app in [&a, &b] {
        let state = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
        assert_eq!(state["status"], "open");
    }

    let change = serde_json::to_string(&StateChange { event_id: event_id.clone(), status: EventStatus::SoldOut }).unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg(STATE_CHANNEL).arg(change).query_async(&mut conn).await.unwrap();
    let published = tokio::time::Instant::now();

    for app in [&a, &b] {
        let url = format!("{}/api/events/{event_id}", app.base_url);
        let switched = eventually(Duration::from_secs(1).saturating_sub(published.elapsed()), || {
            let request = app.http.get(&url).send();
            async move {
                match request.await {
                    Ok(response) => response.json::<serde_json::Value>().await.is_ok_and(|s| s["status"] == "sold_out"),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(switched, "instance {} still open 1 s after the sell-out", app.base_url);
    }
    assert!(published.elapsed() <= Duration::from_secs(1));
    for (app, member) in [(&a, "m-1"), (&b, "m-2")] {
        let response = app.enter(&event_id, member).await;
        assert_eq!(response.status(), StatusCode::GONE);
        assert_eq!(json_of(response).await["error"], "sold_out");
    }
    let stock: i64 = redis::cmd("GET").arg(EventKeys::new(&event_id).stock).query_async(&mut conn).await.unwrap();
    assert_eq!(stock, 10, "the 410s came from the notification, not from the counter");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None);

    // A reopen (a unit returned) is accepted again.
    let change = serde_json::to_string(&StateChange { event_id: event_id.clone(), status: EventStatus::Open }).unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg(STATE_CHANNEL).arg(change).query_async(&mut conn).await.unwrap();
    let reopened = eventually(Duration::from_secs(2), || {
        let request = a.enter(&event_id, "m-1");
        async move { request.await.status() == StatusCode::ACCEPTED }
    })
    .await;
    assert!(reopened, "a reopened event accepts entries again");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_refused_with_json_errors() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let post = |body: String| {
        app.http
            .post(app.entries_url(&event_id))
            .bearer_auth(app.token("m-1"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };

    let malformed = post("{\"answers\": {".into()).await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(malformed).await["error"], "malformed_json");

    let wrong_shape = post(json!({ "answers": ["q1", "q2"] }).to_string()).await.unwrap();
    assert_eq!(wrong_shape.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(wrong_shape).await["error"], "invalid");

    let oversized = post(json!({ "answers": { "q1": "x".repeat(20_000), "q2": "b" } }).to_string()).await.unwrap();
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(oversized).await["error"], "payload_too_large");

    let missing = post(json!({ "answers": { "q1": "a" } }).to_string()).await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(missing).await;
    assert_eq!(body["error"], "invalid");
    assert_eq!(body["field"], "answers.q2");

    let too_long = post(json!({ "answers": { "q1": "a", "q2": "y".repeat(501) } }).to_string()).await.unwrap();
    assert_eq!(too_long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(too_long).await["field"], "answers.q2");

    let empty = post(json!({ "answers": { "q1": "", "q2": "b" } }).to_string()).await.unwrap();
    assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(empty).await["field"], "answers.q1");

    // None of these touched the member's first-entry mark.
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None);
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_stale_pending_mark_is_resumed_with_the_same_entry_id() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    // An earlier request admitted the member and died before the broker's ack.
    let stale_entry = Uuid::now_v7().to_string();
    let admitted_at = schemas::now_millis() - 60_000;
    let keys = EventKeys::new(&event_id);
    let _: () = redis::pipe()
        .cmd("HSET").arg(&keys.entered).arg("m-1").arg(format!("P|{stale_entry}|{admitted_at}")).ignore()
        .cmd("HSET").arg(&keys.entries).arg(&stale_entry).arg("m-1").ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let response = app.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(json_of(response).await["entry_id"], stale_entry.as_str());
    let (record, _) = consume_entry(&app.settings, &stale_entry).await;
    assert_eq!(record.accepted_at, admitted_at, "the entry keeps its original admit time");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, Some(format!("A|{stale_entry}")));
    let entries: i64 = redis::cmd("HLEN").arg(&keys.entries).query_async(&mut conn).await.unwrap();
    assert_eq!(entries, 1, "no second entry id");
}

#[tokio::test]
async fn kafka_down_is_503_and_the_retry_resumes_the_same_entry() {
    let settings = isolated_settings().await;
    let broken = {
        let mut broken = settings.clone();
        broken.kafka.brokers = "127.0.0.1:1".into();
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
    let mut resumed = None;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while resumed.is_none() && tokio::time::Instant::now() < deadline {
        let response = up.enter(&event_id, "m-1").await;
        let status = response.status();
        let body = json_of(response).await;
        assert_eq!(body["entry_id"], pending_entry.as_str(), "every answer names the one entry");
        match status {
            StatusCode::ACCEPTED => resumed = Some(body),
            StatusCode::CONFLICT => {
                assert_eq!(body["error"], "entry_in_progress");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(resumed.is_some(), "the retry was never resumed");
    let (record, _) = consume_entry(&up.settings, &pending_entry).await;
    assert_eq!(record.user_id, "m-1");
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, Some(format!("A|{pending_entry}")));
    up.stop().await;
}

#[tokio::test]
async fn entry_status_comes_from_the_entries_table() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let entry_id = json_of(app.enter(&event_id, "m-1").await).await["entry_id"].as_str().unwrap().to_string();

    // What the recorder writes once the stock group decided.
    let db = platform::db::pool(&app.settings.database).unwrap();
    let client = db.get().await.unwrap();
    client
        .execute(
            "INSERT INTO event_entries (entry_id, event_id, user_id, outcome, unit_no, status, decided_at)
             VALUES ($1, $2, 'm-1', 'WON', 3, 'won', now())",
            &[&Uuid::parse_str(&entry_id).unwrap(), &event_id],
        )
        .await
        .unwrap();
    let body = json_of(app.http.get(format!("{}/api/entries/{entry_id}", app.base_url)).send().await.unwrap()).await;
    assert_eq!(body["status"], "won");
    assert_eq!(body["outcome"], "WON");
    assert_eq!(body["unit_no"], 3);
    assert!(body["decided_at"].is_string());
    assert!(body.get("user_id").is_none(), "no member data on a public URL");

    let unknown = app.http.get(format!("{}/api/entries/{}", app.base_url, Uuid::now_v7())).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let invalid = app.http.get(format!("{}/api/entries/not-a-uuid", app.base_url)).send().await.unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn health_and_metrics_are_served_beside_the_api() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let health = app.http.get(format!("{}/healthz", app.base_url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(header(&health, "x-correlation-id").is_some(), "every answer carries a correlation id");
    let checks = json_of(health).await["checks"].clone();
    for dependency in ["redis", "kafka", "registry", "postgres"] {
        assert_eq!(checks[dependency], "ok", "{dependency}: {checks}");
    }
    let _ = app.enter("no-such-event", "m-1").await;
    let metrics = app.http.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("firstcome_ingest_requests_total"), "{metrics}");
    assert!(metrics.contains("firstcome_ingest_request_seconds"), "{metrics}");
}

/// The ids of Redis' pub/sub clients subscribed to the state channel.
async fn state_subscribers(conn: &mut platform::redis::Connection) -> Vec<String> {
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("TYPE").arg("pubsub").query_async(conn).await.unwrap();
    list.lines()
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn the_subscription_comes_back_after_its_connection_is_killed() {
    let mut settings = isolated_settings().await;
    settings.state_refresh_ms = 60_000;
    let mut conn = redis(&settings).await;
    // Other test processes may subscribe at the same time: retry until this
    // app's connection is the only new one, so only it gets killed.
    let (app, mine) = loop {
        let before = state_subscribers(&mut conn).await;
        let app = TestApp::spawn(settings.clone()).await;
        let new: Vec<String> =
            state_subscribers(&mut conn).await.into_iter().filter(|id| !before.contains(id)).collect();
        if let [only] = new.as_slice() {
            break (app, only.clone());
        }
        app.stop().await;
    };
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let url = format!("{}/api/events/{event_id}", app.base_url);
    assert_eq!(json_of(app.http.get(&url).send().await.unwrap()).await["status"], "open");

    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&mine).query_async(&mut conn).await.unwrap();
    assert_eq!(killed, 1);

    // Only a new subscription can deliver this (the periodic re-read is off).
    let change = serde_json::to_string(&StateChange { event_id: event_id.clone(), status: EventStatus::SoldOut }).unwrap();
    let switched = eventually(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let change = change.clone();
        let request = app.http.get(&url).send();
        async move {
            let _: i64 = redis::cmd("PUBLISH").arg(STATE_CHANNEL).arg(change).query_async(&mut conn).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            match request.await {
                Ok(response) => response.json::<serde_json::Value>().await.is_ok_and(|s| s["status"] == "sold_out"),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(switched, "the state subscription never came back");
    assert!(!state_subscribers(&mut conn).await.contains(&mine));
    app.stop().await;
}

#[tokio::test]
async fn the_first_admission_gives_entered_and_entries_the_events_expiry() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let keys = EventKeys::new(&event_id);
    let pttl = |key: String| {
        let mut conn = conn.clone();
        async move { redis::cmd("PTTL").arg(key).query_async::<i64>(&mut conn).await.unwrap() }
    };
    // `event create` writes neither: the first admission creates them.
    assert_eq!(pttl(keys.entered.clone()).await, -2);
    assert_eq!(pttl(keys.entries.clone()).await, -2);

    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED);

    let meta = pttl(keys.meta.clone()).await;
    assert!(meta > 3_600_000, "meta expires a day after the close: {meta}");
    for key in [keys.entered.clone(), keys.entries.clone()] {
        let ttl = pttl(key.clone()).await;
        assert!(ttl > 0 && (meta - ttl).abs() < 10_000, "{key}: PTTL {ttl}, meta's {meta}");
    }
}

/// An HS256 token for any subject, even one `mint` refuses to sign.
fn token_for_subject(app: &TestApp, sub: &str) -> String {
    use secrecy::ExposeSecret;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": sub, "iss": app.settings.auth.issuer, "iat": now, "exp": now + 600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(app.settings.auth.token_secret.expose_secret().as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn ids_a_consumer_would_refuse_never_reach_redis() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;

    // A correctly signed token whose subject breaks the shared id rules: 401,
    // even though the (equally broken) member is on the eligible list.
    let event_id = create_event(&mut conn, EventSpec::open(&["m|1", "m{1}", "m-1"])).await;
    for sub in ["m|1", "m{1}"] {
        let response = app
            .http
            .post(app.entries_url(&event_id))
            .bearer_auth(token_for_subject(&app, sub))
            .json(&valid_body())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "sub {sub}");
        assert_eq!(entered_mark(&mut conn, &event_id, sub).await, None);
    }
    // The hand-made token itself is fine: a valid subject is admitted.
    let response = app
        .http
        .post(app.entries_url(&event_id))
        .bearer_auth(token_for_subject(&app, "m-1"))
        .json(&valid_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // Events whose ids break the rules exist in Redis (a broken writer), yet
    // ingest answers 404 without looking.
    for bad in [format!("ev|{}", Uuid::new_v4()), format!("ev {}", Uuid::new_v4()), format!("ev{{{}}}", Uuid::new_v4())] {
        write_spec(&mut conn, &bad, EventSpec::open(&["m-1"])).await;
        let response = app.enter(&bad, "m-1").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST entries of {bad:?}");
        assert_eq!(json_of(response).await["error"], "not_found");
        assert_eq!(entered_mark(&mut conn, &bad, "m-1").await, None);
        let state = app
            .http
            .get(format!("{}/api/events/{}", app.base_url, bad.replace(' ', "%20")))
            .send()
            .await
            .unwrap();
        assert_eq!(state.status(), StatusCode::NOT_FOUND, "GET event {bad:?}");
    }
}

#[tokio::test]
async fn a_pending_entry_is_found_by_an_instance_that_never_saw_its_event() {
    let mut settings = isolated_settings().await;
    let a = TestApp::spawn(settings.clone()).await;
    settings.database.migrate_on_start = false;
    let b = TestApp::spawn(settings).await;
    let mut conn = redis(&a.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    insert_event_row(&a.settings, &event_id).await;

    let response = a.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let entry_id = json_of(response).await["entry_id"].as_str().unwrap().to_string();

    // No recorder runs here: the row never appears, only Redis knows the entry.
    let response = b.http.get(format!("{}/api/entries/{entry_id}", b.base_url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["status"], "pending");
    assert_eq!(body["event_id"], event_id.as_str());
    assert_eq!(body["entry_id"], entry_id.as_str());

    let unknown = b.http.get(format!("{}/api/entries/{}", b.base_url, Uuid::now_v7())).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_full_instance_sheds_entries_at_once_with_503_overloaded() {
    let mut settings = isolated_settings().await;
    settings.limits.max_in_flight = 1;
    // Kafka unreachable: an admitted request waits out the publish deadline.
    settings.kafka.brokers = "127.0.0.1:1".into();
    settings.kafka.delivery_timeout_ms = 3_000;
    let app = TestApp::spawn(settings).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;

    let held = tokio::spawn(
        app.http.post(app.entries_url(&event_id)).bearer_auth(app.token("m-1")).json(&valid_body()).send(),
    );
    // Its pending mark is set: the request now waits on Kafka, holding the slot.
    let in_flight = eventually(DEADLINE, || {
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
