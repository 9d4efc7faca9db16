//! The waiting room: admission control in front of the admit script.
//!
//! When `waiting_room.enabled`, every entry request of a member who may still
//! enter asks `platform/lua/waiting_room.lua` (via `platform::scripts`) for its
//! turn first. The room lets members through at `rate_per_sec` for the whole
//! deployment (the gate and its token bucket live in Redis, so every ingest
//! instance paces the same line); beyond it the member is answered 429 with
//! Retry-After and their position in a line kept in Redis (a sorted set of
//! tickets by arrival), which the survey page shows moving forward, instead
//! of a bare 503. Arrivals before `open_at` join a pre-queue (425 with their
//! place) that becomes the head of the line at the opening instant, in
//! arrival order (`fifo`) or shuffled (`shuffle`, the default): the fastest
//! connection does not win on speed alone.
//!
//! Who never waits: a member who already entered (they get their 409 and
//! entry at once), a non-buyer (403 at once), and everyone once the event
//! sold out or closed (410 at once; the handler skips the room then).
//!
//! Keys (one `{event_id}` hash tag, expiring with the event):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `fc:{ev}:room` | hash | `seq` (last ticket), `served` (the gate: tickets let through), `tokens`, `ts`, `opened_at`, `seed`, `mode`, `pre_queued` |
//! | `fc:{ev}:line` | sorted set | member → ticket, until the member passes |
//! | `fc:{ev}:prequeue` | sorted set | member → arrival ms, before the opening |
//! | `fc:{ev}:passed` | hash | member → ms they passed (a retry after a 503 does not queue again) |

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::auth::MemberId;

/// How the pre-queue is ordered at the opening instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PreQueueOrder {
    /// By arrival: the earliest request before the opening goes first.
    Fifo,
    /// A draw at the opening (sha1 of a seed made then and the member id).
    #[default]
    Shuffle,
}

impl PreQueueOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            PreQueueOrder::Fifo => "fifo",
            PreQueueOrder::Shuffle => "shuffle",
        }
    }
}

/// `waiting_room.*` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WaitingRoomSettings {
    /// Off by default; `firstcome-lab demo --waiting-room` and the drill turn it on
    /// (`FIRSTCOME_WAITING_ROOM__ENABLED=true`).
    pub enabled: bool,
    /// Members let through per second per event, shared by every ingest
    /// instance (every instance must be given the same value).
    pub rate_per_sec: u32,
    /// Most members let through at once (the bucket's size; at the opening
    /// the first `burst` tickets pass at once).
    pub burst: u32,
    /// `shuffle` (default) or `fifo`.
    pub pre_queue: PreQueueOrder,
}

impl Default for WaitingRoomSettings {
    fn default() -> Self {
        Self { enabled: false, rate_per_sec: 200, burst: 200, pre_queue: PreQueueOrder::Shuffle }
    }
}

impl WaitingRoomSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.rate_per_sec == 0 || self.burst == 0 {
            return Err("waiting_room.rate_per_sec and waiting_room.burst must be > 0".into());
        }
        Ok(())
    }
}

/// The keys of an event's waiting room.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    pub room: String,
    pub line: String,
    pub prequeue: String,
    pub passed: String,
}

impl RoomKeys {
    pub fn new(event_id: &str) -> Self {
        let k = |name: &str| format!("fc:{{{event_id}}}:{name}");
        Self { room: k("room"), line: k("line"), prequeue: k("prequeue"), passed: k("passed") }
    }
}

/// A member's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// Go on to the admit script.
    Pass,
    /// Before the opening: in the pre-queue at `place`.
    PreQueue(Place),
    /// After the opening: `place.position` tickets ahead of the gate.
    Wait(Place),
}

/// Where a member stands in the line, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Place {
    /// 1 = next through the gate (pre-queue: arrival rank; under `shuffle`
    /// the real place is drawn at the opening).
    pub position: i64,
    /// Members in the line (pre-queue: in the pre-queue) not yet let through.
    pub waiting: i64,
    /// When to ask again.
    #[serde(skip)]
    pub retry_after: Duration,
    /// `fifo` or `shuffle` (how the pre-queue is ordered at the opening).
    pub order: &'static str,
}

