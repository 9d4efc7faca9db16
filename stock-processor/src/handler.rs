//! The batch handler of group `stock`: decode, validate, return released
//! units (handing them to the next in line), decide entries (one script call
//! per event), encode the decisions, and say what to commit as offset metadata.
//!
//! The consumer loop commits the outputs, the dead letters and the input
//! offsets in one Kafka transaction; when it aborts, the same records come
//! again. Every Redis change here is keyed by entry id (stored decisions, the
//! released set, the promotions), so the re-run gives the same answers and
//! changes nothing.
//!
//! Redis is not trusted to remember everything it acknowledged: every script
//! call checks the event's applied marks against the ones committed to Kafka
//! (see [`crate::marks`]). When Redis is behind, the event is rebuilt from the
//! log before anything is decided on it. When Redis lost an event whole
//! (every key) while the committed marks or PostgreSQL name it, the event's
//! static keys are restored from PostgreSQL first ([`crate::restore`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use platform::kafka::{encode_event, BatchHandler, BatchOutcome, DeadLetter, HandlerError, OutRecord, Record};
use platform::redis::fence::FenceError;
use schemas::{check_identity, Codec, Outcome, StockDecision, StockRelease, SurveySubmitted, Topics};
use tracing::{Instrument, Span};

use crate::events::{
    DecisionMade, DecisionsHeld, EventLost, RebuildFinished, RecordRejected, RedisBehind, ReleaseApplied,
    StockRemaining,
};
use crate::marks::{self, CommittedMarks, MarkKind, MarkReader};
use crate::rebuild::Rebuilder;
use crate::restore::Restorer;
use crate::store::{Decided, EntryRef, Marks, Promotion, Released, StockStore, StoreError};

/// The `client.channel` of ingest's hole announcements (`ingest::holes`).
pub const HOLE_CHANNEL: &str = "hole";

/// How long a batch waits for a rebuild that holds an event before it fails
/// (and is tried again): below the transaction timeout would abort it anyway.
const HELD_WAIT: Duration = Duration::from_secs(8);
/// Pause between calls while an event is held.
const HELD_POLL: Duration = Duration::from_millis(50);

/// Decides entries and applies releases for one consumer group member.
pub struct StockHandler {
    store: StockStore,
    codec: Codec,
    topics: Topics,
    group: String,
    guard: Option<StaleGuard>,
    fence: Option<Fence>,
    /// Restores an event Redis lost whole (needs the stale guard's rebuild).
    restorer: Option<Restorer>,
}

/// How a script call is checked against the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Against the committed marks: the normal case.
    Committed,
    /// Without them: Redis and PostgreSQL both lack the event, so it is
    /// answered as unknown (INELIGIBLE, nothing written). With the marks the
    /// script would answer STALE again, for ever.
    AsUnknown,
}

/// The failover fence: a batch's Redis writes must reach this many replicas
/// before the batch may commit (settings: `replica_acks`).
pub use platform::redis::fence::ReplicaFence as Fence;

/// What checks Redis against the log and repairs it.
struct StaleGuard {
    marks: MarkReader,
    rebuilder: Rebuilder,
}

/// A record that passed decoding and validation.
enum Input {
    Entry(SurveySubmitted),
    Release(StockRelease),
}

/// An input with where it came from.
struct Item<'a> {
    index: usize,
    record: &'a Record,
    span: Span,
    input: Input,
}

/// The marks this batch applied, per input partition: event → next offset,
/// in the order applied.
#[derive(Default)]
struct BatchMarks {
    partitions: BTreeMap<(MarkKind, i32), Vec<(String, i64)>>,
}

impl BatchMarks {
    fn raise(&mut self, kind: MarkKind, partition: i32, event_id: &str, next_offset: i64) {
        let events = self.partitions.entry((kind, partition)).or_default();
        match events.iter_mut().find(|(event, _)| event == event_id) {
            Some((_, mark)) => *mark = (*mark).max(next_offset),
            None => events.push((event_id.to_string(), next_offset)),
        }
    }

