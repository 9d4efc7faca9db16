//! Transactional delivery (Kafka→Kafka stages): outputs, dead letters and
//! input offsets commit together in one Kafka transaction. On an abort the
//! consumer is rewound to the committed offsets and the batch runs again
//! (with what was held for the timestamp order: it comes again too).
//!
//! Every blocking transactional call is bounded here, not only by the
//! timeout handed to librdkafka: librdkafka (2.12) ignores the timeout of
//! `send_offsets_to_transaction` while it looks for a group coordinator that
//! was lost (a cached coordinator whose broker died), and the call then
//! waits, silently, for as long as that lasts. A call past its bound is left
//! to finish on its own thread; the producer takes no other transactional
//! call meanwhile, so the loop ends and is rebuilt with a new producer,
//! whose `init_transactions` fences this one.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use super::events::{TransactionAborted, TransactionCallStuck};
use super::{blocking, ConsumerError, ConsumerLoop, CALL_TIMEOUT};
use crate::kafka::producer::{is_refused_for_good, OutRecord, RawRecord};

impl ConsumerLoop {
    /// Outputs, dead letters and input offsets in one transaction. A fenced
    /// or fatally failed producer ends the loop ([`ConsumerError::Fatal`]);
    /// a record the broker refused for good aborts the transaction and ends
    /// the loop with the cause ([`ConsumerError::Refused`]); any other
    /// failure aborts the transaction and rewinds.
    pub(super) async fn commit_transaction(
        &self,
        records: &[OutRecord],
        dead: &[RawRecord],
        offsets: TopicPartitionList,
    ) -> Result<(), ConsumerError> {
        let result = self.try_transaction(records, dead, offsets).await;
        match result {
            Ok(()) => Ok(()),
            Err(Failure::Stuck { call, waited }) => {
                TransactionCallStuck { group: &self.group, call, waited }.emit();
                Err(ConsumerError::Fatal(format!("{call} did not return within {waited:?}")))
            }
            Err(Failure::Kafka(error)) => {
                let fatal = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::Fenced)
                        | Some(RDKafkaErrorCode::ProducerFenced)
                        | Some(RDKafkaErrorCode::InvalidProducerEpoch)
                ) || is_fatal(&error);
                TransactionAborted { group: &self.group, error: &error, fatal }.emit();
                if fatal {
                    return Err(ConsumerError::Fatal(error.to_string()));
                }
                let producer = self.sender.inner().clone();
                match bounded("abort_transaction", move || producer.abort_transaction(CALL_TIMEOUT)).await {
                    Ok(()) => {}
                    Err(Failure::Stuck { call, waited }) => {
                        TransactionCallStuck { group: &self.group, call, waited }.emit();
                        return Err(ConsumerError::Fatal(format!("{call} did not return within {waited:?}")));
                    }
                    Err(Failure::Kafka(e) | Failure::Refused { error: e, .. }) => {
                        return Err(ConsumerError::Fatal(format!("abort failed: {e}")))
                    }
                }
                self.rewind().await
            }
            Err(Failure::Refused { topic, error }) => {
                TransactionAborted { group: &self.group, error: &error, fatal: false }.emit();
                let producer = self.sender.inner().clone();
                if let Err(Failure::Stuck { call, waited }) =
                    bounded("abort_transaction", move || producer.abort_transaction(CALL_TIMEOUT)).await
                {
                    TransactionCallStuck { group: &self.group, call, waited }.emit();
                }
                Err(ConsumerError::Refused { topic, error })
            }
        }
    }

    async fn try_transaction(
        &self,
        records: &[OutRecord],
        dead: &[RawRecord],
        offsets: TopicPartitionList,
    ) -> Result<(), Failure> {
        let producer = self.sender.inner().clone();
        blocking(move || producer.begin_transaction()).await?;
        let outputs = futures::future::join_all(records.iter().map(|r| self.sender.send(r)));
        let dead_letters = futures::future::join_all(dead.iter().map(|d| self.sender.send_raw(d)));
        let (outputs, dead_letters) = futures::join!(outputs, dead_letters);
        let topics = records.iter().map(|r| &r.topic).chain(dead.iter().map(|d| &d.topic));
        for (result, topic) in outputs.into_iter().chain(dead_letters).zip(topics) {
            match result {
                Err(error) if is_refused_for_good(&error) => {
                    return Err(Failure::Refused { topic: topic.clone(), error })
                }
                other => {
                    other?;
                }
            }
        }
        // No metadata means the consumer is not (yet) in the group: abort and retry.
        let metadata =
            self.consumer.group_metadata().ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::InvalidGroupId))?;
        let producer = self.sender.inner().clone();
        bounded("send_offsets_to_transaction", move || {
            producer.send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)
        })
        .await?;
        let producer = self.sender.inner().clone();
        bounded("commit_transaction", move || producer.commit_transaction(CALL_TIMEOUT)).await
    }

    /// After an abort: seek every assigned partition back to its committed
    /// offset so the aborted batch is consumed again.
    async fn rewind(&self) -> Result<(), ConsumerError> {
        // Held records come again from the committed offsets.
        self.held(|held| held.clear());
        let consumer = self.consumer.clone();
        blocking(move || {
            let committed = consumer.committed(CALL_TIMEOUT)?;
            let mut positions = TopicPartitionList::with_capacity(committed.count());
            for element in committed.elements() {
                // Nothing committed yet: the start of the partition (auto.offset.reset).
                let offset = match element.offset() {
                    Offset::Invalid => Offset::Beginning,
                    offset => offset,
                };
                positions.add_partition_offset(element.topic(), element.partition(), offset)?;
            }
            consumer.seek_partitions(positions, CALL_TIMEOUT)?;
            Ok(())
        })
        .await
        .map_err(ConsumerError::from)
    }
}

/// How much longer than its timeout a blocking transactional call is waited for.
const STUCK_GRACE: Duration = Duration::from_secs(1);

/// Runs a blocking transactional call (given [`CALL_TIMEOUT`]) off the async
/// workers and waits for it at most [`CALL_TIMEOUT`] + [`STUCK_GRACE`] (see
/// the module doc).
async fn bounded<T: Send + 'static>(
    call: &'static str,
    run: impl FnOnce() -> KafkaResult<T> + Send + 'static,
) -> Result<T, Failure> {
    let started = Instant::now();
    match tokio::time::timeout(CALL_TIMEOUT + STUCK_GRACE, blocking(run)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Failure::Stuck { call, waited: started.elapsed() }),
    }
}

/// Why a transaction did not commit.
enum Failure {
    Kafka(KafkaError),
    /// An output or dead letter the broker refused for good.
    Refused {
        topic: String,
        error: KafkaError,
    },
    /// A blocking call overran its timeout; it is still running.
    Stuck {
        call: &'static str,
        waited: Duration,
    },
}

impl From<KafkaError> for Failure {
    fn from(error: KafkaError) -> Self {
        Failure::Kafka(error)
    }
}

fn is_fatal(error: &KafkaError) -> bool {
    match error {
        KafkaError::Transaction(e) => e.is_fatal(),
        _ => false,
    }
}
