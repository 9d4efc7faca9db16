//! The sender's PostgreSQL: reads of the shop's replica (phones) and of the
//! event (which gift), and the one write that matters — the dispatch row,
//! the settlement of its payout claim ([`crate::payout_guard`]) and its
//! outbox rows in one transaction, so Kafka hears of an outcome if and only
//! if it is recorded, and a returned unit is given back to the guard's
//! counter exactly when its `StockRelease` is written.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use deadpool_postgres::Pool;
use platform::kafka::OutRecord;
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
        let rows = client
            .query("SELECT entry_id FROM gift_dispatches WHERE entry_id = ANY($1)", &[&ids])
            .await?;
        Ok(rows.iter().map(|row| row.get::<_, Uuid>(0)).collect())
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
        let rows = client
            .query(
                "SELECT member_id, phone FROM members WHERE member_id = ANY($1)",
                &[&members],
            )
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// The gift of `event_id` (the events table), or the configured one when
    /// the event row is missing.
    pub async fn gift_for(&self, event_id: &str) -> Result<GiftSettings, StoreError> {
        if let Some(gift) = self.cached(event_id) {
            return Ok(gift);
        }
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT gift_product, gift_amount FROM events WHERE event_id = $1", &[&event_id])
            .await?;
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

    /// Records the outcome, settles the payout claim and writes the outbox
    /// rows in one transaction. Returns false (and writes nothing) when the
    /// entry already has an outcome, e.g. another instance finished it first
    /// after a rebalance.
    pub async fn record(&self, entry: &WonEntry, resolution: &Resolution, outbox: &[OutRecord]) -> Result<bool, StoreError> {
        let (status, provider_ref, attempts, reason) = match resolution {
            Resolution::Sent { gift_id, attempts } => ("SENT", Some(gift_id.as_str()), *attempts, None),
            Resolution::Failed { reason, attempts } => ("FAILED", None, *attempts, Some(reason.as_str())),
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
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        payout_guard::settle(&tx, entry, resolution).await?;
        let insert = tx
            .prepare("INSERT INTO outbox (topic, message_key, payload, headers) VALUES ($1, $2, $3, $4)")
            .await?;
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
