//! Holes: admitted entries whose record never reached the log.
//!
//! The admit script gives an entry its ticket before the record is produced.
//! If this instance dies between the two (or the produce fails) and the member
//! does not come back, that ticket is a hole: no record will ever claim it,
//! and the unit kept for it would stay idle while later tickets wait. Every
//! admitted entry is in `fc:{ev}:pending` until the broker acknowledged it
//! (the accept mark) or the stock stage decided it, with a deadline of
//! [`HOLE_AFTER_RESUMES`](crate::admission::HOLE_AFTER_RESUMES) ×
//! `resume_after` (a member's retry moves it). Past it, this sweep announces
//! the hole on `survey-submitted`: a record with the entry's id, member, accept
//! time and ticket, no answers, channel [`HOLE_CHANNEL`]. The stock stage
//! decides it CLOSED (or gives the answer it already gave the real record, which
//! always comes first on the member's partition) and passes the ticket on. A
//! member who comes back after that is admitted afresh, at the end of the line.
//!
//! Every ingest instance sweeps every event it knows (has served since it
//! started: members retrying after a crash bring them back); the script hands each
//! hole to one caller at a time and again only after [`ANNOUNCE_AGAIN_AFTER`]
//! while the stage has not decided it, so a lost announcement is repeated and a
//! duplicate costs the stage a stored answer.
//!
//! How long a hole can hold a unit: its deadline (2 × `resume_after`, 6 s with
//! the local defaults) + one sweep ([`SWEEP_EVERY`]) + the stage's lag.

use std::time::Duration;

use platform::event_keys::EventKeys;
use platform::kafka::{EventProducer, RecordContext};
use platform::redis::Connection;
use redis::Script;
use schemas::{ClientInfo, SurveySubmitted};
use tokio::time::{interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::state::EventCache;

/// The `client.channel` of a hole record.
pub const HOLE_CHANNEL: &str = "hole";
/// How often each instance looks for holes.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// An announced hole the stage has not decided is announced again after this.
pub const ANNOUNCE_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// Holes taken per event and sweep.
const MOST_PER_SWEEP: usize = 100;

/// One hole to announce, as the script returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    pub entry_id: String,
    pub user_id: String,
    pub accepted_at_ms: i64,
    pub ticket: i64,
}

impl Hole {
    fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split('|');
        let hole = Self {
            entry_id: parts.next()?.to_string(),
            user_id: parts.next()?.to_string(),
            accepted_at_ms: parts.next()?.parse().ok()?,
            ticket: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(hole)
    }

    /// The hole record: the entry's own ids and place, no answers.
    pub fn record(&self, event_id: &str) -> SurveySubmitted {
        SurveySubmitted {
            event_id: event_id.to_string(),
            entry_id: self.entry_id.clone(),
            user_id: self.user_id.clone(),
            answers: Vec::new(),
            submitted_at: schemas::now_millis(),
            accepted_at: self.accepted_at_ms,
            ticket: self.ticket,
            client: ClientInfo { channel: HOLE_CHANNEL.to_string(), user_agent: None },
        }
    }
}

/// Why one sweep of an event failed (the next sweep tries again).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("announcing hole {entry_id}: {source}")]
    Produce { entry_id: String, source: platform::kafka::ProduceError },
}

/// Finds and announces holes; run by the application until shutdown.
pub struct HoleSweep {
    cache: EventCache,
    redis: Connection,
    producer: EventProducer,
    script: Script,
}

impl HoleSweep {
    pub fn new(cache: EventCache, redis: Connection, producer: EventProducer) -> Self {
        Self { cache, redis, producer, script: platform::scripts::holes() }
    }

    /// Sweeps every [`SWEEP_EVERY`] until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for event_id in self.cache.known_ids() {
                match self.sweep(&event_id).await {
                    Ok(0) => {}
                    Ok(announced) => {
                        tracing::warn!(event_id, announced, "holes announced: their places pass down the line")
                    }
                    Err(error) => tracing::warn!(event_id, %error, "hole sweep failed; the next one tries again"),
                }
            }
        }
    }

    /// Announces `event_id`'s holes; how many.
    pub async fn sweep(&self, event_id: &str) -> Result<usize, SweepError> {
        let keys = EventKeys::new(event_id);
        let lines: Vec<String> = self
            .script
            .key(&keys.pending)
            .key(&keys.holes)
            .key(&keys.entries)
            .key(&keys.entered)
            .key(&keys.tickets)
            .arg(MOST_PER_SWEEP)
            .arg(ANNOUNCE_AGAIN_AFTER.as_millis() as u64)
            .invoke_async(&mut self.redis.clone())
            .await?;
        let holes: Vec<Hole> = lines.iter().filter_map(|line| Hole::parse(line)).collect();
        for hole in &holes {
            let context = RecordContext::new_root(format!("hole-{}", hole.entry_id), None);
            self.producer
                .publish(&hole.record(event_id), context)
                .await
                .map_err(|source| SweepError::Produce { entry_id: hole.entry_id.clone(), source })?;
            metrics::counter!("firstcome_ingest_holes_announced_total").increment(1);
        }
        Ok(holes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hole_line_names_the_entry_its_member_time_and_place() {
        let hole = Hole::parse("0193e7a2-0000-7000-8000-000000000001|m-7|1700000000000|12").expect("parses");
        assert_eq!((hole.user_id.as_str(), hole.accepted_at_ms, hole.ticket), ("m-7", 1_700_000_000_000, 12));
        let record = hole.record("ev");
        assert!(record.answers.is_empty());
        assert_eq!((record.client.channel.as_str(), record.ticket), (HOLE_CHANNEL, 12));
        assert_eq!(Hole::parse("e|m|x|1"), None);
        assert_eq!(Hole::parse("e|m|1|1|extra"), None);
    }
}
