//! The first-entry decision in Redis: ONE script call per entry request.
//!
//! Eligibility, the member's earlier mark, the stock counter and the new
//! pending mark are read and written atomically, so two concurrent requests
//! of one member can never both be admitted, and a member can never enter
//! after the counter reached zero. The script reads Redis' clock, so every
//! ingest instance admits on one clock (the FCFS order key `accepted_at`).
//!
//! Marks in `entered` (see `platform::event_keys`): `P|<entry>|<ms>` while the
//! entry is being produced, `A|<entry>` once the broker acknowledged it.

use std::sync::Arc;
use std::time::Duration;

use platform::event_keys::EventKeys;
use redis::aio::ConnectionLike;
use redis::Script;

use crate::auth::MemberId;

const ADMIT_LUA: &str = r#"
-- KEYS: meta, eligible, entered, entries, stock
-- ARGV: member, new entry id, resume_after_ms, admit_new (1, or 0 when this
--       instance was told the event sold out: known members are still
--       answered, nobody new is admitted)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'status', 'open_at_ms', 'close_at_ms')
if state[1] == 'closed' or (state[3] and now >= tonumber(state[3])) then
  return {'closed', '', 0, now}
end
if state[2] and now < tonumber(state[2]) then
  return {'too_early', '', tonumber(state[2]), now}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return {'not_eligible', '', 0, now}
end
local mark = redis.call('HGET', KEYS[3], ARGV[1])
if mark then
  if string.sub(mark, 1, 2) == 'A|' then
    return {'already_entered', string.sub(mark, 3), 0, now}
  end
  local entry, at = string.match(mark, '^P|([^|]+)|(%d+)$')
  if not entry then
    return {'corrupt_mark', mark, 0, now}
  end
  at = tonumber(at)
  if now - at < tonumber(ARGV[3]) then
    return {'in_progress', entry, at, now}
  end
  return {'resume', entry, at, now}
end
local stock = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
if stock <= 0 or ARGV[4] == '0' then
  return {'sold_out', '', 0, now}
end
redis.call('HSET', KEYS[3], ARGV[1], 'P|' .. ARGV[2] .. '|' .. now)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
-- The first admission creates `entered` and `entries`: they expire with the
-- event, like the keys written at creation (meta's expiry is the event's).
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  for _, key in ipairs({ KEYS[3], KEYS[4] }) do
    if redis.call('PTTL', key) == -1 then
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return {'accept', ARGV[2], now, now}
"#;

const MARK_ACCEPTED_LUA: &str = r#"
-- KEYS: entered; ARGV: member, entry id
local mark = redis.call('HGET', KEYS[1], ARGV[1])
if not mark then return 0 end
if mark == 'A|' .. ARGV[2] then return 1 end
local prefix = 'P|' .. ARGV[2] .. '|'
if string.sub(mark, 1, #prefix) == prefix then
  redis.call('HSET', KEYS[1], ARGV[1], 'A|' .. ARGV[2])
  return 1
end
return 0
"#;

/// What the admit script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new entry: the pending mark is set; produce it.
    Accept { entry_id: String, admitted_at_ms: i64 },
    /// A pending mark old enough that its request has surely ended without an
    /// acknowledgement: produce the SAME entry again (consumers dedupe).
    Resume { entry_id: String, admitted_at_ms: i64 },
    /// The member's entry was acknowledged before.
    AlreadyEntered { entry_id: String },
    /// Another request of the member is producing this entry right now.
    InProgress { entry_id: String, retry_after: Duration },
    NotEligible,
    SoldOut,
    Closed,
    TooEarly { opens_in: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected admit script answer {0:?}")]
    Unexpected(String),
}

/// The admission scripts; cheap to clone. `invoke_async` sends EVALSHA and
/// loads the script on NOSCRIPT (a restarted or failed-over Redis).
#[derive(Debug, Clone)]
pub struct Admitter {
    admit: Arc<Script>,
    mark_accepted: Arc<Script>,
    resume_after: Duration,
}

impl Admitter {
    pub fn new(resume_after: Duration) -> Self {
        Self {
            admit: Arc::new(Script::new(ADMIT_LUA)),
            mark_accepted: Arc::new(Script::new(MARK_ACCEPTED_LUA)),
            resume_after,
        }
    }

    /// Decides whether `member` may enter `event_id`; `new_entry_id` is used
    /// only when a fresh entry is admitted, and only if `admit_new` (false
    /// once this instance knows the event sold out).
    pub async fn admit<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        member: &MemberId,
        new_entry_id: &str,
        admit_new: bool,
    ) -> Result<Admission, AdmissionError> {
        let keys = EventKeys::new(event_id);
        let (code, entry, at, now): (String, String, i64, i64) = self
            .admit
            .key(&keys.meta)
            .key(&keys.eligible)
            .key(&keys.entered)
            .key(&keys.entries)
            .key(&keys.stock)
            .arg(member.as_str())
            .arg(new_entry_id)
            .arg(self.resume_after.as_millis() as u64)
            .arg(if admit_new { 1 } else { 0 })
            .invoke_async(conn)
            .await?;
        let admission = match code.as_str() {
            "accept" => Admission::Accept { entry_id: entry, admitted_at_ms: at },
            "resume" => Admission::Resume { entry_id: entry, admitted_at_ms: at },
            "already_entered" => Admission::AlreadyEntered { entry_id: entry },
            "in_progress" => {
                let left = (at + self.resume_after.as_millis() as i64 - now).max(0);
                Admission::InProgress { entry_id: entry, retry_after: Duration::from_millis(left as u64) }
            }
            "not_eligible" => Admission::NotEligible,
            "sold_out" => Admission::SoldOut,
            "closed" => Admission::Closed,
            "too_early" => Admission::TooEarly { opens_in: Duration::from_millis((at - now).max(0) as u64) },
            "corrupt_mark" => {
                // Never admit over a mark we cannot read: one entry per member
                // outweighs this member's retry. An operator repairs the mark.
                tracing::error!(event_id, member = %member, mark = %entry, "unreadable first-entry mark");
                Admission::AlreadyEntered { entry_id: String::new() }
            }
            other => return Err(AdmissionError::Unexpected(other.to_string())),
        };
        Ok(admission)
    }

    /// Marks the entry acknowledged (`A|entry`), only if the member's mark is
    /// still this entry's pending mark. `false`: the mark was not there.
    pub async fn mark_accepted<C: ConnectionLike + Send>(
        &self,
        conn: &mut C,
        event_id: &str,
        member: &MemberId,
        entry_id: &str,
    ) -> redis::RedisResult<bool> {
        let keys = EventKeys::new(event_id);
        let done: i64 = self
            .mark_accepted
            .key(&keys.entered)
            .arg(member.as_str())
            .arg(entry_id)
            .invoke_async(conn)
            .await?;
        Ok(done == 1)
    }
}
