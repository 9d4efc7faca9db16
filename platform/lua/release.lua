-- release: a won unit comes back (compensation after a failed gift) and goes
-- to the next in line, or back to stock when the next ticket has not been
-- decided yet (prelude.lua, "The line": the frontier moves one further).
--
-- KEYS: 1 meta, 2 stock, 3 winners, 4 decisions, 5 released, 6 applied,
--       7 waitlist, 8 promoted, 9 hold, 10 next_unit, 11 ticket, 12 frontier,
--       13 dead
-- ARGV: 1 entry_id, 2 user_id, 3 unit_no, 4 event_id, 5 state channel,
--       6 E = number of expected marks, then E (field, next_offset) pairs,
--       then N = number of new marks, then N (field, next_offset) pairs
-- Returns a list whose first element says what happened:
--   { 'RELEASED' }   back in stock (nobody in line), the event stays as it was
--   { 'REOPENED' }   back in stock and admission reopened (more units came
--                    back than the line holds)
--   { 'PROMOTED', promotion, ... }
--                    handed to the waitlisted entry with the lowest ticket
--                    within the frontier whose member holds no unit: its
--                    decision is now WON|unit (a new unit number); each
--                    promotion is 'entry|member|unit|accepted_at|decided_at|ticket'.
--                    Usually one; more only when duplicate tickets (a lost
--                    span of ingest's writes) left free units and waiting
--                    entries within the frontier
--   { 'DUPLICATE', promotion, ... }
--                    this entry's unit was already returned; the promotions
--                    it made then, if any, are repeated (never new ones)
--   { 'MISMATCH' }   the entry did not win this unit for this member
--   { 'UNKNOWN_EVENT' }
--   { 'STALE', field, applied, expected }
--                    Redis is behind what the stage committed: nothing written
--   { 'HELD' }       a rebuild holds the event: nothing written, call again
-- Runs behind prelude.lua (platform::scripts::release): the stale check, the
-- marks and the expiry copy are the prelude's (see there for the marks).
local meta, stock, winners, decisions, released, applied, waitlist, promoted, hold =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local next_unit, ticket, frontier, dead = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
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
  expire_with_event(meta, { released, applied, promoted, decisions, winners, next_unit, frontier, dead })
end

local function with_promotions(result, stored)
  local out = { result }
  if stored then
    for promotion in string.gmatch(stored, '[^;]+') do
      out[#out + 1] = promotion
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
  return with_promotions('DUPLICATE', redis.call('HGET', promoted, entry))
end
redis.call('INCR', stock)

local fields = redis.call('HMGET', meta, 'status', 'close_at_ms')
local status = fields[1]
local close_at = tonumber(fields[2])
local before_close = status ~= 'closed' and close_at ~= nil and now < close_at

-- The unit's place passes one further down the line; nobody is promoted
-- after close_at.
local f = advance_frontier(frontier, dead, read_frontier(meta, frontier))
local promotion = nil
if before_close then
  local line = { stock = stock, waitlist = waitlist, winners = winners, decisions = decisions, next_unit = next_unit,
    frontier = frontier, dead = dead }
  local made
  made, f = promote_waiting(line, f, now)
  if #made > 0 then
    promotion = table.concat(made, ';')
    redis.call('HSET', promoted, entry, promotion)
  end
end

local result = 'RELEASED'
if promotion then
  result = 'PROMOTED'
else
  local limit, issued = admission_limit(meta, frontier, ticket)
  if status == 'sold_out' and before_close and issued < limit then
    redis.call('HSET', meta, 'status', 'open')
    redis.call('PUBLISH', channel, cjson.encode({ event_id = event_id, status = 'open' }))
    result = 'REOPENED'
  end
end

raise_marks_and_expiry()
return with_promotions(result, promotion)
