//! The waiting room (`ingest::waiting_room`, `platform/lua/waiting_room.lua`):
//! arrivals before the opening join a pre-queue (425 with their place) that
//! becomes the head of the line at the opening, in arrival order (fifo) or in
//! a draw (shuffle); past the rate a member gets 429 with Retry-After and a
//! position that only moves forward, keeps their ticket on every retry and
//! enters when the gate reaches it. Orders and positions are asserted, never
//! timings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ingest::waiting_room::{PreQueueOrder, RoomKeys, WaitingRoomSettings};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

async fn room_settings(order: PreQueueOrder, rate_per_sec: u32, burst: u32) -> ingest::Settings {
    let mut settings = isolated_settings().await;
    settings.waiting_room = WaitingRoomSettings { enabled: true, rate_per_sec, burst, pre_queue: order };
    settings
}

/// An event opening `in_ms` from now, for `members`.
async fn opening_event(conn: &mut platform::redis::Connection, in_ms: i64, members: &[String]) -> String {
    let now = schemas::now_millis();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    create_event(conn, EventSpec { open_at_ms: now + in_ms, close_at_ms: now + 3_600_000, ..EventSpec::open(&refs) })
        .await
}

fn crowd(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("m-{i}")).collect()
}

/// The tickets of the line: member → ticket.
async fn tickets(conn: &mut platform::redis::Connection, event_id: &str) -> HashMap<String, i64> {
    let pairs: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(RoomKeys::new(event_id).line)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .expect("ZRANGE line");
    pairs.into_iter().collect()
}

async fn room_field(conn: &mut platform::redis::Connection, event_id: &str, field: &str) -> Option<String> {
    redis::cmd("HGET").arg(RoomKeys::new(event_id).room).arg(field).query_async(conn).await.expect("HGET room")
}

/// Every member joins the pre-queue before the opening, in order; each is
/// told its arrival place and the pre-queue's length.
async fn join_pre_queue(app: &TestApp, event_id: &str, members: &[String]) {
    for (i, member) in members.iter().enumerate() {
        let response = app.enter(event_id, member).await;
        assert_eq!(response.status(), StatusCode::TOO_EARLY, "{member} before the opening");
        assert!(header(&response, "retry-after").is_some(), "Retry-After until the opening");
        let body = json_of(response).await;
        assert_eq!(body["error"], "too_early");
        assert_eq!(body["line"]["position"], (i + 1) as i64, "{member}: arrival place: {body}");
        assert_eq!(body["line"]["waiting"], (i + 1) as i64);
    }
}

/// Waits for the opening: `member`'s request is no longer 425. Returns that answer.
async fn first_after_opening(app: &TestApp, event_id: &str, member: &str) -> (StatusCode, Value) {
    let answer = Mutex::new(None);
    let opened = testkit::wait_until(DEADLINE, || async {
        let response = app.enter(event_id, member).await;
        let status = response.status();
        if status == StatusCode::TOO_EARLY {
            return false;
        }
        *answer.lock().unwrap() = Some((status, json_of(response).await));
        true
    })
    .await;
    assert!(opened, "the event opened");
    answer.into_inner().unwrap().expect("an answer after the opening")
}

#[tokio::test]
async fn fifo_the_pre_queue_keeps_the_arrival_order_at_the_opening() {
    // One member through per second, one at once: the line is long enough to see.
    let app = TestApp::spawn(room_settings(PreQueueOrder::Fifo, 1, 1).await).await;
    let mut conn = redis(&app.settings).await;
    let members = crowd(5);
    let event_id = opening_event(&mut conn, 4_000, &members).await;
    join_pre_queue(&app, &event_id, &members).await;
    let pre_queued: i64 =
        redis::cmd("ZCARD").arg(RoomKeys::new(&event_id).prequeue).query_async(&mut conn).await.unwrap();
    assert_eq!(pre_queued, 5);

    // The last to arrive asks first after the opening: it still gets the last ticket.
    let (status, body) = first_after_opening(&app, &event_id, "m-5").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "m-5 arrived last: {body}");
    assert_eq!(body["error"], "waiting");
    assert_eq!(room_field(&mut conn, &event_id, "pre_queued").await.as_deref(), Some("5"));
    assert_eq!(room_field(&mut conn, &event_id, "mode").await.as_deref(), Some("fifo"));

    // Tickets in arrival order (m-1 may already have passed: gone from the line).
    let line = tickets(&mut conn, &event_id).await;
    for (i, member) in members.iter().enumerate() {
        if let Some(ticket) = line.get(member) {
            assert_eq!(*ticket, (i + 1) as i64, "{member}'s ticket is its arrival place");
        }
    }
    let served: i64 = room_field(&mut conn, &event_id, "served").await.unwrap().parse().unwrap();
    assert_eq!(body["line"]["position"], 5 - served, "position = ticket − gate: {body}");
    assert_eq!(body["line"]["waiting"], 5 - served);

    // Everyone enters, in arrival order: the page's loop (retry after Retry-After).
    let order = enter_all(&app, &event_id, &members, &[]).await;
    assert_eq!(order, members, "fifo: entered in arrival order");
    app.stop().await;
}

