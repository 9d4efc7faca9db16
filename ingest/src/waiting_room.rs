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
//! connection does not win on speed alone. The shuffle can be checked by
//! anyone (`crate::shuffle`): its seed is drawn and committed to (its
//! SHA-256 on the event's public state) before anyone queues — by
//! `firstcome event create`, which also records it in PostgreSQL, else by the
//! first instance that sees the room — and revealed once the event opens;
//! `firstcome verify shuffle` replays the draw.
//!
//! Who never waits: a member who already entered (they get their 409 and
//! entry at once), a non-buyer (403 at once), and everyone once the event
//! sold out or closed (410 at once; the handler skips the room then).
//!
//! Keys (one `{event_id}` hash tag, expiring with the event):
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `fc:{ev}:room` | hash | `seq` (last ticket), `served` (the gate: tickets let through), `tokens`, `ts`, `opened_at`, `seed`, `commitment`, `mode`, `pre_queued`, `rate`, `burst` |
//! | `fc:{ev}:line` | sorted set | member → ticket, until the member passes |
//! | `fc:{ev}:prequeue` | sorted set | member → arrival ms, before the opening |
//! | `fc:{ev}:passed` | hash | member → ms they passed (a retry after a 503 does not queue again) |
//! | `fc:{ev}:draws` | sorted set | `<draw>\|<member>` (score 0: lexicographic), the pre-queue's draws, kept for the replay |

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
    /// A draw at the opening (SHA-256 of the committed seed and the member
    /// id, `crate::shuffle`).
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
    pub draws: String,
}

impl RoomKeys {
    pub fn new(event_id: &str) -> Self {
        let k = |name: &str| format!("fc:{{{event_id}}}:{name}");
        Self { room: k("room"), line: k("line"), prequeue: k("prequeue"), passed: k("passed"), draws: k("draws") }
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

/// An event's committed shuffle seed and its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub seed: String,
    /// `hex(SHA-256(seed))`; empty for a room opened before seeds were committed.
    pub commitment: String,
}

/// The shuffle as the event's public state shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicShuffle {
    pub mode: &'static str,
    pub commitment: String,
    /// Revealed once the event has opened (the pre-queue is closed then).
    pub seed: Option<String>,
}

/// Events whose committed seed an instance remembers at most (then it
/// forgets them all and asks Redis again: one call per event).
const SEEDS_KEPT: usize = 1_024;

/// Sets the event's seed and commitment unless it has one; answers the
/// room's. Expires with the event's meta, like every room key.
/// KEYS: meta, room. ARGV: seed, commitment.
const COMMIT_SEED: &str = r"
local held = redis.call('HMGET', KEYS[2], 'seed', 'commitment')
if held[1] then
  return {held[1], held[2] or ''}
