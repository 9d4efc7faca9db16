//! The batch handler of the `recording` group: decode every record (poison
//! → dead letter, registry down → retry), merge per entry, write the batch in
//! one transaction. The consumer loop commits the offsets only after this
//! returns, so the transaction is committed before any offset moves.

use std::collections::HashMap;
use std::future::Future;

use deadpool_postgres::Pool;
use platform::kafka::{BatchHandler, BatchOutcome, DeadLetter, HandlerError, Record};
use schemas::{Codec, Topics};
use tracing::Instrument;

use crate::facts::{self, DecodeError};
use crate::internal_events::{BatchFailed, BatchRecorded, DuplicateMemberEntry, LedgerMissing, PoisonRecord};
use crate::store;

/// Records batches into PostgreSQL.
pub struct Recorder {
    pool: Pool,
    codec: Codec,
    topics: Topics,
    /// The group id, for the record spans.
    group: String,
}

impl Recorder {
    pub fn new(pool: Pool, codec: Codec, topics: Topics, group: String) -> Self {
        Self { pool, codec, topics, group }
    }

    /// The topics this handler understands, in the order subscribed.
    pub fn topics(&self) -> [&str; 3] {
        [&self.topics.survey_submitted, &self.topics.stock_decided, &self.topics.gift_dispatched]
    }

    async fn record_batch(&self, batch: &[Record]) -> Result<BatchOutcome, HandlerError> {
        let mut observed = Vec::with_capacity(batch.len());
        let mut dead_letters = Vec::new();
        for (index, record) in batch.iter().enumerate() {
            let span = record.span(&self.group);
            let decoded = facts::decode(&self.codec, &self.topics, record).instrument(span.clone()).await;
            match decoded {
                Ok(fact) => {
                    span.record("entry_id", tracing::field::display(fact.key.entry_id));
                    span.in_scope(|| tracing::trace!(kind = fact.fact.kind(), "decoded"));
                    metrics::counter!("firstcome_recorder_records_total", "kind" => fact.fact.kind()).increment(1);
                    observed.push(fact);
                }
                Err(DecodeError::Poison(reason)) => {
                    span.in_scope(|| PoisonRecord { topic: record.topic(), reason: &reason }.emit());
                    dead_letters.push(DeadLetter { index, reason });
                }
                Err(DecodeError::Unavailable(reason)) => {
                    // Not the record's fault: nothing is written, the whole batch is tried again.
                    span.in_scope(|| tracing::warn!(%reason, "cannot decode now"));
                    return Err(HandlerError(format!("decoding: {reason}")));
                }
            }
        }

        let changes = facts::merge(observed);
        let report = match store::record(&self.pool, &changes).await {
            Ok(report) => report,
            Err(error) => {
                BatchFailed { error: &error }.emit();
                return Err(HandlerError::new(error));
            }
        };

        if !report.duplicate_members.is_empty() {
            let keys: HashMap<_, _> = changes.iter().map(|c| (c.key.entry_id, &c.key)).collect();
            for entry_id in &report.duplicate_members {
                if let Some(key) = keys.get(entry_id) {
                    DuplicateMemberEntry { key }.emit();
                }
            }
        }
        for (event_id, moved) in &report.moved {
            if !moved.in_ledger {
                LedgerMissing { event_id, issued: moved.issued, returned: moved.returned }.emit();
            }
        }
        BatchRecorded { records: batch.len(), report: &report }.emit();
        Ok(BatchOutcome { produce: Vec::new(), dead_letters })
    }
}

impl BatchHandler for Recorder {
    fn handle<'a>(&'a self, batch: &'a [Record]) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a {
        self.record_batch(batch)
    }
}
