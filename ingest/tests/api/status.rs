//! An entry's status: from the entries table once recorded, from Redis
//! while pending (on any instance); only for the member whose entry it is.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn entry_status_comes_from_the_entries_table() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let entry_id = json_of(app.enter(&event_id, "m-1").await).await["entry_id"].as_str().unwrap().to_string();

    // What the recorder writes once the stock group decided.
    let db = platform::db::pool(
        &app.settings
            .database
            .for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN),
    )
    .unwrap();
    let client = db.get().await.unwrap();
    client
        .execute(
            "INSERT INTO event_entries (entry_id, event_id, user_id, outcome, unit_no, status, decided_at)
             VALUES ($1, $2, 'm-1', 'WON', 3, 'won', now())",
            &[&Uuid::parse_str(&entry_id).unwrap(), &event_id],
        )
        .await
        .unwrap();
    let body = json_of(app.status_of(&entry_id, "m-1").await).await;
    assert_eq!(body["status"], "won");
    assert_eq!(body["outcome"], "WON");
    assert_eq!(body["unit_no"], 3);
    assert!(body["decided_at"].is_string());
    assert!(body.get("user_id").is_none(), "no member data on a public URL");

    let unknown = app.status_of(&Uuid::now_v7().to_string(), "m-1").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let invalid = app.status_of("not-a-uuid", "m-1").await;
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_pending_entry_is_found_by_an_instance_that_never_saw_its_event() {
    let settings = isolated_settings().await;
    let a = TestApp::spawn(settings.clone()).await;
    let b = TestApp::spawn(settings).await;
    let mut conn = redis(&a.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    insert_event_row(&a.settings, &event_id).await;

    let response = a.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let entry_id = json_of(response).await["entry_id"].as_str().unwrap().to_string();

    // No recorder runs here: the row never appears, only Redis knows the entry.
    let response = b.status_of(&entry_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["status"], "pending");
    assert_eq!(body["event_id"], event_id.as_str());
    assert_eq!(body["entry_id"], entry_id.as_str());

    let unknown = b.status_of(&Uuid::now_v7().to_string(), "m-1").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_entry_is_shown_only_to_its_member() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1", "m-2"])).await;
    let response = app.enter(&event_id, "m-1").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let entry_id = json_of(response).await["entry_id"].as_str().unwrap().to_string();
    let url = format!("{}/api/entries/{entry_id}", app.base_url);

    // Pending (Redis only): no token is 401, a forged one 401, another member 404.
    let anonymous = app.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let forged = app.http.get(&url).bearer_auth(forged_token("m-1")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let other = app.status_of(&entry_id, "m-2").await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(other).await["error"], "not_found");
    assert_eq!(app.status_of(&entry_id, "m-1").await.status(), StatusCode::OK);

    // Recorded (the entries table): the same.
    let db = platform::db::pool(
        &app.settings
            .database
            .for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN),
    )
    .unwrap();
    db.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO event_entries (entry_id, event_id, user_id, outcome, unit_no, status, decided_at)
             VALUES ($1, $2, 'm-1', 'WON', 1, 'won', now())",
            &[&Uuid::parse_str(&entry_id).unwrap(), &event_id],
        )
        .await
        .unwrap();
    assert_eq!(app.status_of(&entry_id, "m-2").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(app.status_of(&entry_id, "m-1").await).await["status"], "won");
    app.stop().await;
}
