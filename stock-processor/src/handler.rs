//! The batch handler of group `stock`: decode, validate, return released
//! units, decide entries (one script call per event), encode the decisions.
//!
//! The consumer loop commits the outputs, the dead letters and the input
//! offsets in one Kafka transaction; when it aborts, the same records come
//! again. Every Redis change here is keyed by entry id (stored decisions, the
//! released set), so the re-run gives the same answers and changes nothing.

use std::collections::HashMap;
use std::future::Future;

use platform::kafka::{BatchHandler, BatchOutcome, DeadLetter, HandlerError, OutRecord, Record};
use schemas::{check_identity, Codec, CodecError, Event, StockDecision, StockRelease, SurveySubmitted, Topics};
use tracing::{Instrument, Span};

use crate::events::{DecisionMade, RecordRejected, ReleaseApplied, StockRemaining};
use crate::store::{EntryRef, Released, StockStore};

/// Decides entries and applies releases for one consumer group member.
pub struct StockHandler {
    store: StockStore,
    codec: Codec,
    topics: Topics,
    group: String,
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

/// Why a record was not turned into an input.
enum Refusal {
    /// It can never be processed: dead-letter it.
    Poison(String),
    /// The registry is away: try the whole batch again later.
    Retry(CodecError),
}

impl StockHandler {
    pub fn new(store: StockStore, codec: Codec, topics: Topics, group: String) -> Self {
        Self { store, codec, topics, group }
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
                Err(Refusal::Poison(reason)) => {
                    span.in_scope(|| RecordRejected { reason: &reason }.emit());
                    outcome.dead_letters.push(DeadLetter { index, reason });
                }
                Err(Refusal::Retry(error)) => return Err(HandlerError::new(error)),
            }
        }

        // Releases first: a unit returned in this batch can go to an entry of it.
        // No local clock here: the scripts judge time on Redis' clock.
        for item in &releases {
            if let Some(reason) = self.release(item).await? {
                outcome.dead_letters.push(DeadLetter { index: item.index, reason });
            }
        }
        outcome.produce = self.decide(&entries).await?;
        Ok(outcome)
    }

    /// Decodes a record by its topic and checks what the schema cannot.
    async fn decode(&self, record: &Record) -> Result<Input, Refusal> {
        let topic = record.topic();
        let input = if topic == self.topics.survey_submitted {
            let entry: SurveySubmitted = self.codec.decode(record.payload()).await.map_err(refusal)?;
            check_identity(&entry.event_id, &entry.entry_id, &entry.user_id).map_err(Refusal::Poison)?;
            Input::Entry(entry)
        } else if topic == self.topics.stock_released {
            let release: StockRelease = self.codec.decode(record.payload()).await.map_err(refusal)?;
            check_identity(&release.event_id, &release.entry_id, &release.user_id).map_err(Refusal::Poison)?;
            if release.unit_no < 1 {
                return Err(Refusal::Poison(format!("unit_no {} is not a unit", release.unit_no)));
            }
            Input::Release(release)
        } else {
            return Err(Refusal::Poison(format!("unexpected topic {topic}")));
        };
        Ok(input)
    }

    /// Applies one release; `Some(reason)` when it must be dead-lettered.
    async fn release(&self, item: &Item<'_>) -> Result<Option<String>, HandlerError> {
        let Input::Release(release) = &item.input else { return Ok(None) };
        let result = self
            .store
            .release(&release.event_id, &release.entry_id, &release.user_id, release.unit_no)
            .instrument(item.span.clone())
            .await
            .map_err(HandlerError::new)?;
        item.span.in_scope(|| ReleaseApplied { result, unit_no: release.unit_no }.emit());
        // A refused release changed nothing; operators look at it in the DLQ.
        Ok(match result {
            Released::Mismatch => Some(format!(
                "entry {} of {} did not win unit {}",
                release.entry_id, release.user_id, release.unit_no
            )),
            Released::UnknownEvent => Some(format!("unknown event {}", release.event_id)),
            Released::Returned { .. } | Released::Duplicate => None,
        })
    }

    /// Decides every entry (one script call per event, batch order kept per
    /// event) and encodes one decision per entry, in batch order.
    async fn decide(&self, items: &[Item<'_>]) -> Result<Vec<OutRecord>, HandlerError> {
        let mut out = Vec::with_capacity(items.len());
        for (event_id, group) in by_event(items) {
            let refs: Vec<EntryRef<'_>> = group
                .iter()
                .filter_map(|item| match &item.input {
                    Input::Entry(e) => Some(EntryRef {
                        entry_id: &e.entry_id,
                        user_id: &e.user_id,
                        accepted_at_ms: e.accepted_at,
                    }),
                    Input::Release(_) => None,
                })
                .collect();
            let decided = self.store.decide(event_id, &refs).await.map_err(HandlerError::new)?;
            if let Some(remaining) = decided.remaining {
                StockRemaining { event_id, remaining }.emit();
            }
            for (item, decision) in group.iter().zip(decided.decisions) {
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
                };
                let record = self.encode(&event, item).instrument(item.span.clone()).await?;
                item.span.in_scope(|| {
                    DecisionMade { outcome: decision.outcome, unit_no: decision.unit_no, user_id: &entry.user_id }.emit()
                });
                out.push((item.index, record));
            }
        }
        // Per-key order: a member's decisions leave in the order the entries came.
        out.sort_by_key(|(index, _)| *index);
        Ok(out.into_iter().map(|(_, record)| record).collect())
    }

    /// platform's `EventProducer::encode` does the same, but needs a producer;
    /// this stage's producer is the consumer loop's transactional one, so it
    /// encodes with the codec and hands the loop an `OutRecord`.
    async fn encode(&self, decision: &StockDecision, item: &Item<'_>) -> Result<OutRecord, HandlerError> {
        let topic = StockDecision::topic(&self.topics).to_string();
        // Our own schema refused or the registry away: not the record's fault, retry the batch.
        let payload = self.codec.encode(&topic, decision).await.map_err(HandlerError::new)?;
        Ok(OutRecord {
            topic,
            key: decision.key().to_string(),
            payload,
            context: item.record.context.caused(),
        })
    }
}

impl BatchHandler for StockHandler {
    fn handle<'a>(&'a self, batch: &'a [Record]) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a {
        self.handle_batch(batch)
    }
}

fn refusal(error: CodecError) -> Refusal {
    match error.is_retriable() {
        true => Refusal::Retry(error),
        false => Refusal::Poison(error.to_string()),
    }
}

/// Entries grouped by event, events in order of first appearance, entries in
/// batch order within each event.
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
    groups
}
