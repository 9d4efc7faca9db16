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
//! The recorder may lag behind the stock stage, or be down. A WON whose entry
//! is not recorded yet is waited for (`dispatch.entry_wait_ms` within the
//! batch, polling), then the batch is retried like any transient failure
//! (the consumer loop's backoff). A missing entry is judged forged only once
//! the recorder has provably read past it, never because time passed: when
//! this instance first finds a WON without its entry it takes the high
//! watermarks of `survey-submitted` (every partition). The entry, if real,
//! was produced before the stock stage decided it, so before the WON was
//! read: it lies below those marks. After `dispatch.entry_deadline_ms` the
//! recorder's committed offsets there are read; the recorder commits only
//! after its database commit, so once they reach the marks on every
//! partition, an entry still missing was never written by ingest: the WON
//! is refused, counted and dead-lettered. While the recorder is short of
//! them the WON keeps waiting, never paid, never refused: a WARN line once
//! per batch of such WONs, `firstcome_sender_awaiting_recorder_total` per
//! retry and the gauge `firstcome_sender_awaiting_recorder`. Reading those
//! offsets takes Describe on the topic and on the recorder's group, nothing
//! more (`platform::kafka::acl`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use platform::kafka::lag::{self, PartitionLag};
use platform::settings::KafkaSettings;
use rdkafka::error::KafkaError;
use schemas::topology;
use tracing::Instrument;
use uuid::Uuid;

use crate::store::{StoreError, WonEntry};

/// How often a missing entry is looked up again within a batch.
const POLL: Duration = Duration::from_millis(100);
/// Most WONs remembered as waiting (bounded memory whatever is produced).
const MAX_WAITING: usize = 100_000;
/// Longest wait for one reading of the recorder's progress; a slower one
/// fails the batch as transient (retried), never refuses a WON.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(15);

/// The high watermarks of the entries topic, by partition.
type Marks = Arc<BTreeMap<i32, i64>>;

/// The entries of a batch's WONs, sorted by what the entries table says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vouched {
    /// Recorded for this member and event, accepted while it was open.
    pub recorded: HashSet<Uuid>,
    /// Not recorded yet, still within the deadline: retry the batch later.
    pub awaiting: HashSet<Uuid>,
    /// Not recorded, past the deadline, but the recorder has not read past
    /// the marks taken when they were first missed: retry the batch later.
    pub awaiting_recorder: HashSet<Uuid>,
    /// How many records the recorder is short of, per partition of the
    /// entries topic, for `awaiting_recorder` (the newest marks among them).
    pub recorder_short: BTreeMap<i32, i64>,
    /// Some of `awaiting_recorder` are held for the first time (so the WARN
    /// line is written once per batch of them, not on every retry).
    pub newly_held: bool,
    /// Not recorded although the recorder has read past them: never paid.
    pub unvouched: HashSet<Uuid>,
    /// Of an event PostgreSQL does not know: no entry can ever match, and
    /// the payout guard refuses it as `unknown_event` (recorded, counted).
    pub unknown_event: HashSet<Uuid>,
}

/// Looking the entries up failed; the batch is retried.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading where group {group} stands on {topic}: {source}")]
    RecorderProgress {
        group: String,
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("{topic} shows no partition")]
    NoPartitions { topic: String },
    #[error("reading where group {group} stands on {topic}: no answer within {after:?}")]
    RecorderProgressTimeout { group: String, topic: String, after: Duration },
}

/// Where the recorder stands on the entries topic: its watermarks and the
/// recorder group's committed offsets there.
pub struct RecorderProgress {
    kafka: KafkaSettings,
    /// The recorder's group, as the deployment names it (prefix included).
    group: String,
    /// `survey-submitted`, as the deployment names it.
    topic: String,
}

impl RecorderProgress {
    /// The recorder's group and the entries topic of the deployment `kafka`
    /// describes, named from the topology as the services name them.
    pub fn new(kafka: &KafkaSettings) -> Self {
        Self {
            kafka: kafka.clone(),
            group: kafka.group(topology::group::RECORDING),
            topic: kafka.topics().survey_submitted,
        }
    }

    /// Every partition of the entries topic: the recorder's committed
    /// offset and the high watermark.
    async fn read(&self) -> Result<Vec<PartitionLag>, EntryError> {
        let span = tracing::debug_span!("recorder_progress", group = %self.group, topic = %self.topic);
        let topics = [self.topic.as_str()];
        let read = lag::group_lag(&self.kafka, &self.group, &topics).instrument(span);
        // Each of its calls may take `lag::CALL_TIMEOUT`, one per partition:
        // bound the whole so the batch stays well inside the poll interval.
        let (group, topic) = (self.group.clone(), self.topic.clone());
        match tokio::time::timeout(PROGRESS_TIMEOUT, read).await {
            Ok(Ok(progress)) => Ok(progress),
            Ok(Err(source)) => Err(EntryError::RecorderProgress { group, topic, source }),
            Err(_) => Err(EntryError::RecorderProgressTimeout { group, topic, after: PROGRESS_TIMEOUT }),
        }
    }
}

