//! Dead letters: the source record's key and bytes, untouched, on
//! `<topic>.dlq`, stamped with the source record's time, with headers saying
//! what failed where after the source's own.
//!
//! The error headers are Kafka Connect's (a sink connector's with
//! `errors.deadletterqueue.context.headers.enable=true`), so tools written
//! for Connect's dead letters read ours: [`header`] lists them and what each
//! holds here. Connect has no word for when a record failed; `dlq-failed-at`
//! says it. Two of firstcome's older names are still written beside their
//! Connect twins because `firstcome reconcile` and tests read them.
//!
//! They are sent like any output, by the producer's
//! [`crate::kafka::producer::RecordSender::send_raw`].

use rdkafka::message::{Header, Message};

use super::events::RecordDeadLettered;
use super::record::{DeadLetter, Record};
use crate::kafka::producer::RawRecord;
use crate::settings::KafkaSettings;

/// The dead-letter headers (values are UTF-8 text, numbers in decimal, as
/// Connect writes them).
pub mod header {
    /// The source record's topic (with the deployment's prefix).
    pub const TOPIC: &str = "__connect.errors.topic";
    /// The source record's partition.
    pub const PARTITION: &str = "__connect.errors.partition";
    /// The source record's offset.
    pub const OFFSET: &str = "__connect.errors.offset";
    /// The consumer group that failed on it (Connect: the connector).
    pub const CONNECTOR_NAME: &str = "__connect.errors.connector.name";
    /// The group member (Connect: the task number): the instance's
    /// `group.instance.id` when it has one, else its process id.
    pub const TASK_ID: &str = "__connect.errors.task.id";
    /// `VALUE_CONVERTER` (the bytes did not decode) or `TASK_PUT` (the
    /// decoded record was refused).
    pub const STAGE: &str = "__connect.errors.stage";
    /// The handler that failed (Connect: the converter or connector class),
    /// e.g. `stock_processor::handler::StockHandler`.
    pub const CLASS_NAME: &str = "__connect.errors.class.name";
    /// The kind of error, e.g. `schemas::CodecError`.
    pub const EXCEPTION_CLASS_NAME: &str = "__connect.errors.exception.class.name";
    /// The error and its causes on one line.
    pub const EXCEPTION_MESSAGE: &str = "__connect.errors.exception.message";
    /// The error, then one `Caused by:` line per cause (Rust errors carry
    /// their causes, not a stack).
    pub const EXCEPTION_STACKTRACE: &str = "__connect.errors.exception.stacktrace";
    /// firstcome's own: when the record was dead-lettered (RFC 3339).
    pub const FAILED_AT: &str = "dlq-failed-at";
    /// firstcome's older name of [`CONNECTOR_NAME`], still written.
    pub const GROUP: &str = "dlq-group";
    /// firstcome's older name of [`EXCEPTION_MESSAGE`], still written.
    pub const ERROR: &str = "dlq-error";
    /// What dead letters written before the Connect names carry instead of
    /// [`TOPIC`], [`PARTITION`] and [`OFFSET`]; read, no longer written.
    pub const OLD_SOURCE_TOPIC: &str = "dlq-source-topic";
    pub const OLD_SOURCE_PARTITION: &str = "dlq-source-partition";
    pub const OLD_SOURCE_OFFSET: &str = "dlq-source-offset";

    /// Whether `key` is an error header (a replay drops them).
    pub fn is_error_header(key: &str) -> bool {
        key.starts_with("__connect.errors.") || key.starts_with("dlq-")
    }
}

/// Who dead-letters: the group, this member of it, and the handler's type.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reporter<'a> {
    pub group: &'a str,
    pub settings: &'a KafkaSettings,
    pub handler: &'a str,
}

impl Reporter<'_> {
    fn task_id(&self) -> String {
        self.settings.group_instance_id.clone().unwrap_or_else(|| std::process::id().to_string())
    }
}

/// The records to send for the batch's dead letters.
pub(super) fn dead_letter_records(reporter: Reporter<'_>, batch: &[Record], dead: &[DeadLetter]) -> Vec<RawRecord> {
    let task_id = reporter.task_id();
    dead.iter()
        .filter_map(|d| batch.get(d.index).map(|record| (d, record)))
        .map(|(d, record)| {
            let partition = record.partition().to_string();
            let offset = record.offset().to_string();
            let failed_at = chrono::Utc::now().to_rfc3339();
            let stacktrace = stacktrace(d);
            let extra = [
                (header::TOPIC, record.topic()),
                (header::PARTITION, partition.as_str()),
                (header::OFFSET, offset.as_str()),
                (header::CONNECTOR_NAME, reporter.group),
                (header::TASK_ID, task_id.as_str()),
                (header::STAGE, d.stage),
                (header::CLASS_NAME, reporter.handler),
                (header::EXCEPTION_CLASS_NAME, d.exception),
                (header::EXCEPTION_MESSAGE, d.reason.as_str()),
                (header::EXCEPTION_STACKTRACE, stacktrace.as_str()),
                (header::FAILED_AT, failed_at.as_str()),
                (header::GROUP, reporter.group),
                (header::ERROR, d.reason.as_str()),
            ];
            let headers = extra.iter().fold(record.context.to_headers(), |headers, (key, value)| {
                headers.insert(Header { key, value: Some(value.as_bytes()) })
            });
            RawRecord {
                topic: schemas::Topics::dlq(record.topic()),
                key: record.message.key().map(<[u8]>::to_vec),
                payload: record.payload().map(<[u8]>::to_vec),
                headers,
                // The source record's time, as Kafka Connect's dead letters keep it.
                timestamp_ms: record.message.timestamp().to_millis(),
            }
        })
        .collect()
}

