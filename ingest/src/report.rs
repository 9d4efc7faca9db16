//! An event's public report: what anyone may know of how fair it was, from
//! the database the recorder writes (never from ingest's own counters), so
//! the figures are the entries table's.
//!
//! Counts by outcome and status, the winners' ticket and accept-time range,
//! FCFS fidelity (`audit::fcfs_fidelity`, the one place that ranks entries),
//! a timeline of entries and winners by accept time, the shuffle's
//! commitment and seed (from the waiting room while its keys live, then from
//! what `firstcome event create` and `event close` kept in PostgreSQL), and the
//! root of the winners' Merkle tree (`crate::merkle`) over their receipts'
//! canonical bytes, in line order (ticket, accept time, entry id), with a
//! proof per winner. Served by ingest (`/events/{id}/report`,
//! `/api/events/{id}/report`) and printed by `firstcome event report`.

use std::collections::{BTreeMap, HashMap};

use redis::aio::ConnectionLike;
use serde::Serialize;

use crate::merkle::{self, Hash, Proof};
use crate::receipts::{ReceiptFacts, RECEIPT_FORMAT};

/// Most timeline buckets (the chart's bars).
const MAX_BUCKETS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("fcfs fidelity: {0}")]
    Fidelity(#[from] audit::AuditError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("shuffle: {0}")]
    Shuffle(#[from] crate::shuffle::StoreError),
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub event_id: String,
    pub name: String,
    pub generated_at_ms: i64,
    pub total_stock: i64,
    pub for_sale: i64,
    pub open_at_ms: i64,
    pub close_at_ms: i64,
    pub status: String,
    pub counts: Counts,
    pub winners: Winners,
    pub fcfs_fidelity: audit::Fidelity,
    pub timeline: Timeline,
    /// `None` when neither the waiting room nor PostgreSQL keeps a draw.
    pub shuffle: Option<ShuffleSummary>,
    pub receipts: ReceiptTree,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Entries recorded.
    pub entries: i64,
    /// By the stock stage's outcome (`UNDECIDED` when none yet).
    pub by_outcome: BTreeMap<String, i64>,
    /// By status (pending → won / lost → sent / failed).
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Winners {
    /// Entries decided WON.
    pub count: i64,
    pub ticket_first: Option<i64>,
    pub ticket_last: Option<i64>,
    pub accepted_first_ms: Option<i64>,
    pub accepted_last_ms: Option<i64>,
}

/// Entries and winners by accept time, `bucket_ms` wide from `start_ms`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub start_ms: Option<i64>,
    pub bucket_ms: i64,
    pub accepted: Vec<i64>,
    pub won: Vec<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ShuffleSummary {
    pub mode: String,
    pub commitment: String,
    /// Revealed once the room opened.
    pub seed: Option<String>,
    pub opened_at_ms: Option<i64>,
    pub pre_queued: i64,
    /// `redis` (the room, while its keys live) or `postgresql` (kept by
    /// `firstcome event create` and `event close`).
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReceiptTree {
    pub format: &'static str,
    pub tree: &'static str,
    pub order: &'static str,
    /// Winners in the tree.
    pub leaves: u64,
    pub merkle_root: String,
    /// Winners not in the tree: their entry is not recorded yet (the
    /// decision arrived first), so their receipt's facts are not known.
    pub incomplete: i64,
}

/// A report and the tree behind it (for proofs).
#[derive(Debug, Clone)]
pub struct Built {
    pub report: Report,
    leaves: Vec<Hash>,
    index: HashMap<String, usize>,
}

impl Built {
    /// The inclusion proof of `entry_id`'s receipt, if it is a winner in the tree.
    pub fn proof(&self, entry_id: &str) -> Option<Proof> {
        let &i = self.index.get(entry_id)?;
        Some(Proof {
            event_id: self.report.event_id.clone(),
            entry_id: entry_id.to_string(),
            leaf_index: i as u64,
            tree_size: self.leaves.len() as u64,
            leaf: hex::encode(self.leaves[i]),
            path: merkle::path(&self.leaves, i).iter().map(hex::encode).collect(),
            root: self.report.receipts.merkle_root.clone(),
        })
    }
}

/// Builds `event_id`'s report; `None` for an event the database does not know.
#[tracing::instrument(skip_all, fields(event_id))]
pub async fn build<C: ConnectionLike + Send>(
    db: &tokio_postgres::Client,
    redis: &mut C,
    event_id: &str,
) -> Result<Option<Built>, ReportError> {
    let Some(event) = db
        .query_opt(
            "SELECT name, total_stock::bigint, (total_stock - safety_stock)::bigint, status,
                    (extract(epoch FROM open_at) * 1000)::bigint, (extract(epoch FROM close_at) * 1000)::bigint
             FROM events WHERE event_id = $1",
            &[&event_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let counts = counts(db, event_id).await?;
    let (winners, leaves, index, incomplete) = winners(db, event_id).await?;
    let fcfs_fidelity = audit::fcfs_fidelity_in(db, event_id, audit::FirstN::ForSale).await?;
    let timeline = timeline(db, event_id).await?;
    let shuffle = shuffle(db, redis, event_id, event.get(4)).await?;
    let report = Report {
        event_id: event_id.to_string(),
        name: event.get(0),
        generated_at_ms: schemas::now_millis(),
        total_stock: event.get(1),
        for_sale: event.get(2),
        status: event.get(3),
        open_at_ms: event.get(4),
        close_at_ms: event.get(5),
        counts,
        winners,
        fcfs_fidelity,
        timeline,
        shuffle,
        receipts: ReceiptTree {
            format: RECEIPT_FORMAT,
            tree: "RFC 9162 Merkle tree, SHA-256: leaf = SHA-256(0x00 || receipt bytes)",
            order: "ticket, accepted_at, entry_id",
            leaves: leaves.len() as u64,
            merkle_root: hex::encode(merkle::root(&leaves)),
            incomplete,
        },
    };
    Ok(Some(Built { report, leaves, index }))
}

async fn counts(db: &tokio_postgres::Client, event_id: &str) -> Result<Counts, ReportError> {
    let mut counts = Counts::default();
    for row in db
        .query(
            "SELECT coalesce(outcome, 'UNDECIDED'), status, count(*) FROM event_entries
             WHERE event_id = $1 GROUP BY 1, 2",
            &[&event_id],
        )
        .await?
    {
        let n: i64 = row.get(2);
        counts.entries += n;
        *counts.by_outcome.entry(row.get(0)).or_default() += n;
        *counts.by_status.entry(row.get(1)).or_default() += n;
    }
    Ok(counts)
}

/// The winners in line order: their range, and their receipts' leaves.
async fn winners(
    db: &tokio_postgres::Client,
    event_id: &str,
) -> Result<(Winners, Vec<Hash>, HashMap<String, usize>, i64), ReportError> {
    let rows = db
        .query(
            "SELECT entry_id::text, user_id, ticket, accepted_at FROM event_entries
             WHERE event_id = $1 AND outcome = 'WON'
             ORDER BY ticket NULLS LAST, accepted_at, entry_id",
            &[&event_id],
        )
        .await?;
    let mut winners = Winners { count: rows.len() as i64, ..Default::default() };
    let (mut leaves, mut index, mut incomplete) = (Vec::with_capacity(rows.len()), HashMap::new(), 0);
    for row in rows {
        let entry_id: String = row.get(0);
        let ticket: Option<i64> = row.get(2);
        let accepted_at: Option<chrono::DateTime<chrono::Utc>> = row.get(3);
        let Some(accepted_at_ms) = accepted_at.map(|t| t.timestamp_millis()) else {
            incomplete += 1;
            continue;
        };
        if let Some(ticket) = ticket {
            winners.ticket_first = Some(winners.ticket_first.map_or(ticket, |t| t.min(ticket)));
            winners.ticket_last = Some(winners.ticket_last.map_or(ticket, |t| t.max(ticket)));
        }
        winners.accepted_first_ms = Some(winners.accepted_first_ms.map_or(accepted_at_ms, |t| t.min(accepted_at_ms)));
        winners.accepted_last_ms = Some(winners.accepted_last_ms.map_or(accepted_at_ms, |t| t.max(accepted_at_ms)));
        let facts = ReceiptFacts {
            event_id: event_id.to_string(),
            entry_id: entry_id.clone(),
            member: row.get(1),
            ticket: ticket.unwrap_or(0),
            accepted_at_ms,
        };
        // A row whose ids no receipt could carry (another producer's, before
        // the consumers checked ids) is counted, not put in the tree.
        match facts.canonical_bytes() {
            Ok(bytes) => {
                index.insert(entry_id, leaves.len());
                leaves.push(merkle::leaf_hash(&bytes));
            }
            Err(_) => incomplete += 1,
        }
    }
    Ok((winners, leaves, index, incomplete))
}

async fn timeline(db: &tokio_postgres::Client, event_id: &str) -> Result<Timeline, ReportError> {
    let range = db
        .query_one(
            "SELECT (extract(epoch FROM min(accepted_at)) * 1000)::bigint,
                    (extract(epoch FROM max(accepted_at)) * 1000)::bigint
             FROM event_entries WHERE event_id = $1",
            &[&event_id],
        )
        .await?;
    let (Some(start), Some(end)): (Option<i64>, Option<i64>) = (range.get(0), range.get(1)) else {
        return Ok(Timeline { bucket_ms: 1_000, ..Default::default() });
    };
    // Whole seconds, at most MAX_BUCKETS of them over the span.
    let span = end - start + 1;
    let per_bucket = (span + MAX_BUCKETS - 1) / MAX_BUCKETS;
    let bucket_ms = ((per_bucket + 999) / 1_000).max(1) * 1_000;
    let buckets = ((span + bucket_ms - 1) / bucket_ms) as usize;
    let mut timeline = Timeline { start_ms: Some(start), bucket_ms, accepted: vec![0; buckets], won: vec![0; buckets] };
    for row in db
        .query(
            "SELECT ((extract(epoch FROM accepted_at) * 1000)::bigint - $2) / $3,
                    count(*), count(*) FILTER (WHERE outcome = 'WON')
             FROM event_entries WHERE event_id = $1 AND accepted_at IS NOT NULL GROUP BY 1",
            &[&event_id, &start, &bucket_ms],
        )
        .await?
    {
        let b: i64 = row.get(0);
        if let Some(slot) = usize::try_from(b).ok().filter(|b| *b < buckets) {
            timeline.accepted[slot] = row.get(1);
            timeline.won[slot] = row.get(2);
        }
    }
    Ok(timeline)
}

/// The room's draw while Redis holds it, else what PostgreSQL keeps.
async fn shuffle<C: ConnectionLike + Send>(
    db: &tokio_postgres::Client,
    redis: &mut C,
    event_id: &str,
    open_at_ms: i64,
) -> Result<Option<ShuffleSummary>, ReportError> {
    let keys = crate::waiting_room::RoomKeys::new(event_id);
    /// `HMGET room mode commitment seed opened_at pre_queued`.
    type Fields = (Option<String>, Option<String>, Option<String>, Option<i64>, Option<i64>);
    let (mode, commitment, seed, opened_at_ms, pre_queued): Fields = redis::cmd("HMGET")
        .arg(&keys.room)
        .arg(&["mode", "commitment", "seed", "opened_at", "pre_queued"])
        .query_async(redis)
        .await?;
    if let Some(commitment) = commitment {
        return Ok(Some(ShuffleSummary {
            mode: mode.unwrap_or_else(|| "not opened".to_string()),
            commitment,
            // Never before the opening: until then it decides places not drawn yet.
            seed: opened_at_ms.and(seed),
            opened_at_ms,
            pre_queued: pre_queued.unwrap_or(0),
            source: "redis",
        }));
    }
    let Some(stored) = crate::shuffle::stored(db, event_id, false).await? else {
        return Ok(None);
    };
    let record = stored.record;
    // Revealed once the room opened, or once the event's opening passed (a
    // room that never opened, or whose keys were lost before its archive).
    let revealed = record.opened_at_ms.is_some() || schemas::now_millis() >= open_at_ms;
    Ok(Some(ShuffleSummary {
        mode: match (stored.archived, record.mode.is_empty()) {
            (false, _) => "not archived".to_string(),
            (true, true) => "not opened".to_string(),
            (true, false) => record.mode,
        },
        commitment: record.commitment,
        seed: revealed.then_some(record.seed),
        opened_at_ms: record.opened_at_ms,
        pre_queued: record.pre_queued,
        source: "postgresql",
    }))
}
