//! The ops endpoints, on the internal ops listener only.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn health_and_metrics_are_served_on_the_ops_port_only() {
    let app = TestApp::spawn(isolated_settings().await).await;
    assert_ne!(app.ops_url, app.base_url);
    let health = app.http.get(format!("{}/healthz", app.ops_url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let checks = json_of(health).await["checks"].clone();
    for dependency in ["redis", "kafka", "registry", "postgres"] {
        assert_eq!(checks[dependency], "ok", "{dependency}: {checks}");
    }
    let _ = app.enter("no-such-event", "m-1").await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("firstcome_ingest_requests_total"), "{metrics}");
    assert!(metrics.contains("firstcome_ingest_request_seconds"), "{metrics}");

    // The public API port serves neither.
    for path in ["/healthz", "/metrics"] {
        let response = app.http.get(format!("{}{path}", app.base_url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path} on the API port");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_failing_dependency_is_named_without_its_address() {
    let mut settings = isolated_settings().await;
    let port = testkit::unused_port();
    settings.registry.url = format!("http://registry-user:registry-pass@127.0.0.1:{port}/apis/ccompat/v7");
    let app = TestApp::spawn(settings).await;
    let health = app.http.get(format!("{}/healthz", app.ops_url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = health.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["registry"], "down", "{text}");
    assert_eq!(body["checks"]["redis"], "ok", "{text}");
    for leak in ["127.0.0.1", "http", &port.to_string(), "registry-pass", "ccompat"] {
        assert!(!text.contains(leak), "the answer names {leak:?}: {text}");
    }
    app.stop().await;
}
