//! An event Redis lost whole, restored: its static keys (`meta`, the stock
//! counter at `for_sale`, the eligible members) written again as `firstcome
//! event create` wrote them, from the events row (firstcome's PostgreSQL)
//! and the purchases of the shop's member replica. The stock state (counter,
//! winners, decisions, marks) then comes from the log: a
//! [`Rebuilder`](crate::rebuild::Rebuilder) rebuild, which must follow.
//!
//! The one home of this: the stock stage restores an event its committed
//! marks or PostgreSQL name and Redis lacks before deciding on it, and
//! `firstcome rebuild redis` does the same by hand.
//!
//! Only a *lost* event is restored. One PostgreSQL does not know (a junk id
//! from a hostile producer, a create that never finished) or whose keys'
//! lifetime is over (close_at + [`GRACE_AFTER_CLOSE`]: Redis forgot it on
//! purpose) stays unknown. Those answers are remembered for
//! [`ABSENT_TTL`], so a stream of records naming one junk event costs one
//! PostgreSQL query per that time, not one per batch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use platform::db::DbError;
use platform::event_keys::{write_event, EventMeta, EventStatus, GRACE_AFTER_CLOSE};
use platform::settings::{DatabaseSettings, ReplicaSettings};

/// How long "PostgreSQL has no such event" (or "it expired") is believed
/// without asking again. Short: an event created meanwhile is found soon.
pub const ABSENT_TTL: Duration = Duration::from_secs(30);
/// Most absent events remembered at once: a hostile producer's distinct
/// junk ids cannot grow the cache without bound (past it, the oldest go).
const ABSENT_MAX: usize = 10_000;

/// Why an event's keys could not be restored (nothing, or only the
/// eligible set, was written; `meta` never).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("failed to reach firstcome's PostgreSQL")]
    Database(#[source] DbError),
    #[error("failed to read event {event_id} in PostgreSQL")]
    EventRow {
        event_id: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("events.questions of {event_id} is not a list of question ids")]
    Questions {
        event_id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to reach the member replica")]
    Replica(#[source] DbError),
    #[error("failed to read the buyers of {product_id} on the member replica")]
    Eligible {
        product_id: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("failed to write the keys of event {event_id} to Redis")]
    Redis {
        event_id: String,
        #[source]
        source: redis::RedisError,
    },
}

/// What [`Restorer::restore`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// `meta` and the eligible set written from PostgreSQL; the stock state
    /// is still to be rebuilt from the log.
    Restored { eligible: usize },
    /// Redis has the event's `meta`: nothing written.
    Present,
    /// PostgreSQL has no such event, or only one whose create never
    /// finished (`scheduled`: it was never live). `cached`: the answer of an
    /// earlier query (see [`ABSENT_TTL`]).
    Unknown { cached: bool },
    /// Its keys' lifetime is over (close_at + [`GRACE_AFTER_CLOSE`]).
    Expired { cached: bool },
}

impl Restore {
    /// Unknown or expired: the event is answered as unknown, not restored.
    pub fn is_absent(self) -> bool {
        matches!(self, Restore::Unknown { .. } | Restore::Expired { .. })
    }
}

/// The events row as the restore reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventRow {
    product_id: String,
    meta: EventMeta,
    /// `scheduled`: `event create` stopped before the event went live.
    scheduled: bool,
}

/// Restores lost events from PostgreSQL and the member replica. Cheap to
/// share; remembers absent events for [`ABSENT_TTL`].
pub struct Restorer {
    database: Pool,
    replica: Pool,
    absent: Mutex<HashMap<String, (Instant, Absent)>>,
}

#[derive(Debug, Clone, Copy)]
enum Absent {
    Unknown,
    Expired,
}

impl Restorer {
    /// Over pools on firstcome's PostgreSQL (SELECT on `events`) and the
    /// member replica (`purchases`). Pools connect lazily: building them
    /// needs neither server up.
    pub fn new(database: Pool, replica: Pool) -> Self {
        Self { database, replica, absent: Mutex::new(HashMap::new()) }
    }

    /// Builds both pools from settings (credentials as given: a service
    /// fills in its own first).
    pub fn connect(database: &DatabaseSettings, replica: &ReplicaSettings) -> Result<Self, RestoreError> {
        let database = platform::db::pool(database).map_err(RestoreError::Database)?;
        let replica = platform::member_db::replica_pool(replica).map_err(RestoreError::Replica)?;
        Ok(Self::new(database, replica))
    }

    /// Writes `event_id`'s `meta`, counter and eligible set when Redis has
    /// no `meta` and PostgreSQL says the event is live (not unknown, not
    /// expired, as of `now_ms`). Never overwrites a `meta` (see
    /// [`write_event`]): a restore racing another, or `event create`, is
    /// [`Restore::Present`].
    pub async fn restore<C>(&self, redis: &mut C, event_id: &str, now_ms: i64) -> Result<Restore, RestoreError>
    where
        C: redis::aio::ConnectionLike + Send,
    {
        if let Some(absent) = self.remembered(event_id) {
            return Ok(absent);
        }
        let redis_error = |source| RestoreError::Redis { event_id: event_id.to_string(), source };
        if EventMeta::load(redis, event_id).await.map_err(redis_error)?.is_some() {
            return Ok(Restore::Present);
        }
        let row = match self.event_row(event_id).await? {
            Some(row) if !row.scheduled => row,
            _ => return Ok(self.remember(event_id, Absent::Unknown)),
        };
        if now_ms >= expires_at_ms(&row.meta) {
            return Ok(self.remember(event_id, Absent::Expired));
        }
        let eligible = eligible_members(&self.replica, &row.product_id).await?;
        if !write_event(redis, &row.meta, &eligible).await.map_err(redis_error)? {
            return Ok(Restore::Present);
        }
        Ok(Restore::Restored { eligible: eligible.len() })
    }

