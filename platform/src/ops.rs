//! Operations endpoints every service exposes: `GET /healthz` checks the
//! service's real dependencies; `GET /metrics` renders Prometheus text.
//!
//! Consumer services serve [`router`] on their own ops port; ingest merges it
//! into its API router.

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

/// The probes behind `/healthz`.
#[derive(Clone, Default)]
pub struct Health {
    probes: Vec<(&'static str, Probe)>,
}

/// How long one probe may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &'static str, probe: Probe) -> Self {
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

    /// Redis answers PING.
    pub fn with_redis(self, conn: crate::redis::Connection) -> Self {
        self.with(
            "redis",
            Arc::new(move || {
                let mut conn = conn.clone();
                Box::pin(async move {
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
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
                        admin
                            .inner()
                            .fetch_metadata(None, PROBE_TIMEOUT)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
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
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
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

    /// Runs every probe concurrently; the report names each dependency.
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
        let checks: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(name, r)| (name.to_string(), serde_json::Value::String(r.err().unwrap_or_else(|| "ok".into()))))
            .collect();
        let status = if healthy { "ok" } else { "unavailable" };
        (healthy, serde_json::json!({ "status": status, "checks": checks }))
    }
}

async fn healthz(State(health): State<Health>) -> Response {
    let (healthy, body) = health.report().await;
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::handle().render(),
    )
}

/// `/healthz` and `/metrics`.
pub fn router(health: Health) -> Router {
    // Install the recorder before the first metric is recorded.
    let _ = crate::metrics::handle();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(health)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, health: Health, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
