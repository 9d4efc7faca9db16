//! The sender's PostgreSQL: reads of the shop's replica (phones) and of the
//! event (which gift), and the one write that matters — the dispatch row,
//! the settlement of its payout claim ([`crate::payout_guard`]) and its
//! outbox rows in one transaction, so Kafka hears of an outcome if and only
//! if it is recorded, and a returned unit is given back to the guard's
//! counter exactly when its `StockRelease` is written.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use platform::kafka::{OutRecord, RecordContext};
use serde::Serialize;
use uuid::Uuid;

use crate::dispatch::Resolution;
use crate::payout_guard;
use crate::settings::GiftSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("record context does not serialise: {0}")]
    Headers(#[from] serde_json::Error),
    /// An outcome for an entry without an open payout claim: never recorded.
    #[error("entry {entry_id} holds no open payout claim")]
    ClaimNotHeld { entry_id: Uuid },
    /// A claim conflicted and then could not be found (should not happen): retry.
    #[error("payout claim of entry {entry_id} raced and vanished; retrying")]
    ClaimRace { entry_id: Uuid },
}

/// A won entry to send a gift for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WonEntry {
    pub event_id: String,
    pub entry_id: Uuid,
    pub user_id: String,
    pub unit_no: i32,
}

/// What earlier runs left on an entry's claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// An issue call was started for its key: a gift may exist.
    pub maybe_issued: bool,
    /// It is parked (the retrier of parked gifts owns it).
    pub parked: bool,
}

/// A parked gift (migration `0008_parked_gifts.sql`), as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedGift {
    pub entry_id: Uuid,
    pub event_id: String,
    pub user_id: String,
    pub unit_no: i32,
    pub parked_at: DateTime<Utc>,
    /// Retries since it was parked.
    pub tries: i32,
    pub next_try_at: DateTime<Utc>,
    /// Why its last try settled nothing.
    pub last_error: String,
}

impl ParkedGift {
    pub fn entry(&self) -> WonEntry {
        WonEntry {
            event_id: self.event_id.clone(),
            entry_id: self.entry_id,
            user_id: self.user_id.clone(),
            unit_no: self.unit_no,
        }
    }

    fn of(row: &tokio_postgres::Row) -> Self {
        Self {
            entry_id: row.get("entry_id"),
            event_id: row.get("event_id"),
            user_id: row.get("user_id"),
            unit_no: row.get("unit_no"),
            parked_at: row.get("parked_at"),
            tries: row.get("tries"),
            next_try_at: row.get("next_try_at"),
            last_error: row.get("last_error"),
        }
    }
}

const PARKED_COLUMNS: &str = "entry_id, event_id, user_id, unit_no, parked_at, tries, next_try_at, last_error, headers";

/// Every parked gift (of `event_id`, when given), the longest parked first:
/// what `firstcome gifts parked` lists.
pub async fn parked_gifts(pool: &Pool, event_id: Option<&str>) -> Result<Vec<ParkedGift>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT {PARKED_COLUMNS} FROM parked_gifts WHERE $1::text IS NULL OR event_id = $1 ORDER BY parked_at, entry_id"),
            &[&event_id],
        )
        .await?;
    Ok(rows.iter().map(ParkedGift::of).collect())
}

/// Seconds, as PostgreSQL's `make_interval` takes them.
fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

pub struct Store {
    pool: Pool,
    /// The shop's member replica (phones).
    replica: Pool,
    /// Gift per event: it does not change once the event exists.
    gifts: Mutex<HashMap<String, GiftSettings>>,
    fallback: GiftSettings,
}

