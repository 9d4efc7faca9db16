//! The event's state as ingest sees it: unknown, not open yet, closed, sold
//! out (by the counter or by a published change), and the state subscription
//! surviving a killed connection.

use std::time::Duration;

use platform::event_keys::{EventKeys, EventStatus, StateChange, STATE_CHANNEL};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

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
async fn the_public_state_names_the_event_its_gift_and_the_units_left() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    // What `firstcome event create` writes beside the meta.
    let keys = EventKeys::new(&event_id);
    let _: () = redis::cmd("HSET")
        .arg(&keys.meta)
        .arg("name")
        .arg("Spring survey")
        .arg("gift")
        .arg("₩10,000 coffee gifticon")
        .query_async(&mut conn)
        .await
        .unwrap();
    let for_sale: i64 = redis::cmd("GET").arg(&keys.stock).query_async(&mut conn).await.unwrap();

    let state = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
    assert_eq!(
        (state["name"].as_str(), state["gift"].as_str()),
        (Some("Spring survey"), Some("₩10,000 coffee gifticon"))
    );
    assert_eq!((state["units_left"].as_i64(), state["for_sale"].as_i64()), (Some(for_sale), Some(for_sale)));
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
async fn the_admit_script_refuses_once_the_line_is_full() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    let keys = EventKeys::new(&event_id);
    // The cache has the event as open...
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED);
    // ...then other instances give the last places in line (10 units and a
    // line of 100), and nobody told this one yet.
    let _: () = redis::cmd("SET").arg(&keys.ticket).arg(110).query_async(&mut conn).await.unwrap();

    let response = app.enter(&event_id, "m-2").await;
    assert_eq!(response.status(), StatusCode::GONE);
    assert_eq!(json_of(response).await["error"], "sold_out");
    let state = json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
    assert_eq!(state["status"], "sold_out", "the local cache learnt it");
}

/// What a rush costs is bounded by the stock, not by the crowd: exactly
/// for_sale + the line's depth are admitted, each with its own place, without
/// the stock stage (none runs here); the last place announces the sell-out.
#[tokio::test]
async fn admission_stops_at_the_units_plus_the_line_and_every_entry_has_its_place() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let members: Vec<String> = (0..12).map(|m| format!("m-{m}")).collect();
    let eligible: Vec<&str> = members.iter().map(String::as_str).collect();
    let event_id = create_event(&mut conn, EventSpec { stock: 5, ..EventSpec::open(&eligible) }).await;
    let keys = EventKeys::new(&event_id);
    let _: () = redis::cmd("HSET").arg(&keys.meta).arg("line_depth").arg(3).query_async(&mut conn).await.unwrap();

    let mut tickets = Vec::new();
    let mut refused = 0;
    for member in &members {
        let response = app.enter(&event_id, member).await;
        match response.status() {
            StatusCode::ACCEPTED => {
                let body = json_of(response).await;
                assert_eq!(body["for_sale"], 5);
                tickets.push(body["ticket"].as_i64().expect("a ticket in the 202"));
            }
            StatusCode::GONE => refused += 1,
            other => panic!("{member}: {other}"),
        }
    }
    assert_eq!(tickets, (1..=8).collect::<Vec<i64>>(), "5 units + a line of 3, in order");
    assert_eq!(refused, 4);
    // A member who entered keeps their place: 409 with the same entry, no new ticket.
    assert_eq!(app.enter(&event_id, "m-0").await.status(), StatusCode::CONFLICT);
    let issued: i64 = redis::cmd("GET").arg(&keys.ticket).query_async(&mut conn).await.unwrap();
    assert_eq!(issued, 8);
}

#[tokio::test]
async fn a_published_sold_out_reaches_every_instance_within_a_second() {
    let mut settings = isolated_settings().await;
    // No periodic re-read during the test: only pub/sub can deliver the change.
    settings.state_refresh_ms = 60_000;
    let a = TestApp::spawn(settings.clone()).await;
    let b = TestApp::spawn(settings).await;
    let mut conn = redis(&a.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    for app in [&a, &b] {
        let state =
            json_of(app.http.get(format!("{}/api/events/{event_id}", app.base_url)).send().await.unwrap()).await;
        assert_eq!(state["status"], "open");
    }

    let change =
        serde_json::to_string(&StateChange { event_id: event_id.clone(), status: EventStatus::SoldOut }).unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg(STATE_CHANNEL).arg(change).query_async(&mut conn).await.unwrap();
    let published = tokio::time::Instant::now();

    for app in [&a, &b] {
        let url = format!("{}/api/events/{event_id}", app.base_url);
        // Polled every 20 ms: the answer must come within the second, not just after it.
        let within = Duration::from_secs(1).saturating_sub(published.elapsed());
        let switched = testkit::poll_until(within, Duration::from_millis(20), || {
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
    let reopened = testkit::wait_until(Duration::from_secs(2), || {
        let request = a.enter(&event_id, "m-1");
        async move { request.await.status() == StatusCode::ACCEPTED }
    })
    .await;
    assert!(reopened, "a reopened event accepts entries again");
    a.stop().await;
    b.stop().await;
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
    let change =
        serde_json::to_string(&StateChange { event_id: event_id.clone(), status: EventStatus::SoldOut }).unwrap();
    let switched = testkit::wait_until(Duration::from_secs(10), || {
        let mut conn = conn.clone();
        let change = change.clone();
        let request = app.http.get(&url).send();
        async move {
            let _: i64 = redis::cmd("PUBLISH").arg(STATE_CHANNEL).arg(change).query_async(&mut conn).await.unwrap();
            // Not yet switched: the next check (100 ms on) publishes again and asks again.
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

/// A Redis connection behind a slow network: every call waits `delay`
/// before it goes to the real server (the state cache takes any connection).
#[derive(Clone)]
struct SlowRedis {
    inner: platform::redis::Connection,
    delay: Duration,
}

impl redis::aio::ConnectionLike for SlowRedis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.req_packed_commands(pipeline, offset, count).await
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[tokio::test]
async fn a_flood_of_random_event_ids_cannot_stall_loading_a_real_event() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let cache = ingest::state::EventCache::new(Duration::from_secs(60));
    let slow = SlowRedis { inner: conn.clone(), delay: Duration::from_millis(100) };

    // 300 first-sight loads of ids no event has, all at once, then the real one.
    let flood: Vec<_> = (0..300)
        .map(|_| {
            let cache = cache.clone();
            let mut slow = slow.clone();
            tokio::spawn(async move { cache.get_or_load(&mut slow, &format!("ev-{}", Uuid::new_v4())).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let loaded = cache.get_or_load(&mut slow.clone(), &event_id).await.expect("loads");
    let waited = started.elapsed();
    assert_eq!(loaded.expect("the real event is known").event_id, event_id);
    // One slow round trip, not 300 of them queued one after another.
    assert!(waited < Duration::from_secs(2), "the real event waited {waited:?} behind the flood");

    for load in flood {
        assert!(load.await.expect("joined").expect("redis").is_none());
    }
    let (unknown, loading) = cache.memory();
    assert_eq!(unknown, 300, "every unknown id remembered");
    assert_eq!(loading, 0, "no load gate left behind");
}
