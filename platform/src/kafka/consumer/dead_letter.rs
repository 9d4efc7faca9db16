//! Dead letters: the source record's key and bytes, untouched, on
//! `<topic>.dlq`, with headers saying what failed where (`dlq-error`,
//! `dlq-source-topic`/`-partition`/`-offset`, `dlq-group`, `dlq-failed-at`)
//! after the source's own. They are sent like any output, by the producer's
//! [`crate::kafka::producer::RecordSender::send_raw`].

use rdkafka::message::{Header, Message};

use super::events::RecordDeadLettered;
use super::record::{DeadLetter, Record};
use crate::kafka::producer::RawRecord;

/// The records to send for the batch's dead letters.
pub(super) fn dead_letter_records(group: &str, batch: &[Record], dead: &[DeadLetter]) -> Vec<RawRecord> {
    dead.iter()
        .filter_map(|d| batch.get(d.index).map(|record| (d, record)))
        .map(|(d, record)| {
            let partition = record.partition().to_string();
            let offset = record.offset().to_string();
            let failed_at = chrono::Utc::now().to_rfc3339();
            let extra = [
                ("dlq-error", d.reason.as_str()),
                ("dlq-source-topic", record.topic()),
                ("dlq-source-partition", partition.as_str()),
                ("dlq-source-offset", offset.as_str()),
                ("dlq-group", group),
                ("dlq-failed-at", failed_at.as_str()),
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

/// Logs each dead letter of the batch where it came from.
pub(super) fn log_dead_letters(group: &str, batch: &[Record], dead: &[DeadLetter]) {
    for dead in dead {
        if let Some(record) = batch.get(dead.index) {
            RecordDeadLettered { group, record, dead }.emit();
        }
    }
}