    /// Newest first, as the metadata keeps them.
    fn newest_first(&self, kind: MarkKind, partition: i32) -> Vec<(String, i64)> {
        let mut events = self.partitions.get(&(kind, partition)).cloned().unwrap_or_default();
        events.sort_by_key(|(_, offset)| std::cmp::Reverse(*offset));
        events
    }
}

impl StockHandler {
    /// A handler that trusts Redis (no stale check): tests of the decisions.
    /// The stage runs [`StockHandler::with_stale_guard`].
    pub fn new(store: StockStore, codec: Codec, topics: Topics, group: String) -> Self {
        Self { store, codec, topics, group, guard: None, fence: None, restorer: None }
    }

    /// Restores an event Redis lost whole with `restorer` (from PostgreSQL
    /// and the member replica), then rebuilds it from the log, before
    /// deciding on it; one PostgreSQL lacks is decided as unknown. Without
    /// it such an event stalls until an operator restores it.
    pub fn with_restorer(mut self, restorer: Restorer) -> Self {
        self.restorer = Some(restorer);
        self
    }

    /// Commits nothing a failover could lose: after its script calls a batch
    /// waits until `fence.replicas` replicas acknowledged them (`WAIT`), and
    /// fails (to be tried again) when they do not in time.
    pub fn with_fence(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// Checks each event's applied marks against the group's committed marks
    /// (read by `marks` before every batch) and rebuilds an event Redis is
    /// behind on with `rebuilder` before deciding on it.
    pub fn with_stale_guard(mut self, marks: MarkReader, rebuilder: Rebuilder) -> Self {
        self.guard = Some(StaleGuard { marks, rebuilder });
        self
    }

    async fn handle_batch(&self, batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        let mut outcome = BatchOutcome::default();
        let mut entries = Vec::new();
        let mut releases = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            let span = record.span(&self.group);
            match self.decode(record).instrument(span.clone()).await {
                Ok(input) => {
                    let item = Item { index, record, span, input };
                    match &item.input {
                        Input::Entry(entry) => {
                            item.span.record("entry_id", entry.entry_id.as_str());
                            entries.push(item);
                        }
                        Input::Release(release) => {
                            item.span.record("entry_id", release.entry_id.as_str());
                            releases.push(item);
                        }
                    }
                }
                Err(error) if error.is_poison() => {
                    span.in_scope(|| RecordRejected { error: &error }.emit());
                    outcome.dead_letters.push(DeadLetter::new(index, &error));
                }
                // The registry is away: try the whole batch again later.
                Err(error) => return Err(error),
            }
        }

        // A move to another primary during the batch voids the fence: WAIT on
        // the new connection would not cover the writes made on the old one.
        let moves = self.store.connection().moves();
        // What this group committed: the marks Redis must not be below.
        let committed = match &self.guard {
            Some(guard) => {
                guard.marks.fetch().await.map_err(|e| HandlerError::transient_in("reading committed marks", e))?
            }
            None => CommittedMarks::default(),
        };
        let mut applied = BatchMarks::default();

        // Releases first: a unit returned in this batch can go to an entry of it.
        // No local clock here: the scripts judge time on Redis' clock.
        let mut out = Vec::new();
        for item in &releases {
            let (dead, promoted) = self.release(item, &committed, &mut applied).await?;
            if let Some(error) = dead {
                outcome.dead_letters.push(DeadLetter::new(item.index, &error));
            }
            out.extend(promoted.into_iter().map(|record| (item.index, record)));
        }
        out.extend(self.decide(&entries, &committed, &mut applied).await?);
        if !entries.is_empty() || !releases.is_empty() {
            self.fenced(&moves).await?;
        }
        // Per-key order: a member's decisions leave in the order the records came.
        out.sort_by_key(|(index, _)| *index);
        outcome.produce = out.into_iter().map(|(_, record)| record).collect();
        outcome.offset_metadata = self.offset_metadata(batch, &committed, &applied);
        Ok(outcome)
    }

