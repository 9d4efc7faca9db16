//! What a service writes: the record it is handed, the handler trait, and
//! what the handler makes of a batch.

use std::collections::HashMap;
use std::future::Future;

use rdkafka::message::{Message, OwnedMessage};
use tracing::info_span;

use crate::kafka::headers::RecordContext;
use crate::kafka::producer::OutRecord;

/// One consumed record, owned, with its parsed headers.
#[derive(Debug, Clone)]
pub struct Record {
    pub message: OwnedMessage,
    pub context: RecordContext,
}

impl Record {
    pub fn topic(&self) -> &str {
        self.message.topic()
    }
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }
    pub fn key(&self) -> Option<&str> {
        self.message.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The span for work on this record; `entry_id` is filled once decoded.
    pub fn span(&self, group: &str) -> tracing::Span {
        info_span!(
            "record",
            group,
            topic = self.topic(),
            partition = self.partition(),
            offset = self.offset(),
            correlation_id = %self.context.correlation_id,
            trace_id = %self.context.trace_id(),
            entry_id = tracing::field::Empty,
        )
    }
}

impl From<OwnedMessage> for Record {
    fn from(message: OwnedMessage) -> Self {
        let context = RecordContext::from_headers(message.headers());
        Record { message, context }
    }
}

/// A record of the batch the handler cannot process, ever (undecodable,
/// fails validation): it goes to `<topic>.dlq` and the partition moves on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Position of the record in the batch.
    pub index: usize,
    pub reason: String,
}

/// What a handler made of a batch.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Records to publish (in the same transaction in transactional mode).
    pub produce: Vec<OutRecord>,
    pub dead_letters: Vec<DeadLetter>,
    /// Offset metadata committed with the batch's next offset, per
    /// (topic, partition) of the batch; a partition not named here commits
    /// empty metadata. The group coordinator keeps it with the offset (the
    /// broker caps it at `offset.metadata.max.bytes`, 4 KiB by default), so a
    /// stage can record there what it applied up to that offset.
    pub offset_metadata: HashMap<(String, i32), String>,
}

/// The batch could not be processed now (database down, registry down):
/// nothing is committed and the same batch is tried again after a pause.
#[derive(Debug, thiserror::Error)]
#[error("transient failure: {0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    pub fn new(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// A service's logic for one batch.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        batch: &'a [Record],
    ) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a;
}