end
redis.call('HSET', KEYS[2], 'seed', ARGV[1], 'commitment', ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('PTTL', KEYS[2]) == -1 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {ARGV[1], ARGV[2]}
";

/// The room's script and settings; cheap to clone.
#[derive(Debug, Clone)]
pub struct WaitingRoom {
    script: Arc<Script>,
    commit: Arc<Script>,
    settings: Arc<WaitingRoomSettings>,
    /// Committed seeds by event: a seed never changes once committed, so
    /// each instance asks Redis once per event.
    seeds: Arc<std::sync::Mutex<std::collections::HashMap<String, Committed>>>,
}

impl WaitingRoom {
    pub fn new(settings: WaitingRoomSettings) -> Self {
        Self {
            script: Arc::new(platform::scripts::waiting_room()),
            commit: Arc::new(Script::new(COMMIT_SEED)),
            settings: Arc::new(settings),
            seeds: Arc::default(),
        }
    }

    /// The event's committed seed, drawn and committed now if it has none.
    pub async fn committed<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
    ) -> Result<Committed, RoomError> {
        self.committed_or(conn, event_id, None).await
    }

    /// [`Self::committed`], offering `remembered` (a seed this instance held
    /// for the event) rather than a new one when the room has none.
    async fn committed_or<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        remembered: Option<String>,
    ) -> Result<Committed, RoomError> {
        if let Some(known) = self.seeds.lock().ok().and_then(|seeds| seeds.get(event_id).cloned()) {
            return Ok(known);
        }
        let seed = remembered.unwrap_or_else(crate::shuffle::new_seed);
        let commitment = crate::shuffle::commitment(&seed);
        let keys = platform::event_keys::EventKeys::new(event_id);
        let (seed, commitment): (String, String) = self
            .commit
            .key(&keys.meta)
            .key(RoomKeys::new(event_id).room)
            .arg(seed)
            .arg(commitment)
            .invoke_async(conn)
            .await?;
        let committed = Committed { seed, commitment };
        if let Ok(mut seeds) = self.seeds.lock() {
            if seeds.len() >= SEEDS_KEPT {
                seeds.clear();
            }
            seeds.insert(event_id.to_string(), committed.clone());
        }
        Ok(committed)
    }

    /// What the event's public state says of the shuffle: the commitment
    /// (made now if none yet, so it is public before anyone can queue), and
    /// the seed once `now_ms` reached the opening.
    pub async fn public<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        open_at_ms: i64,
        now_ms: i64,
    ) -> Result<PublicShuffle, RoomError> {
        let committed = self.committed(conn, event_id).await?;
        Ok(PublicShuffle {
            mode: self.settings.pre_queue.as_str(),
            commitment: committed.commitment,
            seed: (now_ms >= open_at_ms).then_some(committed.seed),
        })
    }

    /// Forgets the event's seed; returns the one forgotten.
    fn forget_seed(&self, event_id: &str) -> Option<Committed> {
        self.seeds.lock().ok().and_then(|mut seeds| seeds.remove(event_id))
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
        let mut answer = None;
        let mut remembered = None;
        // Twice at most: a room made anew since this instance read its seed
        // answers `reseed` once, then the seed read again is the room's. A
        // room that lost its seed (Redis lost the key before the opening) is
        // given back the one this instance knew, so the commitment already
        // published, and recorded by `event create`, still holds.
        for _ in 0..2 {
            let committed = self.committed_or(conn, event_id, remembered.take()).await?;
            let draw = crate::shuffle::draw(&committed.seed, member.as_str());
            let reply: (String, i64, i64, i64) = self
                .script
                .key(&keys.meta)
                .key(&keys.eligible)
                .key(&keys.entered)
                .key(&room.room)
                .key(&room.line)
                .key(&room.prequeue)
                .key(&room.passed)
                .key(&room.draws)
                .arg(member.as_str())
                .arg(self.settings.rate_per_sec)
                .arg(self.settings.burst)
                .arg(self.settings.pre_queue.as_str())
                .arg(&committed.seed)
                .arg(draw)
                .arg(&committed.commitment)
                .invoke_async(conn)
                .await?;
            if reply.0 != "reseed" {
                answer = Some(reply);
                break;
            }
            remembered = self.forget_seed(event_id).map(|c| c.seed);
        }
        let (code, position, waiting, retry_ms) =
            answer.ok_or_else(|| RoomError::Unexpected("reseed twice".to_string()))?;
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

/// Commits `seed` as `event_id`'s shuffle seed unless the room holds one
/// already; answers the room's. `firstcome event create` commits this way
/// the seed it records in PostgreSQL, so the room and the record agree.
pub async fn commit_seed<C: ConnectionLike + Send>(
    conn: &mut C,
    event_id: &str,
    seed: &str,
) -> Result<Committed, RoomError> {
    let keys = platform::event_keys::EventKeys::new(event_id);
    let (seed, commitment): (String, String) = Script::new(COMMIT_SEED)
        .key(&keys.meta)
        .key(RoomKeys::new(event_id).room)
        .arg(seed)
        .arg(crate::shuffle::commitment(seed))
        .invoke_async(conn)
        .await?;
    Ok(Committed { seed, commitment })
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

/// Members read per call when the record is gathered (the pre-queue may
/// hold many; never one reply of all of them).
const RECORD_PAGE: usize = 1_000;

/// What the room kept of `event_id`'s shuffle, for the replay
/// (`crate::shuffle::verify`): the room's fields, the draws in the room's
/// order, and for each pre-queued member their pass time or ticket.
pub async fn shuffle_record<C: ConnectionLike + Send>(
    conn: &mut C,
    event_id: &str,
) -> Result<crate::shuffle::ShuffleRecord, RoomError> {
    type Fields = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<i64>, Option<i64>, Option<i64>);
    let keys = RoomKeys::new(event_id);
    let (opened_at_ms, seed, commitment, mode, pre_queued, rate, burst): Fields = redis::cmd("HMGET")
        .arg(&keys.room)
        .arg(&["opened_at", "seed", "commitment", "mode", "pre_queued", "rate", "burst"])
        .query_async(conn)
        .await?;
    let total: usize = redis::cmd("ZCARD").arg(&keys.draws).query_async(conn).await?;
    let mut draws = Vec::with_capacity(total);
    for start in (0..total).step_by(RECORD_PAGE) {
        let page: Vec<String> =
            redis::cmd("ZRANGE").arg(&keys.draws).arg(start).arg(start + RECORD_PAGE - 1).query_async(conn).await?;
        for item in page {
            let (draw, member) = item.split_once('|').ok_or_else(|| RoomError::Unexpected(format!("draw {item:?}")))?;
            draws.push((draw.to_string(), member.to_string()));
        }
    }
    let mut passed_at_ms = std::collections::HashMap::new();
    let mut in_line = std::collections::HashMap::new();
    for chunk in draws.chunks(RECORD_PAGE) {
        let members: Vec<&str> = chunk.iter().map(|(_, m)| m.as_str()).collect();
        let passed: Vec<Option<i64>> = redis::cmd("HMGET").arg(&keys.passed).arg(&members).query_async(conn).await?;
        let tickets: Vec<Option<f64>> = redis::cmd("ZMSCORE").arg(&keys.line).arg(&members).query_async(conn).await?;
        for ((member, passed), ticket) in members.iter().zip(passed).zip(tickets) {
            if let Some(at) = passed {
                passed_at_ms.insert(member.to_string(), at);
            }
            if let Some(ticket) = ticket {
                in_line.insert(member.to_string(), ticket as i64);
            }
        }
    }
    Ok(crate::shuffle::ShuffleRecord {
        event_id: event_id.to_string(),
        mode: mode.unwrap_or_default(),
        opened_at_ms,
        seed: seed.unwrap_or_default(),
        commitment: commitment.unwrap_or_default(),
        pre_queued: pre_queued.unwrap_or(0),
        rate_per_sec: rate.unwrap_or(0),
        burst: burst.unwrap_or(0),
        draws,
        passed_at_ms,
        in_line,
    })
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
        for key in [&keys.room, &keys.line, &keys.prequeue, &keys.passed, &keys.draws] {
            assert!(key.starts_with("fc:{ev-1}:"), "{key}");
        }
    }
}