    /// The metadata of every partition of the batch: its committed marks
    /// with this batch's in front. Partitions whose records were all dead
    /// letters commit their marks again, unchanged (a commit replaces them).
    fn offset_metadata(
        &self,
        batch: &[Record],
        committed: &CommittedMarks,
        applied: &BatchMarks,
    ) -> HashMap<(String, i32), String> {
        let mut metadata = HashMap::new();
        for record in batch {
            let Some(kind) = self.kind(record.topic()) else { continue };
            let key = (record.topic().to_string(), record.partition());
            if let std::collections::hash_map::Entry::Vacant(slot) = metadata.entry(key) {
                let newer = applied.newest_first(kind, record.partition());
                slot.insert(committed.metadata_for(kind, record.partition(), &newer));
            }
        }
        metadata
    }

    fn kind(&self, topic: &str) -> Option<MarkKind> {
        if topic == self.topics.survey_submitted {
            Some(MarkKind::Survey)
        } else if topic == self.topics.stock_released {
            Some(MarkKind::Release)
        } else {
            None
        }
    }

    /// Waits for the fence's replicas to hold every write of this batch.
    /// `WAIT` covers what this connection wrote, and the scripts ran on it.
    async fn fenced(&self, moves: &tokio::sync::watch::Receiver<u64>) -> Result<(), HandlerError> {
        let Some(fence) = self.fence else { return Ok(()) };
        let mut conn = self.store.connection();
        let started = Instant::now();
        let held = fence.hold(&mut conn, Some(moves)).await;
        metrics::histogram!("firstcome_stock_fence_wait_seconds").record(started.elapsed().as_secs_f64());
        match held {
            Ok(_) => Ok(()),
            Err(FenceError::Redis(error)) => Err(HandlerError::transient_in("waiting for the replicas (WAIT)", error)),
            Err(error) => {
                metrics::counter!("firstcome_stock_fence_refusals_total").increment(1);
                tracing::error!(
                    %error,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "the batch's decisions may not survive a failover: not committed; trying again"
                );
                Err(HandlerError::transient(format!("the fence did not hold: {error}")))
            }
        }
    }

    /// Redis answered STALE for `event_id`: say so loudly, rebuild the event
    /// from the log. An unguarded handler (or a failed rebuild) fails the
    /// batch, which is tried again: nothing is decided on a Redis that is behind.
    /// STALE 'meta' (Redis lost the event whole): restored first; when
    /// PostgreSQL lacks it, the call is made again as for an unknown event.
    async fn on_stale(&self, event_id: &str, error: StoreError) -> Result<Check, HandlerError> {
        match &error {
            StoreError::Stale { field, .. } if field == "meta" => {
                let restored = self.restore_lost(event_id, "marks").await?;
                if !restored {
                    return Ok(Check::AsUnknown);
                }
            }
            StoreError::Stale { field, applied, expected } => {
                RedisBehind { event_id, field, applied: *applied, expected: *expected }.emit()
            }
            _ => {}
        }
        self.rebuild(event_id, &error).await?;
        Ok(Check::Committed)
    }

    async fn rebuild(&self, event_id: &str, cause: &(dyn std::fmt::Display + Sync)) -> Result<(), HandlerError> {
        let Some(guard) = &self.guard else { return Err(HandlerError::transient(cause.to_string())) };
        let rebuilt = guard.rebuilder.rebuild_event(event_id).await;
        RebuildFinished { event_id, error: rebuilt.as_ref().err() }.emit();
        rebuilt.map(|_| ()).map_err(|e| HandlerError::transient_in(format!("rebuilding {event_id} after {cause}"), e))
    }

    /// Redis has no `meta` of `event_id` though `named_by` names it: writes
    /// its static keys back from PostgreSQL. `Ok(true)`: they are back (to
    /// be rebuilt from the log); `Ok(false)`: PostgreSQL does not know it
    /// or its lifetime is over, it stays unknown. A stage without a
    /// restorer answers `Ok(true)` too: the rebuild that follows fails and
    /// the batch waits, as it must (nothing says the event is not live).
    async fn restore_lost(&self, event_id: &str, named_by: &'static str) -> Result<bool, HandlerError> {
        let Some(restorer) = &self.restorer else {
            EventLost { event_id, named_by, restore: None }.emit();
            return Ok(true);
        };
        let mut conn = self.store.connection();
        let restored = restorer.restore(&mut conn, event_id, schemas::now_millis()).await;
        EventLost { event_id, named_by, restore: Some(&restored) }.emit();
        match restored {
            Ok(restore) => Ok(!restore.is_absent()),
            Err(error) => Err(HandlerError::transient_in(format!("restoring lost event {event_id}"), error)),
        }
    }

