//! A bare axum handler of ingest's entry route shape: the HTTP ceiling.
//!
//! `POST /api/events/{event_id}/entries` with a bearer token → the token is
//! verified with ingest's own code and settings (HS256, issuer, audience,
//! lifetime), the body parsed as JSON, and 202 `{entry_id, status, status_url}`
//! answered. No Redis, no Kafka, no metrics: whatever ingest does beyond this
//! is what the drill's ratio to this baseline measures.
//!
//! `bare_ingest --port 8180` (the drill starts and stops it).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8180)]
    port: u16,
}

async fn submit(
    State(auth): State<Arc<ingest::auth::Verifier>>,
    Path(_event_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let token = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let member = match ingest::auth::bearer(token).and_then(|t| auth.verify(t)) {
        Ok(member) => member,
        Err(_) => {
            return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "unauthorized"}))).into_response()
        }
    };
    if body.get("answers").and_then(|a| a.as_object()).is_none() {
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"error": "invalid"}))).into_response();
    }
    let entry_id = uuid::Uuid::now_v7().to_string();
    let url = format!("/api/entries/{entry_id}");
    let _ = member;
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "entry_id": entry_id, "status": "pending", "status_url": url })))
        .into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let auth = Arc::new(ingest::AuthSettings::default().verifier());
    let app = Router::new().route("/api/events/{event_id}/entries", post(submit)).with_state(auth);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    eprintln!("bare_ingest listening on 127.0.0.1:{}", args.port);
    axum::serve(listener, app).await?;
    Ok(())
}
