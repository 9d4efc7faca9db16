-- release: a won unit comes back (compensation after a failed gift) and goes
-- to the next in line, or back to stock when nobody is waiting.
--
-- KEYS: 1 meta, 2 stock, 3 winners, 4 decisions, 5 released, 6 applied,
--       7 waitlist, 8 promoted, 9 hold
-- ARGV: 1 entry_id, 2 user_id, 3 unit_no, 4 event_id, 5 state channel,
--       6 E = number of expected marks, then E (field, next_offset) pairs,
--       then N = number of new marks, then N (field, next_offset) pairs
-- Returns a list whose first element says what happened:
--   { 'RELEASED' }   back in stock (nobody in line), the event stays as it was
--   { 'REOPENED' }   back in stock and the sold-out event reopened
--   { 'PROMOTED', entry, member, unit, accepted_at, decided_at }
--                    handed to the earliest waitlisted entry whose member holds
--                    no unit: its decision is now WON|unit
--   { 'DUPLICATE' [, entry, member, unit, accepted_at, decided_at] }
--                    this entry's unit was already returned; the promotion it
--                    made then, if any, is repeated (never a second one)
--   { 'MISMATCH' }   the entry did not win this unit for this member
--   { 'UNKNOWN_EVENT' }
--   { 'STALE', field, applied, expected }
--                    Redis is behind what the stage committed: nothing written
--   { 'HELD' }       a rebuild holds the event: nothing written, call again
-- Runs behind prelude.lua (platform::scripts::release): the stale check, the
-- marks and the expiry copy are the prelude's (see there for the marks).
local meta, stock, winners, decisions, released, applied, waitlist, promoted, hold =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local entry, member, unit = ARGV[1], ARGV[2], ARGV[3]
local event_id, channel = ARGV[4], ARGV[5]

local expected, after_expected = read_marks(6)
local new_marks = read_marks(after_expected)
if held(hold) then
  return { 'HELD' }
end
-- An expired event (no `meta`) is not stale but unknown: it is answered
-- UNKNOWN_EVENT below and nothing is written.
local stale = stale_answer(meta, applied, expected)
if stale then
  return stale
end

-- Redis' clock, as in decide.lua: no host's skew decides a reopening.
local now = redis_now_ms()

if redis.call('EXISTS', meta) == 0 then
  return { 'UNKNOWN_EVENT' }
end

-- The record is applied whatever the answer (a refusal is an answer too).
local function raise_marks_and_expiry()
  raise_marks(applied, new_marks)
  expire_with_event(meta, { released, applied, promoted, decisions, winners })
end

local function with_promotion(result, stored)
  local out = { result }
  if stored then
    for part in string.gmatch(stored, '[^|]+') do
      out[#out + 1] = part
    end
  end
  return out
end

-- Checked before the released mark, so a wrong release cannot block the right one,
-- and only the entry that won the unit can return it (never twice per unit).
if redis.call('HGET', decisions, entry) ~= 'WON|' .. unit or redis.call('HGET', winners, member) ~= unit then
  raise_marks_and_expiry()
  return { 'MISMATCH' }
end
if redis.call('SADD', released, entry) == 0 then
  raise_marks_and_expiry()
  return with_promotion('DUPLICATE', redis.call('HGET', promoted, entry))
end
local after = redis.call('INCR', stock)

local fields = redis.call('HMGET', meta, 'status', 'close_at_ms')
local status = fields[1]
local close_at = tonumber(fields[2])
local before_close = status ~= 'closed' and close_at ~= nil and now < close_at

-- The next in line: the earliest waitlisted entry whose member holds no unit.
-- Entries that cannot take it (their member won meanwhile, their answer is no
-- longer SOLD_OUT) leave the line; nobody is promoted after close_at.
local promotion = nil
while before_close do
  local head = redis.call('ZRANGE', waitlist, 0, 0, 'WITHSCORES')
  if #head == 0 then
    break
  end
  redis.call('ZREM', waitlist, head[1])
  local waiting, waiting_member = string.match(head[1], '^([^|]+)|(.+)$')
  if waiting and redis.call('HEXISTS', winners, waiting_member) == 0
    and redis.call('HGET', decisions, waiting) == 'SOLD_OUT|' then
    after = redis.call('DECR', stock)
    -- The returned unit itself: this script returns and hands it on at once,
    -- and one transaction commits both or neither.
    local given = unit
    redis.call('HSET', decisions, waiting, 'WON|' .. given)
    redis.call('HSET', winners, waiting_member, given)
    promotion = table.concat({ waiting, waiting_member, given, string.format('%.0f', tonumber(head[2])),
      string.format('%.0f', now) }, '|')
    redis.call('HSET', promoted, entry, promotion)
    break
  end
end

local result = 'RELEASED'
if promotion then
  result = 'PROMOTED'
  -- The unit went straight on: a sold-out event stays sold out.
  if after == 0 and status == 'open' then
    redis.call('HSET', meta, 'status', 'sold_out')
    redis.call('PUBLISH', channel, cjson.encode({ event_id = event_id, status = 'sold_out' }))
  end
elseif after == 1 and status == 'sold_out' and before_close then
  redis.call('HSET', meta, 'status', 'open')
  redis.call('PUBLISH', channel, cjson.encode({ event_id = event_id, status = 'open' }))
  result = 'REOPENED'
end

raise_marks_and_expiry()
return with_promotion(result, promotion)
