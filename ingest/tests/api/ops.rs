//! The ops endpoints served beside the API.

use reqwest::StatusCode;

use crate::helpers::*;

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