impl Store {
    pub fn new(pool: Pool, replica: Pool, fallback: GiftSettings) -> Self {
        Self { pool, replica, gifts: Mutex::new(HashMap::new()), fallback }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The entries among `ids` whose outcome is already recorded.
    pub async fn already_dispatched(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let client = self.pool.get().await?;
        let rows = client.query("SELECT entry_id FROM gift_dispatches WHERE entry_id = ANY($1)", &[&ids]).await?;
        Ok(rows.iter().map(|row| row.get::<_, Uuid>(0)).collect())
    }

    /// What earlier runs left on the claims of `ids` (claimed entries only).
    pub async fn progress(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Progress>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT c.entry_id, c.issue_started_at IS NOT NULL, p.entry_id IS NOT NULL
                 FROM payout_claims c LEFT JOIN parked_gifts p ON p.entry_id = c.entry_id
                 WHERE c.entry_id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, Uuid>(0), Progress { maybe_issued: row.get(1), parked: row.get(2) }))
            .collect())
    }

    /// Marks the claims of `ids` as issued-maybe, before their first issue
    /// call: the mark outlives this run, so no later one fails such a gift
    /// without asking the provider first.
    pub async fn mark_issue_started(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE payout_claims SET issue_started_at = now() WHERE entry_id = ANY($1) AND issue_started_at IS NULL",
                &[&ids],
            )
            .await?;
        Ok(())
    }

    /// Parks the claimed gift of `entry` (its claim stays open), first
    /// retried after `first_try`. Parking a parked gift keeps its schedule.
    pub async fn park(
        &self,
        entry: &WonEntry,
        cause: &RecordContext,
        error: &str,
        first_try: Duration,
    ) -> Result<(), StoreError> {
        let headers = serde_json::to_value(cause)?;
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO parked_gifts (entry_id, event_id, user_id, unit_no, headers, next_try_at, last_error)
                 VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7)
                 ON CONFLICT (entry_id) DO UPDATE SET last_error = EXCLUDED.last_error",
                &[&entry.entry_id, &entry.event_id, &entry.user_id, &entry.unit_no, &headers, &secs(first_try), &error],
            )
            .await?;
        Ok(())
    }

    /// Takes up to `limit` parked gifts that are due, each with its WON
    /// record's context, leasing them for `lease` (their next try pushed
    /// that far): another instance skips them meanwhile, and a retrier that
    /// dies leaves them due again when the lease ends.
    pub async fn take_due_parked(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<(ParkedGift, RecordContext)>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "UPDATE parked_gifts SET next_try_at = now() + make_interval(secs => $2)
                     WHERE entry_id IN (SELECT entry_id FROM parked_gifts WHERE next_try_at <= now()
                                        ORDER BY next_try_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                     RETURNING {PARKED_COLUMNS}"
                ),
                &[&limit, &secs(lease)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let context = serde_json::from_value::<RecordContext>(row.get("headers"))?;
                Ok((ParkedGift::of(row), context))
            })
            .collect()
    }

    /// A parked gift's try settled nothing: count it and set the next one.
    pub async fn reschedule_parked(&self, entry_id: Uuid, error: &str, retry_in: Duration) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE parked_gifts SET tries = tries + 1, last_error = $2,
                     next_try_at = now() + make_interval(secs => $3)
                 WHERE entry_id = $1",
                &[&entry_id, &error, &secs(retry_in)],
            )
            .await?;
        Ok(())
    }

    /// Gifts parked now, all events.
    pub async fn parked_count(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.query_one("SELECT count(*) FROM parked_gifts", &[]).await?.get(0))
    }

    /// Phone numbers of `members` from the shop's member replica, as
    /// stored; members without a row are absent. Whether a phone can be sent
    /// to is decided by [`crate::phone::check`], with the provider's own
    /// rule. A replica that cannot answer is an error (the batch is retried,
    /// its claims kept): never a missing phone.
    pub async fn phones(&self, members: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if members.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.replica.get().await?;
        let rows = client.query("SELECT member_id, phone FROM members WHERE member_id = ANY($1)", &[&members]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// The gift of `event_id` (the events table), or the configured one when
    /// the event row is missing.
    pub async fn gift_for(&self, event_id: &str) -> Result<GiftSettings, StoreError> {
        if let Some(gift) = self.cached(event_id) {
            return Ok(gift);
        }
        let client = self.pool.get().await?;
        let row =
            client.query_opt("SELECT gift_product, gift_amount FROM events WHERE event_id = $1", &[&event_id]).await?;
        match row {
            Some(row) => {
                let gift = GiftSettings { product: row.get(0), amount: i64::from(row.get::<_, i32>(1)) };
                self.lock().insert(event_id.to_string(), gift.clone());
                Ok(gift)
            }
            None => {
                tracing::warn!(event_id, "no events row; sending the configured gift");
                Ok(self.fallback.clone())
            }
        }
    }

    /// Records the outcome, settles the payout claim, unparks the gift and
    /// writes the outbox rows in one transaction. Returns false (and writes
    /// nothing but the unparking) when the entry already has an outcome,
    /// e.g. another instance finished it first after a rebalance.
    pub async fn record(
        &self,
        entry: &WonEntry,
        resolution: &Resolution,
        outbox: &[OutRecord],
    ) -> Result<bool, StoreError> {
        let (status, provider_ref, attempts, reason) = match resolution {
            Resolution::Sent { gift_id, attempts } => ("SENT", Some(gift_id.as_str()), *attempts, None),
            Resolution::Failed { reason, attempts } => ("FAILED", None, *attempts, Some(reason.as_str())),
            Resolution::Refused { reason } => ("REFUSED", None, 0, Some(reason.as_str())),
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO gift_dispatches (entry_id, event_id, user_id, unit_no, status, provider_ref, attempts, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (entry_id) DO NOTHING",
                &[&entry.entry_id, &entry.event_id, &entry.user_id, &entry.unit_no, &status, &provider_ref, &attempts, &reason],
            )
            .await?;
        let unpark = "DELETE FROM parked_gifts WHERE entry_id = $1";
        if inserted == 0 {
            tx.execute(unpark, &[&entry.entry_id]).await?;
            tx.commit().await?;
            return Ok(false);
        }
        payout_guard::settle(&tx, entry, resolution).await?;
        tx.execute(unpark, &[&entry.entry_id]).await?;
        let insert =
            tx.prepare("INSERT INTO outbox (topic, message_key, payload, headers) VALUES ($1, $2, $3, $4)").await?;
        for record in outbox {
            let headers = serde_json::to_value(&record.context)?;
            tx.execute(&insert, &[&record.topic, &record.key, &record.payload, &headers]).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    fn cached(&self, event_id: &str) -> Option<GiftSettings> {
        self.lock().get(event_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GiftSettings>> {
        self.gifts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
