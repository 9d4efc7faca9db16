-- admit: the first-entry decision of one or many requests of one event,
-- atomically (see ingest/src/admission.rs). Runs behind prelude.lua
-- (platform::scripts::admit). ingest groups the requests waiting at the same
-- moment into one call: each is decided in the order given, exactly as if it
-- were a call of its own (a member's second request in the same call finds
-- the first one's pending mark), and all are judged on one Redis clock reading.
--
-- KEYS: meta, eligible, entered, entries, stock
-- ARGV: resume_after_ms, then per request: member, new entry id, admit_new
--       (1, or 0 when this instance was told the event sold out: known
--       members are still answered, nobody new is admitted)
-- Answers one {code, entry id, ms, now} per request, in order.
local now = redis_now_ms()
local resume_after = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'status', 'open_at_ms', 'close_at_ms')
local closed = state[1] == 'closed' or (state[3] and now >= tonumber(state[3]))
local opens_at = state[2] and tonumber(state[2])

local function admit_one(member, new_entry, admit_new)
  if closed then
    return {'closed', '', 0, now}
  end
  if opens_at and now < opens_at then
    return {'too_early', '', opens_at, now}
  end
  if redis.call('SISMEMBER', KEYS[2], member) == 0 then
    return {'not_eligible', '', 0, now}
  end
  local mark = redis.call('HGET', KEYS[3], member)
  if mark then
    if string.sub(mark, 1, 2) == 'A|' then
      return {'already_entered', string.sub(mark, 3), 0, now}
    end
    local entry, at = string.match(mark, '^P|([^|]+)|(%d+)$')
    if not entry then
      return {'corrupt_mark', mark, 0, now}
    end
    at = tonumber(at)
    if now - at < resume_after then
      return {'in_progress', entry, at, now}
    end
    return {'resume', entry, at, now}
  end
  local stock = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
  if stock <= 0 or admit_new == '0' then
    return {'sold_out', '', 0, now}
  end
  redis.call('HSET', KEYS[3], member, 'P|' .. new_entry .. '|' .. now)
  redis.call('HSET', KEYS[4], new_entry, member)
  return {'accept', new_entry, now, now}
end

local answers = {}
local accepted = false
for i = 2, #ARGV - 2, 3 do
  local answer = admit_one(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  accepted = accepted or answer[1] == 'accept'
  answers[#answers + 1] = answer
end
-- The first admission creates `entered` and `entries`: they expire with the
-- event, like the keys written at creation.
if accepted then
  expire_with_event(KEYS[1], { KEYS[3], KEYS[4] })
end
return answers
