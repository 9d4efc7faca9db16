//! Ingest's internal ops listener: `GET /healthz` and `GET /metrics`, on
//! their own port (`ops.*`), never on the public API port.
//!
//! Every health check asks Kafka for metadata, takes a PostgreSQL connection
//! and calls the registry; uncached, a client could turn `/healthz` into a
//! load on every dependency. So the result is kept for [`HEALTH_TTL`], and
//! concurrent checks collapse into one: while one runs, the others wait for
//! its answer. The answer names each dependency `ok` or `down` and nothing
//! more (no internal URL, address or error text); the reason of a failure is
//! logged.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use moka::future::Cache;
use platform::ops::Health;
use serde_json::{json, Map, Value};

/// How long one health result is served.
pub const HEALTH_TTL: Duration = Duration::from_secs(1);

/// The dependency checks, cached and collapsed. Cheap to clone.
#[derive(Clone)]
pub struct CachedHealth {
    health: Health,
    /// One entry, kept for the TTL from when its check ended; concurrent
    /// misses wait on the one check under way (moka's `get_with`).
    last: Cache<(), (bool, Value)>,
}

impl CachedHealth {
    pub fn new(health: Health, ttl: Duration) -> Self {
        Self { health, last: Cache::builder().max_capacity(1).time_to_live(ttl).build() }
    }

    /// The current report: the cached one while fresh, else one new check
    /// that concurrent callers share.
    pub async fn report(&self) -> (bool, Value) {
        self.last
            .get_with((), async {
                let (healthy, detailed) = self.health.report().await;
                (healthy, public(&detailed))
            })
            .await
    }
}

/// `{"status", "checks": {name: "ok"|"down"}}`, and `"warnings": [name]`
/// when a check passed with one; the failures' and warnings' text is logged.
fn public(detailed: &Value) -> Value {
    let mut checks = Map::new();
    if let Some(detail) = detailed["checks"].as_object() {
        for (name, result) in detail {
            let ok = result == "ok";
            if !ok {
                let reason = platform::redact::urls(result.as_str().unwrap_or_default());
                tracing::warn!(dependency = %name, %reason, "health check failed");
            }
            checks.insert(name.clone(), Value::from(if ok { "ok" } else { "down" }));
        }
    }
    let mut body = json!({ "status": detailed["status"], "checks": checks });
    if let Some(warnings) = detailed["warnings"].as_object().filter(|w| !w.is_empty()) {
        for (name, warning) in warnings {
            let warning = platform::redact::urls(warning.as_str().unwrap_or_default());
            tracing::warn!(dependency = %name, %warning, "health check passed with a warning");
        }
        body["warnings"] = warnings.keys().cloned().collect::<Vec<_>>().into();
    }
    body
}

async fn healthz(State(health): State<CachedHealth>) -> Response {
    let (healthy, body) = health.report().await;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics_text() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], platform::metrics::render())
}

/// `/healthz` and `/metrics` for the ops listener.
pub fn router(health: CachedHealth) -> Router {
    // Install the recorder and describe every metric before the first is recorded.
    crate::metrics::describe();
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics_text)).with_state(health)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counting(calls: Arc<AtomicUsize>, answer: Result<(), String>) -> Health {
        Health::new().with(
            "dep",
            Arc::new(move || {
                let calls = calls.clone();
                let answer = answer.clone();
                Box::pin(async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    answer
                })
            }),
        )
    }

    #[tokio::test]
    async fn concurrent_checks_collapse_into_one_and_the_result_is_kept_a_while() {
        let calls = Arc::new(AtomicUsize::new(0));
        let health = CachedHealth::new(counting(calls.clone(), Ok(())), Duration::from_millis(300));
        let answers = futures::future::join_all((0..50).map(|_| health.report())).await;
        assert!(answers.iter().all(|(healthy, _)| *healthy));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "50 concurrent checks, one probe");
        let _ = health.report().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "served from the cache");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let _ = health.report().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "checked again once stale");
    }

    #[tokio::test]
    async fn a_failure_names_the_dependency_but_no_url() {
        let calls = Arc::new(AtomicUsize::new(0));
        let reason = "error sending request for url (http://user:pw@10.0.0.7:8081/apis/ccompat/v7/subjects)";
        let health = CachedHealth::new(counting(calls, Err(reason.into())), HEALTH_TTL);
        let (healthy, body) = health.report().await;
        assert!(!healthy);
        assert_eq!(body, json!({ "status": "unavailable", "checks": { "dep": "down" } }));
    }
}