#[tokio::test]
async fn shuffle_the_pre_queue_is_drawn_at_the_opening() {
    let app = TestApp::spawn(room_settings(PreQueueOrder::Shuffle, 1, 1).await).await;
    let mut conn = redis(&app.settings).await;
    let members = crowd(8);
    let event_id = opening_event(&mut conn, 4_000, &members).await;
    join_pre_queue(&app, &event_id, &members).await;
    // Before the opening: the seed's commitment is public, the seed is not.
    let before = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
    let commitment = before["shuffle"]["commitment"].as_str().expect("the commitment is public").to_string();
    assert_eq!(before["shuffle"]["seed"], Value::Null, "the seed is not revealed before the opening: {before}");
    assert_eq!(room_field(&mut conn, &event_id, "opened_at").await, None, "no draw before the opening");

    let (status, _) = first_after_opening(&app, &event_id, "m-1").await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::TOO_MANY_REQUESTS, "{status}");
    assert_eq!(room_field(&mut conn, &event_id, "mode").await.as_deref(), Some("shuffle"));
    let after = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
    let seed = after["shuffle"]["seed"].as_str().expect("the seed is revealed after the opening").to_string();
    assert_eq!(ingest::shuffle::commitment(&seed), commitment, "the revealed seed is the committed one");
    assert_eq!(room_field(&mut conn, &event_id, "seed").await.as_deref(), Some(seed.as_str()));

    // The draw replayed from the revealed seed and the members alone
    // (SHA-256(seed|member), docs/event-pages.md), as `firstcome verify shuffle` does.
    let expected = ingest::shuffle::order(&seed, members.iter().map(String::as_str));
    let record = ingest::waiting_room::shuffle_record(&mut conn, &event_id).await.expect("the room's record");
    let checks = ingest::shuffle::verify(&record);
    assert!(checks.iter().all(|c| c.holds), "the replay agrees with the room: {checks:?}");
    assert_eq!(record.draws.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), expected);
    let line = tickets(&mut conn, &event_id).await;
    for (i, member) in expected.iter().enumerate() {
        if let Some(ticket) = line.get(member) {
            assert_eq!(*ticket, (i + 1) as i64, "{member}'s ticket is its place in the draw");
        }
    }
    // m-1 entered at once only if the draw put it first (the gate's first ticket).
    let already = if status == StatusCode::ACCEPTED {
        assert_eq!(expected[0], "m-1", "only the first ticket passes at the opening");
        vec!["m-1".to_string()]
    } else {
        vec![]
    };
    let order = enter_all(&app, &event_id, &expected, &already).await;
    assert_eq!(order, expected, "shuffle: entered in the drawn order, not the arrival order");
    // Everyone passed: none before the gate could reach their drawn place.
    let record = ingest::waiting_room::shuffle_record(&mut conn, &event_id).await.expect("the room's record");
    assert_eq!(record.passed_at_ms.len(), members.len());
    let checks = ingest::shuffle::verify(&record);
    assert!(checks.iter().all(|c| c.holds), "the gate kept the drawn order: {checks:?}");
    app.stop().await;
}

