//! Admission of an entry: accepted once per member (202, in Kafka), the
//! first entry id on every later try, valid bodies only, a pending mark
//! resumed, the keys' expiry.

use platform::event_keys::EventKeys;
use platform::trace_context::TraceParent;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

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
    assert_eq!((body["ticket"].as_i64(), body["for_sale"].as_i64()), (Some(1), Some(10)), "the member's place in line");
    assert!(body.get("outcome").is_none(), "no outcome before the stock stage decided");
    assert_eq!(location.as_deref(), Some(format!("/api/entries/{entry_id}").as_str()));

    let (record, context) = consume_entry(&app.settings, &entry_id).await;
    assert_eq!(record.event_id, event_id);
    assert_eq!(record.user_id, "m-1");
    let answers: Vec<(&str, &str)> = record.answers.iter().map(|a| (a.question.as_str(), a.answer.as_str())).collect();
    assert_eq!(answers, [("q2", "b"), ("q1", "a"), ("extra", "c")], "answers in the order given");
    assert_eq!(record.client.channel, "web");
    assert_eq!(record.client.user_agent.as_deref(), Some("ingest-test/1"));
    assert!(record.submitted_at >= before && record.submitted_at <= schemas::now_millis());
    assert!(record.accepted_at >= before - 1_000, "accepted_at is the admit time");
    assert_eq!(record.ticket, 1, "the record carries the place ingest gave");
    assert!(Uuid::parse_str(&context.message_id).is_ok(), "message-id header is a UUID");
    assert_eq!(context.correlation_id, "corr-accepted-1");
    let record_trace = TraceParent::parse(&context.traceparent).expect("traceparent header");
    assert_eq!(record_trace.trace_id, trace.trace_id, "the record continues the request's trace");

    // Acknowledged: the mark is final and the entry is known as pending.
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, Some(format!("A|{entry_id}")));
    let status = app.status_of(&entry_id, "m-1").await;
    assert_eq!(status.status(), StatusCode::OK);
    let status = json_of(status).await;
    assert_eq!(status["status"], "pending");
    assert_eq!(status["event_id"], event_id.as_str());
    assert_eq!(status["ticket"], 1, "its place, while it waits");
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
        .cmd("HSET")
        .arg(&keys.entered)
        .arg("m-1")
        .arg(format!("P|{stale_entry}|{admitted_at}"))
        .ignore()
        .cmd("HSET")
        .arg(&keys.entries)
        .arg(&stale_entry)
        .arg("m-1")
        .ignore()
        .cmd("HSET")
        .arg(&keys.tickets)
        .arg(&stale_entry)
        .arg(7)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let response = app.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = json_of(response).await;
    assert_eq!(body["entry_id"], stale_entry.as_str());
    assert_eq!(body["ticket"], 7, "a resumed entry keeps its place in line");
    let (record, _) = consume_entry(&app.settings, &stale_entry).await;
    assert_eq!(record.accepted_at, admitted_at, "the entry keeps its original admit time");
    assert_eq!(record.ticket, 7);
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, Some(format!("A|{stale_entry}")));
    let entries: i64 = redis::cmd("HLEN").arg(&keys.entries).query_async(&mut conn).await.unwrap();
    assert_eq!(entries, 1, "no second entry id");
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