    /// Runs a script call of `event_id`: once more after a rebuild when
    /// Redis is behind the log (STALE), again and again while a rebuild
    /// holds the event (HELD, at most [`HELD_WAIT`]). `call` is told how to
    /// check the log (see [`Check`]).
    async fn call_store<T, F, Fut>(&self, event_id: &str, call: F) -> Result<T, HandlerError>
    where
        F: Fn(Check) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let since = Instant::now();
        let mut check = Check::Committed;
        let mut rebuilt = false;
        let mut held = false;
        loop {
            match call(check).await {
                Err(stale @ StoreError::Stale { .. }) if !rebuilt => {
                    check = self.on_stale(event_id, stale).await?;
                    rebuilt = true;
                }
                Err(StoreError::Held) if since.elapsed() < HELD_WAIT => {
                    if !held {
                        DecisionsHeld { event_id }.emit();
                        held = true;
                    }
                    tokio::time::sleep(HELD_POLL).await;
                }
                other => return other.map_err(HandlerError::transient),
            }
        }
    }

    /// Decodes a record by its topic and checks what the schema cannot.
    async fn decode(&self, record: &Record) -> Result<Input, HandlerError> {
        let topic = record.topic();
        let input = if topic == self.topics.survey_submitted {
            let entry: SurveySubmitted = self.codec.decode(record.payload()).await?;
            check_identity(&entry.event_id, &entry.entry_id, &entry.user_id).map_err(HandlerError::poison)?;
            Input::Entry(entry)
        } else if topic == self.topics.stock_released {
            let release: StockRelease = self.codec.decode(record.payload()).await?;
            check_identity(&release.event_id, &release.entry_id, &release.user_id).map_err(HandlerError::poison)?;
            if release.unit_no < 1 {
                return Err(HandlerError::poison(format!("unit_no {} is not a unit", release.unit_no)));
            }
            Input::Release(release)
        } else {
            return Err(HandlerError::poison(format!("unexpected topic {topic}")));
        };
        Ok(input)
    }

    /// Applies one release: `(Some(poison), _)` when it must be
    /// dead-lettered, `(_, records)` the WON decisions of the entries its
    /// unit went to (announced again when a re-run finds it done).
    async fn release(
        &self,
        item: &Item<'_>,
        committed: &CommittedMarks,
        applied: &mut BatchMarks,
    ) -> Result<(Option<HandlerError>, Vec<OutRecord>), HandlerError> {
        let Input::Release(release) = &item.input else { return Ok((None, Vec::new())) };
        let partition = item.record.partition();
        let next_offset = item.record.offset() + 1;
        let marks = Marks {
            expected: committed.expected_for(&release.event_id),
            new: vec![(marks::field(MarkKind::Release, partition), next_offset)],
        };
        let call = |_: Check| {
            self.store
                .release_marked(&release.event_id, &release.entry_id, &release.user_id, release.unit_no, &marks)
                .instrument(item.span.clone())
        };
        let mut result = self.call_store(&release.event_id, &call).instrument(item.span.clone()).await?;
        // A unit of an event Redis lost whole: restored and rebuilt, then returned.
        if result == Released::UnknownEvent && self.restorer.is_some() {
            let event_id = release.event_id.as_str();
            let restored = self.restore_lost(event_id, "release").instrument(item.span.clone()).await?;
            if restored {
                self.rebuild(event_id, &"a release of an event Redis lost").await?;
                result = self.call_store(event_id, call).instrument(item.span.clone()).await?;
            }
        }
        item.span.in_scope(|| ReleaseApplied { result: &result, unit_no: release.unit_no }.emit());
        if result != Released::UnknownEvent {
            applied.raise(MarkKind::Release, partition, &release.event_id, next_offset);
        }
        let mut promoted = Vec::new();
        for promotion in result.promotions() {
            promoted.push(self.promoted(&release.event_id, promotion, item).await?);
        }
        // A refused release changed nothing; operators look at it in the DLQ.
        let dead = match result {
            Released::Mismatch => Some(HandlerError::poison(format!(
                "entry {} of {} did not win unit {}",
                release.entry_id, release.user_id, release.unit_no
            ))),
            Released::UnknownEvent => Some(HandlerError::poison(format!("unknown event {}", release.event_id))),
            Released::Returned { .. } | Released::Promoted(_) | Released::Duplicate(_) => None,
        };
        Ok((dead, promoted))
    }

    /// The new decision of an entry a returned unit went to: WON, the same
    /// entry id that earlier lost, caused by the release.
    async fn promoted(
        &self,
        event_id: &str,
        promotion: &Promotion,
        item: &Item<'_>,
    ) -> Result<OutRecord, HandlerError> {
        let decision = StockDecision {
            event_id: event_id.to_string(),
            entry_id: promotion.entry_id.clone(),
            user_id: promotion.user_id.clone(),
            outcome: Outcome::Won,
            unit_no: Some(promotion.unit_no),
            decided_at: promotion.decided_at_ms,
            accepted_at: promotion.accepted_at_ms,
            ticket: promotion.ticket,
        };
        let record = self.encode(&decision, item).instrument(item.span.clone()).await?;
        item.span.in_scope(|| {
            DecisionMade { outcome: Outcome::Won, unit_no: Some(promotion.unit_no), user_id: &promotion.user_id }.emit()
        });
        Ok(record)
    }

    /// Decides every entry (one script call per event, batch order kept per
    /// event) and encodes one decision per entry, with its batch index.
    async fn decide(
        &self,
        items: &[Item<'_>],
        committed: &CommittedMarks,
        applied: &mut BatchMarks,
    ) -> Result<Vec<(usize, OutRecord)>, HandlerError> {
        let mut out = Vec::with_capacity(items.len());
        for (event_id, group) in by_event(items) {
            let refs: Vec<EntryRef<'_>> = group
                .iter()
                .filter_map(|item| match &item.input {
                    Input::Entry(e) => Some(EntryRef {
                        entry_id: &e.entry_id,
                        user_id: &e.user_id,
                        accepted_at_ms: e.accepted_at,
                        ticket: e.ticket,
                        hole: e.client.channel == HOLE_CHANNEL,
                    }),
                    Input::Release(_) => None,
                })
                .collect();
            let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
            for item in &group {
                let next = highest.entry(item.record.partition()).or_default();
                *next = (*next).max(item.record.offset() + 1);
            }
            let marks = Marks {
                expected: committed.expected_for(event_id),
                new: highest.iter().map(|(p, next)| (marks::field(MarkKind::Survey, *p), *next)).collect(),
            };
            let decided = self.decide_event(event_id, &refs, &marks).await?;
            if let Some(remaining) = decided.remaining {
                StockRemaining { event_id, remaining }.emit();
                // A known event: the script raised its marks.
                for (partition, next) in &highest {
                    applied.raise(MarkKind::Survey, *partition, event_id, *next);
                }
            }
            // Promotions a dead ticket of the batch made leave with the
            // batch, caused by its last record.
            if let Some(last) = group.last() {
                for promotion in &decided.promotions {
                    out.push((last.index, self.promoted(event_id, promotion, last).await?));
                }
            }
            for ((item, decision), ticket) in group.iter().zip(decided.decisions).zip(decided.tickets) {
                let Input::Entry(entry) = &item.input else { continue };
                let event = StockDecision {
                    event_id: entry.event_id.clone(),
                    entry_id: entry.entry_id.clone(),
                    user_id: entry.user_id.clone(),
                    outcome: decision.outcome,
                    unit_no: decision.unit_no,
                    // Redis' clock, the one accepted_at was stamped with.
                    decided_at: decided.decided_at_ms,
                    accepted_at: entry.accepted_at,
                    ticket,
                };
                // The decision's own span (the script call decided the
                // event's whole group at once): the decision record leaves from it.
                let span = tracing::info_span!(parent: &item.span, "stock_decide", otel.name = "stock decide", outcome = decision.outcome.as_str());
                let record = self.encode(&event, item).instrument(span.clone()).await?;
                span.in_scope(|| {
                    DecisionMade { outcome: decision.outcome, unit_no: decision.unit_no, user_id: &entry.user_id }
                        .emit()
                });
                out.push((item.index, record));
            }
        }
        Ok(out)
    }

    /// One script call for one event's entries, through [`call_store`](Self::call_store).
    /// An answer of an unknown event (no `meta`, no committed mark naming
    /// it) with an entry accepted within the keys' lifetime is checked with
    /// PostgreSQL: Redis may have lost it before any decision of it was
    /// committed. A live event is restored, rebuilt and decided again (the
    /// unknown answer wrote nothing); the same answer the second time stands.
    async fn decide_event(
        &self,
        event_id: &str,
        refs: &[EntryRef<'_>],
        marks: &Marks,
    ) -> Result<Decided, HandlerError> {
        let as_unknown = Marks { expected: Vec::new(), new: marks.new.clone() };
        let call = |check| {
            let marks = match check {
                Check::Committed => marks,
                Check::AsUnknown => &as_unknown,
            };
            self.store.decide_marked(event_id, refs, marks)
        };
        let decided: Decided = self.call_store(event_id, &call).await?;
        // Committed marks naming the event make a lost one STALE, never this
        // answer: here it was decided as unknown already (or has expired).
        let named = !marks.expected.is_empty();
        if decided.remaining.is_some() || named || self.restorer.is_none() || !any_recent(refs, decided.decided_at_ms) {
            return Ok(decided);
        }
        if !self.restore_lost(event_id, "entries").await? {
            return Ok(decided);
        }
        self.rebuild(event_id, &"entries of an event Redis lost").await?;
        self.call_store(event_id, call).await
    }

    /// Encodes a decision for the loop's (transactional) producer, caused by
    /// the item's record.
    async fn encode(&self, decision: &StockDecision, item: &Item<'_>) -> Result<OutRecord, HandlerError> {
        // Our own schema refused or the registry away: not the record's fault, retry the batch.
        encode_event(&self.codec, &self.topics, decision, item.record.context.caused())
            .await
            .map_err(|e| HandlerError::transient_in("encoding the decision", e))
    }
}

impl BatchHandler for StockHandler {
    fn handle<'a>(
        &'a self,
        batch: &'a [Record],
    ) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a {
        self.handle_batch(batch)
    }
}