/// The error, then a `Caused by:` line per cause, as a Java stack trace
/// names its causes.
fn stacktrace(dead: &DeadLetter) -> String {
    let mut lines = dead.causes.iter();
    let mut out = lines.next().cloned().unwrap_or_else(|| dead.reason.clone());
    for cause in lines {
        out.push_str("\nCaused by: ");
        out.push_str(cause);
    }
    out
}

/// Logs each dead letter of the batch where it came from.
pub(super) fn log_dead_letters(group: &str, batch: &[Record], dead: &[DeadLetter]) {
    for dead in dead {
        if let Some(record) = batch.get(dead.index) {
            RecordDeadLettered { group, record, dead }.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Headers, OwnedMessage, Timestamp};

    use super::*;
    use crate::kafka::HandlerError;

    fn value<'a>(record: &'a RawRecord, key: &str) -> Option<&'a str> {
        record
            .headers
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| h.value)
            .map(|v| std::str::from_utf8(v).expect("utf-8 header"))
    }

    fn source(payload: &[u8]) -> Record {
        Record::from(OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"member-1".to_vec()),
            "p.survey-submitted".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            3,
            41,
            None,
        ))
    }

    #[test]
    fn a_dead_letter_carries_kafka_connects_error_headers_and_its_source_time() {
        let settings = KafkaSettings { group_instance_id: Some("stock-a".into()), ..Default::default() };
        let reporter = Reporter { group: "p.stock", settings: &settings, handler: "stock_processor::StockHandler" };
        let batch = [source(b"not avro")];
        let refused = HandlerError::from(schemas::CodecError::Poison("bad magic byte".into()));
        let records = dead_letter_records(reporter, &batch, &[DeadLetter::new(0, &refused)]);
        let [record] = records.as_slice() else { panic!("one dead letter: {records:?}") };

        assert_eq!(record.topic, "p.survey-submitted.dlq");
        assert_eq!(record.payload.as_deref(), Some(&b"not avro"[..]));
        assert_eq!(record.key.as_deref(), Some(&b"member-1"[..]));
        assert_eq!(record.timestamp_ms, Some(1_700_000_000_000));
        for (key, expected) in [
            (header::TOPIC, "p.survey-submitted"),
            (header::PARTITION, "3"),
            (header::OFFSET, "41"),
            (header::CONNECTOR_NAME, "p.stock"),
            (header::TASK_ID, "stock-a"),
            (header::STAGE, "VALUE_CONVERTER"),
            (header::CLASS_NAME, "stock_processor::StockHandler"),
            (header::EXCEPTION_CLASS_NAME, "schemas::CodecError"),
            (header::GROUP, "p.stock"),
        ] {
            assert_eq!(value(record, key), Some(expected), "{key}");
        }
        let message = value(record, header::EXCEPTION_MESSAGE).expect("message");
        assert!(message.contains("bad magic byte"), "{message}");
        assert_eq!(value(record, header::ERROR), Some(message));
        assert!(value(record, header::FAILED_AT).is_some());
        assert!(record.headers.iter().any(|h| h.key == crate::kafka::headers::MESSAGE_ID), "source context kept");
    }

    #[test]
    fn a_refused_record_names_the_task_and_each_cause() {
        let settings = KafkaSettings::default();
        let reporter = Reporter { group: "p.recording", settings: &settings, handler: "recorder::Handler" };
        let batch = [source(b"{}")];
        let refused = HandlerError::poison_in("entry refused", std::io::Error::other("value too long"));
        let records = dead_letter_records(reporter, &batch, &[DeadLetter::new(0, &refused)]);
        assert_eq!(value(&records[0], header::STAGE), Some("TASK_PUT"));
        assert_eq!(value(&records[0], header::EXCEPTION_CLASS_NAME), Some("platform::kafka::HandlerError::Poison"));
        assert_eq!(value(&records[0], header::TASK_ID), Some(std::process::id().to_string().as_str()));
        assert_eq!(
            value(&records[0], header::EXCEPTION_STACKTRACE),
            Some("entry refused\nCaused by: value too long"),
            "one line per cause"
        );
    }

    #[test]
    fn every_error_header_is_dropped_by_a_replay_and_no_context_header_is() {
        for key in [header::TOPIC, header::EXCEPTION_STACKTRACE, header::ERROR, header::OLD_SOURCE_OFFSET] {
            assert!(header::is_error_header(key), "{key}");
        }
        for key in ["message-id", "correlation-id", "traceparent"] {
            assert!(!header::is_error_header(key), "{key}");
        }
    }
}
