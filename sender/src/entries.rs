//! The second key to pay: a WON is paid only for an entry the recorder holds.
//!
//! Why: the payout guard caps how many are paid and pays a member once, but
//! it trusts the WON record itself. Anything holding the stock stage's Kafka
//! login could produce a WON for a member who never entered, and the guard
//! would pay it while units remain. Entries reach the entries table only
//! from `survey-submitted`, which only ingest may write; so a WON must match
//! an entry recorded there for the same member and event, accepted while the
//! event was open. Forging a payout then takes both logins.
//!
//! The recorder may lag behind the stock stage. A WON whose entry is not
//! recorded yet is waited for (`dispatch.entry_wait_ms` within the batch,
//! polling), then the batch is retried like any transient failure (the
//! consumer loop's backoff), until the WON has been waited for
//! `dispatch.entry_deadline_ms` since this instance first saw it; then it is
//! refused, counted and dead-lettered (an operator replays it once the
//! recorder has caught up, if it was real). Never paid meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::store::{StoreError, WonEntry};

/// How often a missing entry is looked up again within a batch.
const POLL: Duration = Duration::from_millis(100);
/// Most WONs remembered as waiting (bounded memory whatever is produced).
const MAX_WAITING: usize = 100_000;

/// The entries of a batch's WONs, sorted by what the entries table says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vouched {
    /// Recorded for this member and event, accepted while it was open.
    pub recorded: HashSet<Uuid>,
    /// Not recorded yet, still within the deadline: retry the batch later.
    pub awaiting: HashSet<Uuid>,
    /// Not recorded within the deadline: never paid.
    pub unvouched: HashSet<Uuid>,
    /// Of an event PostgreSQL does not know: no entry can ever match, and
    /// the payout guard refuses it as `unknown_event` (recorded, counted).
    pub unknown_event: HashSet<Uuid>,
}

/// Looks the WONs' entries up in the recorder's entries table.
pub struct EntryWitness {
    pool: Pool,
    wait: Duration,
    deadline: Duration,
    /// When this instance first found each WON without its entry.
    first_missing: Mutex<HashMap<Uuid, Instant>>,
}

impl EntryWitness {
    pub fn new(pool: Pool, wait: Duration, deadline: Duration) -> Self {
        Self { pool, wait, deadline, first_missing: Mutex::new(HashMap::new()) }
    }

    /// Sorts `entries`, waiting up to `wait` for the missing ones.
    pub async fn vouch(&self, entries: &[&WonEntry]) -> Result<Vouched, StoreError> {
        let mut vouched = Vouched::default();
        if entries.is_empty() {
            return Ok(vouched);
        }
        let started = Instant::now();
        let mut missing: Vec<&WonEntry> = entries.to_vec();
        loop {
            let found = self.recorded(&missing).await?;
            missing.retain(|entry| !found.contains(&entry.entry_id));
            vouched.recorded.extend(found);
            if missing.is_empty() || started.elapsed() >= self.wait {
                break;
            }
            tokio::time::sleep(POLL.min(self.wait.saturating_sub(started.elapsed()))).await;
        }
        if !missing.is_empty() {
            let known = self.known_events(&missing).await?;
            missing.retain(|entry| {
                let known = known.contains(&entry.event_id);
                if !known {
                    vouched.unknown_event.insert(entry.entry_id);
                }
                known
            });
        }
        let now = Instant::now();
        let mut first_missing = self.first_missing.lock().unwrap_or_else(|e| e.into_inner());
        for id in &vouched.recorded {
            first_missing.remove(id);
        }
        if first_missing.len() + missing.len() > MAX_WAITING {
            // Forget the ones past the deadline first; they were answered.
            first_missing.retain(|_, at| now.duration_since(*at) < self.deadline);
        }
        for entry in missing {
            let since = *first_missing.entry(entry.entry_id).or_insert(now);
            if now.duration_since(since) >= self.deadline {
                first_missing.remove(&entry.entry_id);
                vouched.unvouched.insert(entry.entry_id);
            } else {
                vouched.awaiting.insert(entry.entry_id);
            }
        }
        Ok(vouched)
    }

    /// The events of `entries` that PostgreSQL knows.
    async fn known_events(&self, entries: &[&WonEntry]) -> Result<HashSet<String>, StoreError> {
        let events: Vec<&str> = entries.iter().map(|e| e.event_id.as_str()).collect();
        let client = self.pool.get().await?;
        let rows = client.query("SELECT event_id FROM events WHERE event_id = ANY($1)", &[&events]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// The ids among `entries` recorded for their member and event from
    /// `survey-submitted` (a decision alone leaves `submitted_at` empty),
    /// accepted within the event's opening hours. The opening is compared to
    /// the millisecond: the admit script judged it on Redis' clock in ms, and
    /// `events.open_at` keeps microseconds (an entry admitted in the opening
    /// millisecond was refused payment in the drill).
    async fn recorded(&self, entries: &[&WonEntry]) -> Result<HashSet<Uuid>, StoreError> {
        let ids: Vec<Uuid> = entries.iter().map(|e| e.entry_id).collect();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT e.entry_id, e.event_id, e.user_id
                   FROM event_entries e JOIN events ev ON ev.event_id = e.event_id
                  WHERE e.entry_id = ANY($1)
                    AND e.submitted_at IS NOT NULL
                    AND e.accepted_at >= date_trunc('milliseconds', ev.open_at)
                    AND e.accepted_at <= least(ev.close_at, ev.closed_at)",
                &[&ids],
            )
            .await?;
        let wanted: HashMap<Uuid, &WonEntry> = entries.iter().map(|e| (e.entry_id, *e)).collect();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let (id, event_id, user_id): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
                let entry = wanted.get(&id)?;
                (entry.event_id == event_id && entry.user_id == user_id).then_some(id)
            })
            .collect())
    }
}