/// Whether an entry was accepted within an event's keys' lifetime before
/// `now_ms` (Redis' clock): its event cannot have expired yet, so Redis not
/// knowing it means a loss (or a junk id). The decide script's own rule.
fn any_recent(refs: &[EntryRef<'_>], now_ms: i64) -> bool {
    let lifetime = platform::event_keys::GRACE_AFTER_CLOSE.as_millis() as i64;
    refs.iter().any(|entry| entry.accepted_at_ms.min(now_ms) > now_ms - lifetime)
}

/// Entries grouped by event, events in order of first appearance, entries in
/// accept-time order within each event (ties in batch order).
///
/// A batch holds several partitions' records, concatenated as fetched; first
/// come first served means by the time ingest accepted the entry, so the
/// script decides them in that order: with one unit left, the earlier entry
/// of another partition wins over a later one fetched first. (A member's own
/// records keep their order: one member, one partition, one entry id.)
fn by_event<'i, 'r>(items: &'i [Item<'r>]) -> Vec<(&'i str, Vec<&'i Item<'r>>)> {
    let mut groups: Vec<(&str, Vec<&Item<'r>>)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for item in items {
        let Input::Entry(entry) = &item.input else { continue };
        let event_id = entry.event_id.as_str();
        let slot = *position.entry(event_id).or_insert_with(|| {
            groups.push((event_id, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(item);
    }
    for (_, group) in &mut groups {
        group.sort_by_key(|item| match &item.input {
            Input::Entry(entry) => entry.accepted_at,
            Input::Release(_) => i64::MIN, // never grouped: only entries are
        });
    }
    groups
}
