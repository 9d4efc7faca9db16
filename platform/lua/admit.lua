-- admit: the first-entry decision of one or many requests of one event,
-- atomically (see ingest/src/admission.rs). Runs behind prelude.lua
-- (platform::scripts::admit). ingest groups the requests waiting at the same
-- moment into one call: each is decided in the order given, exactly as if it
-- were a call of its own (a member's second request in the same call finds
-- the first one's pending mark), and all are judged on one Redis clock reading.
--
-- Every accepted entry gets a ticket, its place in line (prelude.lua, "The
-- line"), taken with the first-entry mark; a resumed entry keeps its own.
-- Admission is bounded by the stock: once the tickets issued reach for_sale
-- plus the line's depth, nobody new is admitted (sold_out), without waiting
-- for the stock stage; the last ticket announces it on the state channel.
--
-- KEYS: meta, eligible, entered, entries, ticket, tickets, frontier, pending, holes,
--       settle
-- ARGV: resume_after_ms, hole_after_ms, state channel, event id,
--       ticket floor (the highest ticket the caller knows was given, by
--       itself or, as they announced, by the other instances: a counter
--       below it went back, e.g. an AOF that missed its last second, and is
--       raised to it before any ticket is taken; 0: none),
--       settle_ms (after such a raise, no new ticket for this long: the
--       other instances' calls raise the counter to their own floors first;
--       0: no wait),
--       then per request: member, new entry id, admit_new
--       (1, or 0 when this instance was told the event sold out: known
--       members are still answered, nobody new is admitted)
-- Answers one {code, entry id, ms, now, ticket} per request, in order
-- (ticket 0 where none applies; for 'settling', ms is the wait left).
local meta, eligible, entered, entries, ticket, tickets, frontier, pending, holes, settle =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local now = redis_now_ms()
local resume_after = tonumber(ARGV[1])
local hole_after = tonumber(ARGV[2]) or 0
local channel, event_id = ARGV[3], ARGV[4]
local state = redis.call('HMGET', meta, 'status', 'open_at_ms', 'close_at_ms')
local closed = state[1] == 'closed' or (state[3] and now >= tonumber(state[3]))
local opens_at = state[2] and tonumber(state[2])
local limit, issued = admission_limit(meta, frontier, ticket)
-- The ticket floor. Only a counter that exists is raised: a missing one is a
-- new event (an id used again starts afresh) or one lost whole, which the
-- stock stage restores. `issued` is the counter as admission_limit read it
-- (a missing or unreadable one reads 0), so the counter is read again only
-- when it reads 0 and a floor is given: one GET less on every call.
-- INCRBY keeps the key's TTL, and ingest's Redis user may INCRBY this key only.
local ticket_floor = tonumber(ARGV[5]) or 0
local settle_ms = tonumber(ARGV[6]) or 0
if ticket_floor > issued then
  local counter = issued
  if counter == 0 then
    counter = tonumber(redis.call('GET', ticket) or '')
  end
  if counter then
    redis.call('INCRBY', ticket, ticket_floor - counter)
    issued = ticket_floor
    -- Redis forgot tickets, and this caller's floor covers only what it
    -- knows: another instance may hold higher ones. Taking the next ticket
    -- now could give one of theirs again, so nobody new is admitted until
    -- they have called with their floors (each raise starts the wait anew).
    if settle_ms > 0 then
      redis.call('SET', settle, '1', 'PX', settle_ms)
    end
  end
end
-- The wait left, read once per call and only by a call that would admit.
local settle_left = nil

local function ticket_of(entry)
  return tonumber(redis.call('HGET', tickets, entry) or '0') or 0
end

local function admit_one(member, new_entry, admit_new)
  if closed then
    return {'closed', '', 0, now, 0}
  end
  if opens_at and now < opens_at then
    return {'too_early', '', opens_at, now, 0}
  end
  if redis.call('SISMEMBER', eligible, member) == 0 then
    return {'not_eligible', '', 0, now, 0}
  end
  local mark = redis.call('HGET', entered, member)
  -- A pending entry that became a hole (holes.lua) has had its place passed
  -- on: the member who comes back is admitted afresh, at the end of the line.
  if mark and string.sub(mark, 1, 2) == 'P|' then
    local entry = string.match(mark, '^P|([^|]+)|')
    if entry and redis.call('HEXISTS', holes, entry) == 1 then
      mark = nil
    end
  end
  if mark then
    if string.sub(mark, 1, 2) == 'A|' then
      local entry = string.sub(mark, 3)
      return {'already_entered', entry, 0, now, ticket_of(entry)}
    end
    local entry, at = string.match(mark, '^P|([^|]+)|(%d+)$')
    if not entry then
      return {'corrupt_mark', mark, 0, now, 0}
    end
    at = tonumber(at)
    if now - at < resume_after then
      return {'in_progress', entry, at, now, ticket_of(entry)}
    end
    -- Still unacknowledged: its hole deadline moves with the retry.
    if redis.call('ZSCORE', pending, entry) then
      redis.call('ZADD', pending, now + hole_after, entry)
    end
    return {'resume', entry, at, now, ticket_of(entry)}
  end
  if issued >= limit or admit_new == '0' then
    return {'sold_out', '', 0, now, 0}
  end
  if settle_left == nil then
    settle_left = settle_ms > 0 and redis.call('PTTL', settle) or -2
  end
  if settle_left > 0 then
    return {'settling', '', settle_left, now, 0}
  end
  issued = redis.call('INCR', ticket)
  redis.call('HSET', entered, member, 'P|' .. new_entry .. '|' .. now)
  redis.call('HSET', entries, new_entry, member)
  redis.call('HSET', tickets, new_entry, issued)
  redis.call('ZADD', pending, now + hole_after, new_entry)
  if issued == limit then
    -- The last place: every ingest instance stops admitting at once.
    redis.call('PUBLISH', channel, cjson.encode({ event_id = event_id, status = 'sold_out' }))
  end
  return {'accept', new_entry, now, now, issued}
end

local answers = {}
local accepted = false
for i = 7, #ARGV - 2, 3 do
  local answer = admit_one(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  accepted = accepted or answer[1] == 'accept'
  answers[#answers + 1] = answer
end
-- The first admission creates these keys: they expire with the event, like
-- the keys written at creation.
if accepted then
  expire_with_event(meta, { entered, entries, ticket, tickets, pending })
end
return answers
