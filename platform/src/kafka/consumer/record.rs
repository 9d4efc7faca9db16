//! What a service writes: the record it is handed, the handler trait, and
//! what the handler makes of a batch.

use std::collections::HashMap;
use std::future::Future;

use rdkafka::message::{Message, OwnedMessage};
use tracing::info_span;

use schemas::CodecError;

use crate::error::{BoxError, ErrorChain};
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
    /// It continues the record's `traceparent` (the producer's span), and is
    /// exported as `<service> consume` (`stock-processor consume`, …; the
    /// group's own name when it is no stage of the topology).
    pub fn span(&self, group: &str) -> tracing::Span {
        let span = info_span!(
            "record",
            otel.name = %format!("{} consume", stage_name(group)),
            otel.kind = "consumer",
            group,
            topic = self.topic(),
            partition = self.partition(),
            offset = self.offset(),
            correlation_id = %self.context.correlation_id,
            trace_id = tracing::field::Empty,
            entry_id = tracing::field::Empty,
        );
        crate::trace_context::continue_trace(&span, self.context.trace().as_ref());
        span
    }
}

/// The service of the stage whose group `group` is (behind any deployment
/// prefix), or `group` itself.
fn stage_name(group: &str) -> &str {
    schemas::topology::Stage::ALL
        .into_iter()
        .find(|stage| stage.group().is_some_and(|g| group.ends_with(g)))
        .map(|stage| stage.service())
        .unwrap_or(group)
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
    /// The error and its causes on one line (`a: b: c`).
    pub reason: String,
    /// Where it failed, in Kafka Connect's words (`__connect.errors.stage`):
    /// `VALUE_CONVERTER` when the bytes did not decode, `TASK_PUT` when the
    /// decoded record was refused.
    pub stage: &'static str,
    /// The kind of error (`__connect.errors.exception.class.name`).
    pub exception: &'static str,
    /// The error, then each cause, one per element: what a Java stack trace
    /// would tell (`__connect.errors.exception.stacktrace`).
    pub causes: Vec<String>,
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

impl DeadLetter {
    /// Dead-letters the record at `index` for `error`; its cause chain
    /// becomes the error headers (`dead_letter`).
    pub fn new(index: usize, error: &HandlerError) -> Self {
        let mut causes = Vec::new();
        let mut decoding = false;
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.cause());
        while let Some(e) = cause {
            decoding |= e.is::<CodecError>();
            causes.push(e.to_string());
            cause = e.source();
        }
        let (stage, exception) = match (decoding, error) {
            (true, _) => ("VALUE_CONVERTER", "schemas::CodecError"),
            (false, HandlerError::Poison(_)) => ("TASK_PUT", "platform::kafka::HandlerError::Poison"),
            (false, HandlerError::Transient(_)) => ("TASK_PUT", "platform::kafka::HandlerError::Transient"),
        };
        Self { index, reason: ErrorChain(error.cause()).to_string(), stage, exception, causes }
    }
}

/// Why a record, or a whole batch, could not be processed: the one
/// vocabulary every handler speaks. Each variant keeps the error that
/// caused it (read the chain with [`HandlerError::chain`]).
///
/// - [`HandlerError::Poison`]: deterministic, the same bytes fail the same
///   way on every try (undecodable, fails validation, refused for its data).
///   Handlers dead-letter such a record ([`DeadLetter::new`]) and go on with
///   the rest. Returned for a whole batch, every record of the batch is
///   dead-lettered.
/// - [`HandlerError::Transient`]: not the record's fault (a store, the
///   registry or the provider away). Returned for the batch: nothing is
///   committed and the same batch is tried again after a pause.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("poison record")]
    Poison(#[source] BoxError),
    #[error("transient failure")]
    Transient(#[source] BoxError),
}

impl HandlerError {
    pub fn poison(error: impl Into<BoxError>) -> Self {
        Self::Poison(error.into())
    }

    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// Poison, saying what was refused: `"<context>: <error>"`.
    pub fn poison_in(context: impl Into<String>, error: impl Into<BoxError>) -> Self {
        Self::Poison(Box::new(Context { context: context.into(), source: error.into() }))
    }

    /// Transient, saying what failed: `"<context>: <error>"`.
    pub fn transient_in(context: impl Into<String>, error: impl Into<BoxError>) -> Self {
        Self::Transient(Box::new(Context { context: context.into(), source: error.into() }))
    }

    pub fn is_poison(&self) -> bool {
        matches!(self, Self::Poison(_))
    }

    /// The error behind the classification.
    pub fn cause(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Self::Poison(error) | Self::Transient(error) => error.as_ref(),
        }
    }

    /// This error and its causes, for logs: `transient failure: a: b`.
    pub fn chain(&self) -> ErrorChain<'_> {
        ErrorChain(self)
    }
}

/// Decoding: the record's bytes are not a valid record ([`CodecError::Poison`])
/// is poison; anything else (the registry away; a schema refused, which says
/// something about our deployment, not the record) is transient.
impl From<CodecError> for HandlerError {
    fn from(error: CodecError) -> Self {
        match error {
            CodecError::Poison(_) => Self::poison(error),
            other => Self::transient(other),
        }
    }
}

/// What failed, in front of the error that made it fail.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
struct Context {
    context: String,
    #[source]
    source: BoxError,
}

/// A service's logic for one batch.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        batch: &'a [Record],
    ) -> impl Future<Output = Result<BatchOutcome, HandlerError>> + Send + 'a;
}
