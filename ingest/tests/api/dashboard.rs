//! The survey page and the operations dashboard: the page is served in the
//! browser's language; the dashboard's API takes only the operator token (a
//! member token is refused), shows the event's figures as the stores hold
//! them, streams them as server-sent events, and leaves closing the event to
//! the operator's own credentials (`firstcome event close`).

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const OPERATOR: &str = ingest::settings::DEV_OPERATOR_TOKEN;

#[tokio::test]
async fn the_page_is_served_in_the_browsers_language_with_its_assets() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let page =
        app.http.get(format!("{}/", app.base_url)).header("Accept-Language", "ko-KR,ko;q=0.9").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(header(&page, "content-security-policy").is_some_and(|csp| csp.contains("script-src 'self'")));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<html lang="ko">"#), "{html}");
    let english = app.http.get(format!("{}/", app.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(english.contains(r#"<html lang="en">"#));
    for asset in ["app.js", "app.css"] {
        let response = app.http.get(format!("{}/static/{asset}", app.base_url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    let missing = app.http.get(format!("{}/static/../Cargo.toml", app.base_url)).send().await.unwrap();
    assert_ne!(missing.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_takes_only_the_operator_token() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let url = format!("{}/ops/api/events/{event_id}", app.ops_url);

    let anonymous = app.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let member = app.http.get(&url).bearer_auth(app.token("m-1")).send().await.unwrap();
    assert_eq!(member.status(), StatusCode::UNAUTHORIZED, "a member token is not an operator's");
    let wrong = app.http.get(&url).bearer_auth("firstcome-dev-operatos").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let page = app.http.get(format!("{}/dashboard", app.ops_url)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "the page itself holds no figures");
    // Not on the public API listener.
    let public =
        app.http.get(format!("{}/ops/api/events/{event_id}", app.base_url)).bearer_auth(OPERATOR).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn the_figures_agree_with_the_stores_stream_live_and_closing_is_the_operators() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    insert_event_row(&app.settings, &event_id).await;
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::CONFLICT);
    assert_eq!(app.enter(&event_id, "stranger").await.status(), StatusCode::FORBIDDEN);

    let snapshot: Value = app
        .http
        .get(format!("{}/ops/api/events/{event_id}", app.ops_url))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot["status"], "open");
    assert_eq!(snapshot["for_sale"], 10);
    assert_eq!(snapshot["stock_remaining"], 10, "no stock stage runs here: nothing decided");
    assert_eq!(snapshot["answers"]["accepted"], 1, "{snapshot}");
    assert_eq!(snapshot["answers"]["already_entered"], 1);
    assert_eq!(snapshot["answers"]["not_eligible"], 1);
    assert_eq!(snapshot["dispatch"]["sent"], 0);
    assert_eq!(snapshot["line"]["waiting"], 0);
    let lag = snapshot["lag"].as_array().expect("lag per partition");
    let partitions = testkit::PARTITIONS as usize;
    // stock reads 2 topics, recording 3, dispatch 1: one row per partition each.
    assert_eq!(lag.len(), 6 * partitions, "{lag:?}");
    assert!(
        lag.iter().any(|l| l["group"] == "stock" && l["lag"].as_i64() == Some(1)),
        "the accepted entry waits for the stock group: {lag:?}"
    );
    assert_eq!(snapshot["dead_letters"].as_object().unwrap().len(), 4);
    assert_eq!(snapshot["errors"].as_array().unwrap().len(), 0, "{snapshot}");

    // The stream sends the same figures as server-sent events.
    let mut stream = app
        .http
        .get(format!("{}/ops/api/events/{event_id}/stream", app.ops_url))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(header(&stream, "content-type").is_some_and(|t| t.starts_with("text/event-stream")));
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk =
            tokio::time::timeout(DEADLINE, stream.chunk()).await.expect("a snapshot in time").unwrap().expect("more");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: snapshot\n"), "{text}");
    let data: Value = serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["event_id"], event_id.as_str());
    drop(stream);

    // Closing is the operator's action (`firstcome event close`, its own
    // credentials): ingest's identity may not write an event's status, so
    // the button answers with the command and nothing changes.
    let refused = app
        .http
        .post(format!("{}/ops/api/events/{event_id}/close", app.ops_url))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "operator_action");
    assert_eq!(body["command"], format!("firstcome event close {event_id}"));
    let meta: Option<String> = redis::cmd("HGET")
        .arg(platform::event_keys::EventKeys::new(&event_id).meta)
        .arg("status")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(meta.as_deref(), Some("closed"));
    app.stop().await;
}
