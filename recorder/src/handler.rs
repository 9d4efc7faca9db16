//! The batch handler of the `recording` group: decode every record (poison
//! → dead letter, registry down → retry), merge per entry, write the batch in
//! one transaction. The consumer loop commits the offsets only after this
//! returns, so the transaction is committed before any offset moves.

use std::future::Future;

use platform::kafka::{BatchHandler, BatchOutcome, DeadLetter, HandlerError, Record};
use schemas::{Codec, Topics};
use tracing::Instrument;

use crate::facts::{self, Observed};
use crate::internal_events::{
    BatchFailed, BatchRecorded, BatchSplit, CannotDecodeNow, LedgerMissing, PoisonRecord, RecordDecoded,
};
use crate::store::{BatchReport, Store, StoreError};

/// Records batches into PostgreSQL.
pub struct Recorder {
    store: Store,
    codec: Codec,
    topics: Topics,
    /// The group id, for the record spans.
    group: String,
}

impl Recorder {
    /// `store` is the live projection for the service, a schema of its own
    /// for a rebuild ([`crate::rebuild`]): the same handler writes both.
    pub fn new(store: Store, codec: Codec, topics: Topics, group: String) -> Self {
        Self { store, codec, topics, group }
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
                    span.in_scope(|| RecordDecoded { kind: fact.fact.kind() }.emit());
                    observed.push((index, fact));
                }
                Err(error) if error.is_poison() => {
                    span.in_scope(|| PoisonRecord { topic: record.topic(), error: &error }.emit());
                    dead_letters.push(DeadLetter::new(index, &error));
                }
                Err(error) => {
                    // Not the record's fault: nothing is written, the whole batch is tried again.
                    span.in_scope(|| CannotDecodeNow { error: &error }.emit());
                    return Err(error);
                }
            }
        }

        let changes = facts::merge(observed.iter().map(|(_, o)| o.clone()));
        let report = match self.store.record(&changes).await {
            Ok(report) => report,
            Err(error) if error.is_deterministic() => {
                BatchSplit { records: observed.len(), error: &error }.emit();
                self.record_one_by_one(batch, &observed, &mut dead_letters).await?
            }
            Err(error) => {
                BatchFailed { error: &error }.emit();
                return Err(HandlerError::transient_in("recording the batch", error));
            }
        };

        for (event_id, moved) in &report.moved {
            if !moved.in_ledger {
                LedgerMissing { event_id, issued: moved.issued, returned: moved.returned }.emit();
            }
        }
        BatchRecorded { records: batch.len(), report: &report }.emit();
        Ok(BatchOutcome { produce: Vec::new(), dead_letters, ..Default::default() })
    }

    /// The batch write was refused for its data: one record's value or
    /// constraint violation must not block its partition forever. Each record
    /// is written in a transaction of its own, in batch order; the ones the
    /// database still refuses for their data (class 22/23) are dead-lettered
    /// and the rest is recorded, so the batch can be committed. Records that
    /// failed get one more try after the others are in, since a constraint
    /// may depend on the order the records arrive in (a WON that only fits
    /// after the FAILED that returned its unit). A transient error fails the
    /// batch as usual; what was written by then is written again harmlessly
    /// on the retry (every statement is idempotent).
    async fn record_one_by_one(
        &self,
        batch: &[Record],
        observed: &[(usize, Observed)],
        dead_letters: &mut Vec<DeadLetter>,
    ) -> Result<BatchReport, HandlerError> {
        let mut report = BatchReport::default();
        let mut refused: Vec<(usize, &Observed, StoreError)> = Vec::new();
        for (index, fact) in observed {
            match self.record_one(fact).await? {
                Single::Written(written) => report.absorb(written),
                Single::Refused(error) => refused.push((*index, fact, error)),
            }
        }
        let written_any = refused.len() < observed.len();
        if written_any && !refused.is_empty() {
            let mut still = Vec::new();
            for (index, fact, _) in refused {
                match self.record_one(fact).await? {
                    Single::Written(written) => report.absorb(written),
                    Single::Refused(error) => still.push((index, fact, error)),
                }
            }
            refused = still;
        }
        for (index, fact, error) in refused {
            let Some(record) = batch.get(index) else { continue };
            let span = record.span(&self.group);
            span.record("entry_id", tracing::field::display(fact.key.entry_id));
            let error = HandlerError::poison_in("the database refused the record", error);
            span.in_scope(|| PoisonRecord { topic: record.topic(), error: &error }.emit());
            dead_letters.push(DeadLetter::new(index, &error));
        }
        Ok(report)
    }

    /// Writes one record in its own transaction; a transient error fails the batch.
    async fn record_one(&self, fact: &Observed) -> Result<Single, HandlerError> {
        match self.store.record(&facts::merge([fact.clone()])).await {
            Ok(report) => Ok(Single::Written(report)),
            Err(error) if error.is_deterministic() => Ok(Single::Refused(error)),
            Err(error) => {
                BatchFailed { error: &error }.emit();
                Err(HandlerError::transient_in("recording a record", error))
            }
        }
    }
}

/// How the write of a single record ended.
enum Single {
    Written(BatchReport),
    /// Refused for its data (SQLSTATE class 22/23).
    Refused(StoreError),
}

impl BatchHandler for Recorder {
    fn handle<'a>(
        &'a self,
        batch: &'a [Record],
    ) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a {
        self.record_batch(batch)
    }
}