/// The line as the dashboard shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LineState {
    pub pre_queue: i64,
    /// Tickets not yet let through.
    pub waiting: i64,
    /// Tickets let through.
    pub served: i64,
    /// Members who passed the room.
    pub passed: i64,
    pub opened: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected waiting room answer {0:?}")]
    Unexpected(String),
}

/// The room's script and settings; cheap to clone.
#[derive(Debug, Clone)]
pub struct WaitingRoom {
    script: Arc<Script>,
    settings: Arc<WaitingRoomSettings>,
}

impl WaitingRoom {
    pub fn new(settings: WaitingRoomSettings) -> Self {
        Self { script: Arc::new(platform::scripts::waiting_room()), settings: Arc::new(settings) }
    }

    pub fn settings(&self) -> &WaitingRoomSettings {
        &self.settings
    }

    /// Asks for `member`'s turn in `event_id`'s line.
    pub async fn turn<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        member: &MemberId,
    ) -> Result<Turn, RoomError> {
        let keys = platform::event_keys::EventKeys::new(event_id);
        let room = RoomKeys::new(event_id);
        let seed = format!("{:032x}", rand::random::<u128>());
        let (code, position, waiting, retry_ms): (String, i64, i64, i64) = self
            .script
            .key(&keys.meta)
            .key(&keys.eligible)
            .key(&keys.entered)
            .key(&room.room)
            .key(&room.line)
            .key(&room.prequeue)
            .key(&room.passed)
            .arg(member.as_str())
            .arg(self.settings.rate_per_sec)
            .arg(self.settings.burst)
            .arg(self.settings.pre_queue.as_str())
            .arg(seed)
            .invoke_async(conn)
            .await?;
        // The line's length as this call left it (the operations dashboard's "waiting line").
        metrics::gauge!("firstcome_ingest_waiting_line", "event_id" => event_id.to_string()).set(waiting.max(0) as f64);
        let place = Place {
            position,
            waiting,
            retry_after: Duration::from_millis(retry_ms.max(0) as u64),
            order: self.settings.pre_queue.as_str(),
        };
        match code.as_str() {
            "pass" => Ok(Turn::Pass),
            "pre_queue" => {
                metrics::counter!("firstcome_ingest_waiting_room_total", "turn" => "pre_queue").increment(1);
                Ok(Turn::PreQueue(place))
            }
            "wait" => {
                metrics::counter!("firstcome_ingest_waiting_room_total", "turn" => "wait").increment(1);
                Ok(Turn::Wait(place))
            }
            other => Err(RoomError::Unexpected(other.to_string())),
        }
    }
}

/// The line of `event_id` (read only; one pipelined round trip).
pub async fn line_state<C: ConnectionLike + Send>(conn: &mut C, event_id: &str) -> redis::RedisResult<LineState> {
    /// `HMGET room seq served opened_at`, `ZCARD prequeue`, `HLEN passed`.
    type Reply = ((Option<i64>, Option<i64>, Option<String>), i64, i64);
    let keys = RoomKeys::new(event_id);
    let ((seq, served, opened), pre_queue, passed): Reply = redis::pipe()
        .cmd("HMGET")
        .arg(&keys.room)
        .arg("seq")
        .arg("served")
        .arg("opened_at")
        .cmd("ZCARD")
        .arg(&keys.prequeue)
        .cmd("HLEN")
        .arg(&keys.passed)
        .query_async(conn)
        .await?;
    let (seq, served) = (seq.unwrap_or(0), served.unwrap_or(0));
    Ok(LineState { pre_queue, waiting: (seq - served).max(0), served, passed, opened: opened.is_some() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_off_by_default_and_shuffles_the_pre_queue() {
        let settings = WaitingRoomSettings::default();
        assert!(!settings.enabled);
        assert_eq!(settings.pre_queue, PreQueueOrder::Shuffle);
        assert!(settings.validate().is_ok());
        assert!(WaitingRoomSettings { rate_per_sec: 0, ..Default::default() }.validate().is_err());
    }

    #[test]
    fn the_room_keys_share_the_event_hash_tag() {
        let keys = RoomKeys::new("ev-1");
        for key in [&keys.room, &keys.line, &keys.prequeue, &keys.passed] {
            assert!(key.starts_with("fc:{ev-1}:"), "{key}");
        }
    }
}