#[tokio::test]
async fn past_the_rate_a_member_waits_in_line_keeps_its_ticket_and_enters_on_its_turn() {
    let app = TestApp::spawn(room_settings(PreQueueOrder::Shuffle, 1, 1).await).await;
    let mut conn = redis(&app.settings).await;
    let members = crowd(6);
    let mut eligible = members.clone();
    eligible.push("late".into());
    let refs: Vec<&str> = eligible.iter().map(String::as_str).collect();
    let event_id = create_event(&mut conn, EventSpec::open(&refs)).await;

    // Six at once against one per second: most of them wait.
    let answers = futures::future::join_all(members.iter().map(|m| app.enter(&event_id, m))).await;
    let mut waiting = Vec::new();
    for (member, response) in members.iter().zip(answers) {
        match response.status() {
            StatusCode::ACCEPTED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after: u64 = header(&response, "retry-after").expect("Retry-After").parse().unwrap();
                assert!(retry_after >= 1);
                let body = json_of(response).await;
                assert_eq!(body["error"], "waiting", "{body}");
                assert!(body["line"]["position"].as_i64().unwrap() >= 1);
                waiting.push(member.clone());
            }
            other => panic!("{member}: {other}"),
        }
    }
    assert!(waiting.len() >= 2, "at most a few of six pass at one per second: {waiting:?}");
    // The dashboard shows the line.
    let snapshot: Value = app
        .http
        .get(format!("{}/ops/api/events/{event_id}", app.ops_url))
        .bearer_auth(ingest::settings::DEV_OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(snapshot["line"]["waiting"].as_i64().unwrap() >= 1, "{snapshot}");
    assert!(snapshot["line"]["passed"].as_i64().unwrap() >= 1, "{snapshot}");
    assert_eq!(snapshot["answers"]["waiting"].as_u64().unwrap() as usize, waiting.len());

    // A retry keeps the ticket; the position only moves forward.
    let member = waiting.last().unwrap().clone();
    let ticket = tickets(&mut conn, &event_id).await[&member];
    let last_position = Mutex::new(i64::MAX);
    let entered = testkit::wait_until(DEADLINE, || async {
        let response = app.enter(&event_id, &member).await;
        match response.status() {
            StatusCode::ACCEPTED => true,
            StatusCode::TOO_MANY_REQUESTS => {
                let body = json_of(response).await;
                let position = body["line"]["position"].as_i64().unwrap();
                {
                    let mut last = last_position.lock().unwrap();
                    assert!(position <= *last, "the line moves forward: {position} after {}", *last);
                    *last = position;
                }
                if let Some(now) = tickets(&mut conn.clone(), &event_id).await.get(&member) {
                    assert_eq!(*now, ticket, "a retry keeps its ticket");
                }
                false
            }
            other => panic!("{member}: {other}"),
        }
    })
    .await;
    assert!(entered, "{member} entered on its turn");

    // Who entered is never queued again (409 at once), nor is a non-buyer (403).
    let again = app.enter(&event_id, &member).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let stranger = app.enter(&event_id, "not-a-buyer").await;
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

/// Every member retries, in `expected` order each round (as pages polling
/// after their Retry-After would), until accepted; returns the order in which
/// they were accepted. A gate that lets tickets through in order accepts them
/// in `expected` order; any other would not.
async fn enter_all(app: &TestApp, event_id: &str, expected: &[String], already: &[String]) -> Vec<String> {
    let accepted = Mutex::new(already.to_vec());
    let all = testkit::wait_until(Duration::from_secs(60), || async {
        for member in expected {
            if accepted.lock().unwrap().contains(member) {
                continue;
            }
            let response = app.enter(event_id, member).await;
            match response.status() {
                StatusCode::ACCEPTED => accepted.lock().unwrap().push(member.clone()),
                StatusCode::TOO_MANY_REQUESTS => {
                    let body = json_of(response).await;
                    assert_eq!(body["error"], "waiting", "{body}");
                }
                other => panic!("{member}: {other}"),
            }
        }
        accepted.lock().unwrap().len() == expected.len()
    })
    .await;
    let accepted = accepted.into_inner().unwrap();
    assert!(all, "every member entered: {accepted:?}");
    accepted
}

#[tokio::test]
async fn nobody_waits_in_line_to_be_told_the_event_sold_out() {
    let app = TestApp::spawn(room_settings(PreQueueOrder::Fifo, 1, 1).await).await;
    let mut conn = redis(&app.settings).await;
    let members = crowd(5);
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let event_id = create_event(&mut conn, EventSpec { stock: 0, ..EventSpec::open(&refs) }).await;
    let _ = app.enter(&event_id, "m-1").await; // learns the sell-out from the counter
    let answers = futures::future::join_all(members.iter().map(|m| app.enter(&event_id, m))).await;
    for (member, response) in members.iter().zip(answers) {
        assert_eq!(response.status(), StatusCode::GONE, "{member} is told at once, not queued");
    }
    let line = tickets(&mut conn, &event_id).await;
    assert!(line.len() <= 1, "at most the first asker took a ticket before the sell-out was known: {line:?}");
    app.stop().await;
}
