//! Receipts on the API: the signing of each 202's receipt, and
//! `GET /api/receipts/key`, the public key anyone checks them with
//! (`crate::receipts`; the format in docs/api.md "Receipts").

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use schemas::SurveySubmitted;
use serde_json::json;

use super::AppState;
use crate::receipts::{Receipt, ReceiptFacts, RECEIPT_FORMAT};

/// The receipt of an acknowledged entry. `None` only if the entry's ids
/// could not be signed, which the admit path never lets through: the entry
/// is in the log all the same, so the member still gets the 202, and the
/// failure is logged and counted rather than turned into an error.
pub(crate) fn sign(app: &AppState, event: &SurveySubmitted) -> Option<Receipt> {
    let facts = ReceiptFacts {
        event_id: event.event_id.clone(),
        entry_id: event.entry_id.clone(),
        member: event.user_id.clone(),
        ticket: event.ticket,
        accepted_at_ms: event.accepted_at,
    };
    match app.receipts.sign(facts) {
        Ok(receipt) => Some(receipt),
        Err(error) => {
            metrics::counter!("firstcome_ingest_receipt_failures_total").increment(1);
            tracing::error!(%error, "could not sign the entry's receipt");
            None
        }
    }
}

/// `GET /api/receipts/key`: the public key, raw (base64) and as SPKI PEM,
/// with the id receipts name it by. Public and cacheable: it changes only
/// when the operator rotates the key.
pub async fn key(State(app): State<AppState>) -> impl IntoResponse {
    let public = app.receipts.public_key();
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(json!({
            "algorithm": "Ed25519",
            "format": RECEIPT_FORMAT,
            "key_id": public.key_id(),
            "public_key": public.base64(),
            "public_key_pem": public.pem(),
        })),
    )
}