    /// The event's row: its meta as `event create` wrote it.
    async fn event_row(&self, event_id: &str) -> Result<Option<EventRow>, RestoreError> {
        let client = self.database.get().await.map_err(|e| RestoreError::Database(e.into()))?;
        let row_error = |source| RestoreError::EventRow { event_id: event_id.to_string(), source };
        let row = client
            .query_opt(
                "SELECT product_id, total_stock - safety_stock,
                        (extract(epoch FROM open_at) * 1000)::bigint,
                        (extract(epoch FROM close_at) * 1000)::bigint,
                        questions::text, status, line_depth
                 FROM events WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .map_err(row_error)?;
        let Some(row) = row else { return Ok(None) };
        let questions: String = row.try_get(4).map_err(row_error)?;
        let questions = serde_json::from_str(&questions)
            .map_err(|source| RestoreError::Questions { event_id: event_id.to_string(), source })?;
        let status: String = row.try_get(5).map_err(row_error)?;
        let for_sale = i64::from(row.try_get::<_, i32>(1).map_err(row_error)?);
        // The depth `event create` set; none on a row created before it was kept.
        let line_depth = row.try_get::<_, Option<i32>>(6).map_err(row_error)?.map(i64::from);
        let meta = EventMeta {
            event_id: event_id.to_string(),
            open_at_ms: row.try_get(2).map_err(row_error)?,
            close_at_ms: row.try_get(3).map_err(row_error)?,
            for_sale,
            line_depth: line_depth.unwrap_or_else(|| EventMeta::default_line_depth(for_sale)),
            questions,
            // Sold out or open: the rebuild that follows sets it from the counter.
            status: if status == "closed" { EventStatus::Closed } else { EventStatus::Open },
        };
        Ok(Some(EventRow { product_id: row.try_get(0).map_err(row_error)?, meta, scheduled: status == "scheduled" }))
    }

    fn remembered(&self, event_id: &str) -> Option<Restore> {
        let absent = self.absent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match absent.get(event_id) {
            Some((at, Absent::Unknown)) if at.elapsed() < ABSENT_TTL => Some(Restore::Unknown { cached: true }),
            Some((at, Absent::Expired)) if at.elapsed() < ABSENT_TTL => Some(Restore::Expired { cached: true }),
            _ => None,
        }
    }

    fn remember(&self, event_id: &str, what: Absent) -> Restore {
        let mut absent = self.absent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if absent.len() >= ABSENT_MAX {
            absent.retain(|_, (at, _)| at.elapsed() < ABSENT_TTL);
        }
        if absent.len() >= ABSENT_MAX {
            // All fresh: a flood of distinct ids. Forget the oldest half.
            let mut ages: Vec<Instant> = absent.values().map(|(at, _)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            absent.retain(|_, (at, _)| *at > cut);
        }
        absent.insert(event_id.to_string(), (Instant::now(), what));
        match what {
            Absent::Unknown => Restore::Unknown { cached: false },
            Absent::Expired => Restore::Expired { cached: false },
        }
    }
}

/// When an event's keys expire (ms): close_at + [`GRACE_AFTER_CLOSE`].
pub fn expires_at_ms(meta: &EventMeta) -> i64 {
    meta.close_at_ms + GRACE_AFTER_CLOSE.as_millis() as i64
}

/// The members who bought `product_id`, read on the member replica: an
/// event's eligible set (`event create` and the restore read it here).
pub async fn eligible_members(replica: &Pool, product_id: &str) -> Result<Vec<String>, RestoreError> {
    let eligible_error = |source| RestoreError::Eligible { product_id: product_id.to_string(), source };
    let client = replica.get().await.map_err(|e| RestoreError::Replica(e.into()))?;
    let rows = client
        .query("SELECT DISTINCT member_id FROM purchases WHERE product_id = $1", &[&product_id])
        .await
        .map_err(eligible_error)?;
    rows.iter().map(|row| row.try_get(0).map_err(eligible_error)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restorer() -> Restorer {
        // Lazy pools: nothing connects in these tests.
        Restorer::connect(&DatabaseSettings::default(), &ReplicaSettings::default()).expect("pools")
    }

    #[test]
    fn an_absent_event_is_remembered_for_a_while() {
        let restorer = restorer();
        assert_eq!(restorer.remembered("junk"), None);
        assert_eq!(restorer.remember("junk", Absent::Unknown), Restore::Unknown { cached: false });
        assert_eq!(restorer.remembered("junk"), Some(Restore::Unknown { cached: true }));
        restorer.remember("old", Absent::Expired);
        assert_eq!(restorer.remembered("old"), Some(Restore::Expired { cached: true }));
        assert!(Restore::Unknown { cached: true }.is_absent() && !Restore::Restored { eligible: 0 }.is_absent());
    }

    #[test]
    fn a_flood_of_distinct_junk_ids_stays_bounded() {
        let restorer = restorer();
        for n in 0..ABSENT_MAX + 10 {
            restorer.remember(&format!("junk-{n}"), Absent::Unknown);
        }
        let remembered = restorer.absent.lock().unwrap().len();
        assert!(remembered <= ABSENT_MAX, "{remembered}");
        assert!(restorer.remembered(&format!("junk-{}", ABSENT_MAX + 9)).is_some(), "the newest is kept");
    }
}
