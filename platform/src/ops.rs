//! Operations endpoints every service exposes: `GET /healthz` checks the
//! service's real dependencies; `GET /metrics` renders Prometheus text.
//!
//! A check passes, fails (the service is unavailable), or passes with a
//! warning (`warnings`: what an operator should look at, e.g. a Redis whose
//! eviction policy cannot be read).
//!
//! The consumer services serve [`router`] on their own ops port; ingest on
//! its `ops` listener, never on its API port; provider-sim (a test double)
//! merges it into its API router.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::settings::KafkaSettings;

/// One dependency probe: `Ok` when the dependency answers.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A probe that may pass with a warning: `Ok(Some(warning))`.
pub type WarningProbe = Arc<dyn Fn() -> BoxFuture<'static, Result<Option<String>, String>> + Send + Sync>;

/// The probes behind `/healthz`.
#[derive(Clone, Default)]
pub struct Health {
    probes: Vec<(&'static str, WarningProbe)>,
}

/// How long one probe may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(self, name: &'static str, probe: Probe) -> Self {
        self.with_warnings(
            name,
            Arc::new(move || {
                let probe = probe();
                Box::pin(async move { probe.await.map(|()| None) })
            }),
        )
    }

    /// A check that can pass with a warning (reported under `warnings`).
    pub fn with_warnings(mut self, name: &'static str, probe: WarningProbe) -> Self {
        self.probes.push((name, probe));
        self
    }

    /// PostgreSQL answers `SELECT 1`.
    pub fn with_postgres(self, pool: deadpool_postgres::Pool) -> Self {
        self.with(
            "postgres",
            Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
                    Ok(())
                })
            }),
        )
    }

    /// Redis answers PING; and `redis_eviction_policy`: its
    /// `maxmemory-policy` never evicts (fails on one that can evict an
    /// event's keys, warns when it cannot be read).
    pub fn with_redis(self, conn: crate::redis::Connection) -> Self {
        let policy_conn = conn.clone();
        self.with(
            "redis",
            Arc::new(move || {
                let mut conn = conn.clone();
                Box::pin(async move {
                    redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
                })
            }),
        )
        .with_warnings(
            "redis_eviction_policy",
            Arc::new(move || {
                let conn = policy_conn.clone();
                Box::pin(async move {
                    match conn.eviction_policy().await.refuse_evicting() {
                        Ok(crate::redis::EvictionPolicy::Unknown(why)) => Ok(Some(why)),
                        Ok(_) => Ok(None),
                        Err(refused) => Err(refused.to_string()),
                    }
                })
            }),
        )
    }

    /// The Kafka cluster returns metadata (through a small client of its own).
    pub fn with_kafka(self, settings: &KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let admin = Arc::new(crate::kafka::admin::admin_client(settings)?);
        Ok(self.with(
            "kafka",
            Arc::new(move || {
                let admin = admin.clone();
                Box::pin(async move {
                    // fetch_metadata blocks: keep it off the async workers.
                    tokio::task::spawn_blocking(move || {
                        admin.inner().fetch_metadata(None, PROBE_TIMEOUT).map(|_| ()).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                })
            }),
        ))
    }

    /// The schema registry answers its subjects listing.
    pub fn with_registry(self, url: String) -> Self {
        // Building a client only fails without a TLS backend; fall back to the default one.
        let http = reqwest::Client::builder().timeout(PROBE_TIMEOUT).no_proxy().build().unwrap_or_default();
        self.with(
            "registry",
            Arc::new(move || {
                let http = http.clone();
                let url = format!("{}/subjects", url.trim_end_matches('/'));
                Box::pin(async move {
                    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
                    match response.status().is_success() {
                        true => Ok(()),
                        false => Err(format!("status {}", response.status())),
                    }
                })
            }),
        )
    }

    /// Runs every probe concurrently; the report names each dependency
    /// (`ok` or why not) and, under `warnings`, what passed with a warning.
    pub async fn report(&self) -> (bool, serde_json::Value) {
        let results = futures::future::join_all(self.probes.iter().map(|(name, probe)| async move {
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(result) => result,
                Err(_) => Err("timed out".to_string()),
            };
            (*name, outcome)
        }))
        .await;
        let healthy = results.iter().all(|(_, r)| r.is_ok());
        let mut checks = serde_json::Map::new();
        let mut warnings = serde_json::Map::new();
        for (name, result) in results {
            let check = match result {
                Ok(warning) => {
                    if let Some(warning) = warning {
                        warnings.insert(name.to_string(), warning.into());
                    }
                    "ok".to_string()
                }
                Err(error) => error,
            };
            checks.insert(name.to_string(), check.into());
        }
        let status = if healthy { "ok" } else { "unavailable" };
        (healthy, serde_json::json!({ "status": status, "checks": checks, "warnings": warnings }))
    }
}

async fn healthz(State(health): State<Health>) -> Response {
    let (healthy, body) = health.report().await;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics_text() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render())
}

/// `/healthz` and `/metrics`.
pub fn router(health: Health) -> Router {
    // Install the recorder before the first metric is recorded.
    let _ = crate::metrics::handle();
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics_text)).with_state(health)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(health)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answering(answer: Result<Option<String>, String>) -> WarningProbe {
        Arc::new(move || {
            let answer = answer.clone();
            Box::pin(async move { answer })
        })
    }

    #[tokio::test]
    async fn a_warning_is_reported_without_making_the_service_unavailable() {
        let health = Health::new()
            .with("up", Arc::new(|| Box::pin(async { Ok(()) })))
            .with_warnings("unsure", answering(Ok(Some("policy not readable".into()))));
        let (healthy, body) = health.report().await;
        assert!(healthy, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["checks"], serde_json::json!({ "up": "ok", "unsure": "ok" }));
        assert_eq!(body["warnings"], serde_json::json!({ "unsure": "policy not readable" }));

        let (healthy, body) = health.with_warnings("refused", answering(Err("evicts".into()))).report().await;
        assert!(!healthy);
        assert_eq!((&body["status"], &body["checks"]["refused"]), (&"unavailable".into(), &"evicts".into()));
    }
}
