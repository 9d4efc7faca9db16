//! Cheap refusals stay cheap: a request head over 16 KiB is 431 before any
//! handler; a client address that keeps sending forged tokens or random
//! event ids spends its budget of costly refusals and is then answered 429
//! before any token check or Redis lookup, while other addresses are served.

use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::*;

/// Settings where 127.0.0.1 is a trusted proxy, so each test request names
/// its client in `X-Forwarded-For`, with a budget of `burst` costly refusals.
async fn behind_a_proxy(burst: u32) -> ingest::Settings {
    let mut settings = isolated_settings().await;
    settings.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    settings.limits.address_refusal_burst = burst;
    settings.limits.address_refusals_per_sec = 1;
    settings
}

#[tokio::test]
async fn a_request_head_over_16_kib_is_431() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let url = format!("{}/api/events/ev-none", app.base_url);
    let padded = app.http.get(&url).header("x-padding", "p".repeat(20 * 1024)).send().await.unwrap();
    assert_eq!(padded.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // A large but acceptable head is served.
    let fitting = app.http.get(&url).header("x-padding", "p".repeat(12 * 1024)).send().await.unwrap();
    assert_eq!(fitting.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_authorization_header_is_401() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let padded = format!("{}.{}", app.token("m-1"), "a".repeat(5 * 1024));
    let response =
        app.http.post(app.entries_url("ev-none")).bearer_auth(padded).json(&valid_body()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn forged_tokens_from_one_address_are_cut_off_before_any_check() {
    let app = TestApp::spawn(behind_a_proxy(5).await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    let attacker = "203.0.113.7";
    let enter = |token: String, from: &'static str| {
        app.http
            .post(app.entries_url(&event_id))
            .header("x-forwarded-for", from)
            .bearer_auth(token)
            .json(&valid_body())
            .send()
    };

    // The budget (5) and the one refusal that overspends it are checked: 401.
    for i in 0..6 {
        let response = enter(forged_token("m-1"), attacker).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "forged token {i}");
    }
    // Then the address is refused before its token is looked at, even a valid one.
    for token in [forged_token("m-1"), app.token("m-1")] {
        let response = enter(token, attacker).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&response, "retry-after"), Some("1"));
        assert_eq!(json_of(response).await["error"], "too_many_refusals");
    }
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None, "nothing admitted");
    // Another address is served.
    assert_eq!(enter(app.token("m-2"), "203.0.113.8").await.unwrap().status(), StatusCode::ACCEPTED);
    // A forged X-Forwarded-For hop left of the proxy's does not move the attacker.
    let spoofed = app
        .http
        .post(app.entries_url(&event_id))
        .header("x-forwarded-for", format!("198.51.100.1, {attacker}"))
        .bearer_auth(app.token("m-1"))
        .json(&valid_body())
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);

    // Once a unit has refilled, the address is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(enter(app.token("m-1"), attacker).await.unwrap().status(), StatusCode::ACCEPTED);
    let metrics = app.metrics().await;
    assert!(metrics.lines().any(|l| l.starts_with("firstcome_ingest_address_refused_total")), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn random_event_ids_from_one_address_stop_reaching_redis() {
    let app = TestApp::spawn(behind_a_proxy(5).await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let show = |id: String, from: &'static str| {
        app.http.get(format!("{}/api/events/{id}", app.base_url)).header("x-forwarded-for", from).send()
    };
    let scanner = "203.0.113.9";
    let mut statuses = Vec::new();
    for _ in 0..20 {
        // Every id new: each would be a Redis read (the cache has never seen it).
        statuses.push(show(format!("ev-{}", Uuid::new_v4()), scanner).await.unwrap().status());
    }
    let looked_up = statuses.iter().filter(|s| **s == StatusCode::NOT_FOUND).count();
    assert_eq!(looked_up, 6, "the budget and the one over it are looked up: {statuses:?}");
    assert!(statuses[6..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // A known event from another address is served from the cache.
    assert_eq!(show(event_id.clone(), "203.0.113.10").await.unwrap().status(), StatusCode::OK);
    app.stop().await;
}