/// A WON this instance found without its entry.
struct Waiting {
    /// When it was first found so.
    since: Instant,
    /// The entries topic's high watermarks then: its entry, if real, lies below.
    marks: Marks,
    /// Already held past the deadline for the recorder (and said so).
    held: bool,
}

/// Looks the WONs' entries up in the recorder's entries table.
pub struct EntryWitness {
    pool: Pool,
    progress: RecorderProgress,
    wait: Duration,
    deadline: Duration,
    waiting: Mutex<HashMap<Uuid, Waiting>>,
}

impl EntryWitness {
    pub fn new(pool: Pool, progress: RecorderProgress, wait: Duration, deadline: Duration) -> Self {
        Self { pool, progress, wait, deadline, waiting: Mutex::new(HashMap::new()) }
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<Uuid, Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sorts `entries`, waiting up to `wait` for the missing ones.
    pub async fn vouch(&self, entries: &[&WonEntry]) -> Result<Vouched, EntryError> {
        let vouched = self.sort(entries).await?;
        // The batch in work is the only one (one loop per instance): what it
        // holds for the recorder is what the instance holds now.
        metrics::gauge!("firstcome_sender_awaiting_recorder").set(vouched.awaiting_recorder.len() as f64);
        Ok(vouched)
    }

    async fn sort(&self, entries: &[&WonEntry]) -> Result<Vouched, EntryError> {
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
        let fresh: Vec<Uuid> = {
            let mut waiting = self.waiting();
            for id in &vouched.recorded {
                waiting.remove(id);
            }
            missing.iter().map(|e| e.entry_id).filter(|id| !waiting.contains_key(id)).collect()
        };
        if !fresh.is_empty() {
            // Taken after the WONs were read, so above their entries' offsets.
            let marks: Marks = Arc::new(self.progress.read().await?.iter().map(|p| (p.partition, p.end)).collect());
            if marks.is_empty() {
                // No marks would count as read past at once: never judge on them.
                return Err(EntryError::NoPartitions { topic: self.progress.topic.clone() });
            }
            let now = Instant::now();
            let mut waiting = self.waiting();
            if waiting.len() + fresh.len() > MAX_WAITING {
                // Forget the ones past the deadline first: forgetting one only
                // restarts its wait under newer marks, never pays nor refuses it.
                waiting.retain(|_, w| now.duration_since(w.since) < self.deadline);
            }
            for id in fresh {
                waiting.entry(id).or_insert(Waiting { since: now, marks: marks.clone(), held: false });
            }
        }
        let now = Instant::now();
        let mut due: Vec<(&WonEntry, Marks)> = Vec::new();
        {
            let waiting = self.waiting();
            for entry in missing {
                match waiting.get(&entry.entry_id) {
                    Some(w) if now.duration_since(w.since) >= self.deadline => due.push((entry, w.marks.clone())),
                    _ => {
                        vouched.awaiting.insert(entry.entry_id);
                    }
                }
            }
        }
        if !due.is_empty() {
            self.judge(due, &mut vouched).await?;
        }
        Ok(vouched)
    }

    /// Settles the WONs past their deadline: refused only where the recorder
    /// has committed at or past their marks on every partition, held otherwise.
    async fn judge(&self, due: Vec<(&WonEntry, Marks)>, vouched: &mut Vouched) -> Result<(), EntryError> {
        let progress = self.progress.read().await?;
        let topic = self.progress.topic.as_str();
        let (read_past, behind): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|(_, marks)| lag::short_of(&progress, topic, marks).is_empty());
        if !read_past.is_empty() {
            // The recorder wrote what it had of them before it committed
            // past them: one last look settles them (it may have written
            // them since the first).
            let entries: Vec<&WonEntry> = read_past.iter().map(|(entry, _)| *entry).collect();
            let found = self.recorded(&entries).await?;
            let mut waiting = self.waiting();
            for entry in entries {
                if found.contains(&entry.entry_id) {
                    waiting.remove(&entry.entry_id);
                    vouched.recorded.insert(entry.entry_id);
                } else {
                    // Kept: should its batch be retried for another WON, this
                    // one is refused again at once rather than waited for anew.
                    if let Some(w) = waiting.get_mut(&entry.entry_id) {
                        w.held = false;
                    }
                    vouched.unvouched.insert(entry.entry_id);
                }
            }
        }
        if !behind.is_empty() {
            let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
            for (_, marks) in &behind {
                for (&partition, &mark) in marks.iter() {
                    let kept = newest.entry(partition).or_insert(mark);
                    *kept = (*kept).max(mark);
                }
            }
            vouched.recorder_short = lag::short_of(&progress, topic, &newest);
            let mut waiting = self.waiting();
            for (entry, _) in behind {
                vouched.awaiting_recorder.insert(entry.entry_id);
                if let Some(w) = waiting.get_mut(&entry.entry_id) {
                    vouched.newly_held |= !w.held;
                    w.held = true;
                }
            }
        }
        Ok(())
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
