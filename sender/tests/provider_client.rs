//! The provider client toward hostile or misconfigured endpoints: it sends
//! the API key the simulator checks, follows no redirect, and refuses an
//! answer over `provider.max_response_bytes`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use provider_sim::{Application, Faults, Settings as SimSettings};
use secrecy::SecretString;
use sender::provider::{GiftOrder, IssueError, ProviderClient};
use sender::settings::ProviderSettings;
use tokio_util::sync::CancellationToken;

fn order(key: &str) -> GiftOrder {
    GiftOrder {
        idempotency_key: key.into(),
        phone: "010-5555-0101".into(),
        product: "coffee-10000".into(),
        amount: 10_000,
    }
}

fn settings(base_url: String) -> ProviderSettings {
    ProviderSettings { base_url, timeout_ms: 2_000, ..Default::default() }
}

async fn simulator(shutdown: &CancellationToken) -> String {
    let sim = Application::build(SimSettings::ephemeral(Faults::default(), 1)).await.expect("simulator");
    let url = sim.base_url();
    tokio::spawn(sim.run_until_stopped(shutdown.clone()));
    url
}

/// A stand-in endpoint serving `router` on a free port.
async fn endpoint(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn the_api_key_is_sent_and_a_wrong_one_is_a_configuration_error() {
    let shutdown = CancellationToken::new();
    let url = simulator(&shutdown).await;
    let right = ProviderClient::new(&settings(url.clone())).unwrap();
    let gift = right.issue(&order("entry-key-1"), None).await.expect("issued with the local key");
    assert_eq!(gift.idempotency_key, "entry-key-1");
    assert!(right.lookup("entry-key-1", None).await.expect("looked up").is_some());

    let wrong =
        ProviderClient::new(&ProviderSettings { api_key: SecretString::from("not-the-key"), ..settings(url) }).unwrap();
    match wrong.issue(&order("entry-key-2"), None).await {
        Err(IssueError::ClientError { status: 401, reason }) => assert_eq!(reason, "unauthorized"),
        other => panic!("expected 401 unauthorized, got {other:?}"),
    }
    assert!(wrong.lookup("entry-key-1", None).await.is_err());
    shutdown.cancel();
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let shutdown = CancellationToken::new();
    let sim = simulator(&shutdown).await;
    let target = format!("{sim}/v1/gifts");
    let redirecting = endpoint(Router::new().route(
        "/v1/gifts",
        post(move || {
            let target = target.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, target)]).into_response() }
        }),
    ))
    .await;
    let client = ProviderClient::new(&settings(redirecting)).unwrap();
    let answer = client.issue(&order("entry-redirect"), None).await;
    assert!(answer.is_err(), "a 307 is not a gift: {answer:?}");
    // Nothing reached the place the redirect pointed at.
    let direct = ProviderClient::new(&settings(sim)).unwrap();
    assert_eq!(direct.lookup("entry-redirect", None).await.expect("lookup"), None);
    shutdown.cancel();
}

#[tokio::test]
async fn an_answer_over_the_size_cap_is_not_read() {
    let huge = || async {
        let body = format!(
            r#"{{"gift_id":"g-1","idempotency_key":"entry-big","status":"issued","padding":"{}"}}"#,
            "x".repeat(1 << 20)
        );
        (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let url = endpoint(Router::new().route("/v1/gifts", post(huge)).route("/v1/gifts/{key}", get(huge))).await;
    let client =
        ProviderClient::new(&ProviderSettings { max_response_bytes: 64 * 1024, ..settings(url.clone()) }).unwrap();
    match client.issue(&order("entry-big"), None).await {
        Err(IssueError::Unusable(reason)) => assert!(reason.contains("over 65536 bytes"), "{reason}"),
        other => panic!("expected an unreadable (too large) answer, got {other:?}"),
    }
    assert!(client.lookup("entry-big", None).await.is_err());
    // The same answer within a larger cap is a gift.
    let roomy = ProviderClient::new(&ProviderSettings { max_response_bytes: 2 << 20, ..settings(url) }).unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), roomy.issue(&order("entry-big"), None))
        .await
        .unwrap()
        .is_ok());
}
