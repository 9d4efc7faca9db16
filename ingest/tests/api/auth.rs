//! Who may enter: tokens (missing, forged, expired) and subjects that break
//! the shared id rules are refused before Redis is touched.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

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

/// An HS256 token for any subject, even one `mint` refuses to sign.
fn token_for_subject(app: &TestApp, sub: &str) -> String {
    use secrecy::ExposeSecret;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": sub, "iss": app.settings.auth.issuer, "aud": app.settings.auth.audience, "iat": now, "exp": now + 600 });
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
    for bad in [format!("ev|{}", Uuid::new_v4()), format!("ev {}", Uuid::new_v4()), format!("ev{{{}}}", Uuid::new_v4())]
    {
        write_spec(&mut conn, &bad, EventSpec::open(&["m-1"])).await;
        let response = app.enter(&bad, "m-1").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST entries of {bad:?}");
        assert_eq!(json_of(response).await["error"], "not_found");
        assert_eq!(entered_mark(&mut conn, &bad, "m-1").await, None);
        let state =
            app.http.get(format!("{}/api/events/{}", app.base_url, bad.replace(' ', "%20"))).send().await.unwrap();
        assert_eq!(state.status(), StatusCode::NOT_FOUND, "GET event {bad:?}");
    }
}

#[tokio::test]
async fn tokens_for_another_audience_or_living_too_long_are_refused_401() {
    let app = TestApp::spawn(isolated_settings().await).await;
    let mut conn = redis(&app.settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-1"])).await;
    let secret = &app.settings.auth.token_secret;
    let issuer = &app.settings.auth.issuer;
    let hour = std::time::Duration::from_secs(3_600);
    let other_audience = ingest::auth::mint_for(secret, issuer, "shop-web", "m-1", hour).unwrap();
    let a_day = ingest::auth::mint_for(secret, issuer, &app.settings.auth.audience, "m-1", hour * 24).unwrap();
    for (what, token) in [("another audience", other_audience), ("a day long", a_day)] {
        let response =
            app.http.post(app.entries_url(&event_id)).bearer_auth(token).json(&valid_body()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    }
    assert_eq!(entered_mark(&mut conn, &event_id, "m-1").await, None);
    assert_eq!(app.enter(&event_id, "m-1").await.status(), StatusCode::ACCEPTED, "an hour-long token for ingest");
    app.stop().await;
}
