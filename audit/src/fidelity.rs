//! The chaos suite's and the drill's figures: how first-come-first-served
//! the winners were, and when the last gift went out.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::AuditError;
use crate::ids::canonical;
use crate::stores::{provider_gifts, Stores};

/// FCFS fidelity: of the first N valid entries in line, the share that won a
/// unit (a perfect first-come-first-served run: 1.0).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fidelity {
    pub first_n: i64,
    pub winners_among_first_n: i64,
    pub share: f64,
    /// Winners (outcome WON) in all.
    pub winners: i64,
}

/// How many entries count as "the first".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstN {
    /// The stock for sale (the chaos suite: the first `for_sale` entries
    /// should be the winners, unless a unit went back to the next in line).
    ForSale,
    /// As many as won (the drill: were the winners the first ones?).
    Winners,
}

/// The one place that ranks entries for FCFS fidelity: what "first" means is
/// decided here alone. The line's order: the ticket (the place ingest gave
/// the entry, or the stock stage to one that came without), then the accept
/// time, then the entry id; entries recorded before tickets existed rank by
/// accept time. Only valid entries count: one decided INELIGIBLE, CLOSED (a
/// hole, or outside the window) or ALREADY_WON (a member's later entry)
/// could never take a unit, and its place passed on.
pub async fn fcfs_fidelity(stores: &Stores, event_id: &str, first: FirstN) -> Result<Fidelity, AuditError> {
    let db = stores.db().await?;
    fcfs_fidelity_in(&db, event_id, first).await
}

/// [`fcfs_fidelity`] on a connection the caller holds (ingest's public
/// report reads through its own pool).
pub async fn fcfs_fidelity_in(
    db: &tokio_postgres::Client,
    event_id: &str,
    first: FirstN,
) -> Result<Fidelity, AuditError> {
    let row = db
        .query_one(
            "SELECT (total_stock - safety_stock)::bigint,
                    (SELECT count(*) FROM event_entries WHERE event_id = $1 AND outcome = 'WON')
             FROM events WHERE event_id = $1",
            &[&event_id],
        )
        .await?;
    let (for_sale, winners): (i64, i64) = (row.get(0), row.get(1));
    let n = match first {
        FirstN::ForSale => for_sale,
        FirstN::Winners => winners,
    };
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'WON') FROM (
                 SELECT outcome FROM event_entries
                 WHERE event_id = $1 AND accepted_at IS NOT NULL
                   AND (outcome IS NULL OR outcome IN ('WON', 'SOLD_OUT'))
                 ORDER BY ticket NULLS LAST, accepted_at, entry_id LIMIT $2) firsts",
            &[&event_id, &n],
        )
        .await?;
    let (first_n, winners_among_first_n): (i64, i64) = (row.get(0), row.get(1));
    let share = if first_n > 0 { winners_among_first_n as f64 / first_n as f64 } else { 0.0 };
    Ok(Fidelity { first_n, winners_among_first_n, share, winners })
}

/// When the provider issued its last gift for one of the event's entries.
pub async fn last_gift_at(
    stores: &Stores,
    event_id: &str,
    provider_url: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, AuditError> {
    let gifts = provider_gifts(&stores.http, provider_url).await?;
    let db = stores.db().await?;
    let entries: HashSet<String> = db
        .query("SELECT entry_id::text FROM event_entries WHERE event_id = $1", &[&event_id])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(gifts.iter().filter(|g| entries.contains(&canonical(&g.idempotency_key))).filter_map(|g| g.issued_at).max())
}
