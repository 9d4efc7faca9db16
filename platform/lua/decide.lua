-- decide: the stock decision for a batch of entries of ONE event, atomically.
--
-- KEYS: 1 meta, 2 stock, 3 eligible, 4 winners, 5 decisions, 6 next_unit,
--       7 applied, 8 waitlist, 9 members, 10 hold, 11 ticket, 12 tickets,
--       13 frontier, 14 dead, 15 pending, 16 promoted, 17 holes
-- ARGV: 1 event_id, 2 state channel, 3 late-decision grace (ms),
--       4 how long an event's keys outlive its close (ms),
--       5 E = number of expected marks, then E (field, next_offset) pairs,
--       then N = number of new marks, then N (field, next_offset) pairs,
--       then (entry_id, user_id, accepted_at_ms, ticket, hole) quintuples in
--       batch order (ticket 0: the producer gave none; hole 1: ingest's
--       announcement that the entry never reached the log, ingest/src/holes.rs)
-- Returns { remaining, now, P, answer_1 … answer_n, ticket_1 … ticket_n,
-- promotion_1 … promotion_P } as strings: remaining is the stock left after
-- the batch (-1 for an unknown event); now is Redis' clock (ms) the batch was
-- judged at; each answer is 'OUTCOME|unit' (unit empty when none), the same
-- form kept in `decisions`; each ticket the place in line the entry was
-- decided on (0 when none); each promotion an earlier entry's WON,
-- 'entry|member|unit|accepted_at|decided_at|ticket': a ticket of the batch
-- that can never take its unit passed it to the next in line.
--
-- First come, first served (prelude.lua, "The line"): an entry is decided on
-- its ticket, not on when it reached this script. A ticket within the
-- frontier wins; one beyond it waits in line. An entry without one (another
-- producer) is given the next ticket when first decided. The ticket ingest
-- gave (kept in `tickets`) stands over the record's claim.
-- Or { 'STALE', field, applied, expected } when Redis is behind what the
-- stage committed to Kafka: nothing was written. For an event with no `meta`
-- ('meta' as the field): only when the committed marks name it (it existed)
-- and an entry of the batch was accepted within the keys' lifetime (so they
-- cannot have expired yet: accepted_at <= close_at): Redis lost it whole, and
-- answering INELIGIBLE would take accepted members' places for good. Else
-- (expired, or never created) it is unknown, not stale.
-- Or { 'HELD' } while a rebuild holds the event: nothing was written; call
-- again once the hold is gone.
--
-- Runs behind prelude.lua (platform::scripts::decide): the stale check, the
-- marks and the expiry copy are the prelude's (see there for the marks).
--
-- The window is judged on each entry's accepted_at (ingest's admission time,
-- taken from this same Redis clock), not on when this consumer gets to it: an
-- entry accepted before close_at is decided normally even if the stage lagged
-- past close_at (an outage, a backlog). Only after close_at + grace is every
-- entry CLOSED, so answers stop changing long before the keys expire.
--
-- One entry per member: `members` keeps the first entry decided for each
-- member. Another entry id of that member (another producer, or ingest after
-- Redis lost its first-entry mark) gets the first entry's standing, never a
-- unit of its own nor a place in line.
--
-- Every answer is stored by entry id before the script returns, so a batch run
-- again (after an aborted Kafka transaction, a redelivery) gets the same
-- answers and does not touch the counter again.
local meta, stock, eligible, winners, decisions, next_unit, applied, waitlist, members, hold =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local ticket, tickets, frontier, dead, pending, promoted = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local holes = KEYS[17]
local event_id = ARGV[1]
local channel = ARGV[2]
local grace = tonumber(ARGV[3]) or 0
local lifetime = tonumber(ARGV[4]) or 0

-- The marks: expected ones are checked before anything is written. An
-- expired event (no `meta`) is never stale: it is answered INELIGIBLE below
-- and nothing is written.
local expected, after_expected = read_marks(5)
local new_marks, at_arg = read_marks(after_expected)
if held(hold) then
  return { 'HELD' }
end
local stale = stale_answer(meta, applied, expected)
if stale then
  return stale
end

-- Redis' clock, not the caller's: every host judges on one clock, the one
-- ingest stamped accepted_at with.
local now = redis_now_ms()

-- Lost whole, not expired (see the header).
if #expected > 0 and redis.call('EXISTS', meta) == 0 then
  for i = at_arg + 2, #ARGV, 5 do
    local at = math.min(tonumber(ARGV[i]) or now, now)
    if at > now - lifetime then
      return { 'STALE', 'meta', '0', string.format('%.0f', expected[1][2]) }
    end
  end
end

local fields = redis.call('HMGET', meta, 'status', 'open_at_ms', 'close_at_ms')
local status = fields[1]
local open_at = tonumber(fields[2])
local close_at = tonumber(fields[3])
local known = status ~= false and open_at ~= nil and close_at ~= nil

local function stored_answer(entry, member)
  local stored = redis.call('HGET', decisions, entry)
  if not stored then
    return nil
  end
  -- A stored win belongs to the member who won it: the same entry id sent for
  -- another member (a broken or hostile producer) wins nothing.
  local outcome, unit = string.match(stored, '^([A-Z_]+)|(%d*)$')
  if (outcome == 'WON' or outcome == 'ALREADY_WON') and redis.call('HGET', winners, member) ~= unit then
    return 'INELIGIBLE|'
  end
  return stored
end

-- The answer to another entry of a member whose first entry was decided.
local function standing(member, first)
  local held = redis.call('HGET', winners, member)
  if held then
    return 'ALREADY_WON|' .. held
  end
  local outcome = string.match(redis.call('HGET', decisions, first) or '', '^([A-Z_]+)|$')
  if outcome == 'SOLD_OUT' or outcome == 'CLOSED' or outcome == 'INELIGIBLE' then
    return outcome .. '|'
  end
  -- The first entry's answer is not a loss we know: still a loss, never a
  -- unit and never a place in line.
  return 'SOLD_OUT|'
end

-- The frontier and the batch's promotions.
local f = known and read_frontier(meta, frontier) or 0
local promotions = {}
local line = { stock = stock, waitlist = waitlist, winners = winners, decisions = decisions, next_unit = next_unit,
  frontier = frontier, dead = dead }

-- A ticket that will never take a unit: its place passes down the line, to
-- an entry already waiting if the next place is one. The promotion is kept
-- under the entry that caused it (`promoted`), so a batch run again after an
-- aborted transaction announces it again, never a second one.
local current_entry = nil
-- The promotions the current entry's decision made (kept under it, ';'-joined).
local made_here = {}
local function kill(t)
  if t and t > 0 then
    f = kill_ticket(frontier, dead, f, t)
    if status ~= 'closed' and now < close_at then
      local made
      made, f = promote_waiting(line, f, now)
      for _, p in ipairs(made) do
        promotions[#promotions + 1] = p
        made_here[#made_here + 1] = p
      end
      if #made_here > 0 then
        redis.call('HSET', promoted, current_entry, table.concat(made_here, ';'))
      end
    end
  end
end

-- The entry's ticket: the one ingest gave it, else the record's claim (a
-- lost span of Redis writes may have lost ingest's), else a new one at the
-- end of the line. Ingest never issues a claimed number again.
local function ticket_of(entry, claimed)
  local t = tonumber(redis.call('HGET', tickets, entry) or '')
  if t then
    return t, true
  end
  if claimed > 0 then
    local issued = tonumber(redis.call('GET', ticket) or '0') or 0
    if claimed > issued then
      redis.call('SET', ticket, claimed)
    end
    t = claimed
  else
    t = redis.call('INCR', ticket)
  end
  redis.call('HSET', tickets, entry, t)
  return t, false
end

-- Returns the answer and the ticket decided on.
local function decide(entry, member, accepted_at, claimed)
  -- A producer cannot claim a time that has not come yet: judge it at now.
  local at = math.min(accepted_at, now)
  -- Admitted by ingest while the event was open (the admit script checks
  -- it): decided on its ticket even if an operator closed the event since.
  local given = tonumber(redis.call('HGET', tickets, entry) or '')
  -- The place this entry would have held, passed on if it cannot take it;
  -- kept with the decision, so a rebuild from Redis' state knows it too.
  local own = given or (claimed > 0 and claimed) or nil
  if own and not given then
    own = ticket_of(entry, claimed)
  end
  if (status == 'closed' and not given) or at < open_at or at >= close_at or now >= close_at + grace then
    kill(own)
    return 'CLOSED|', own or 0
  end
  -- Re-checked here although ingest checked it: other producers exist.
  if redis.call('SISMEMBER', eligible, member) == 0 then
    kill(own)
    return 'INELIGIBLE|', own or 0
  end
  local held = redis.call('HGET', winners, member)
  if held then
    kill(own)
    return 'ALREADY_WON|' .. held, own or 0
  end
  local t = ticket_of(entry, claimed)
  local left = tonumber(redis.call('GET', stock) or '0') or 0
  if t > f or left <= 0 then
    -- In line for a unit, by ticket.
    redis.call('ZADD', waitlist, t, entry .. '|' .. member .. '|' .. string.format('%.0f', at))
    return 'SOLD_OUT|', t
  end
  redis.call('DECR', stock)
  -- A new number for every win, a returned unit's too: a number returned by
  -- a batch that never commits, handed on by one that does, would be held by
  -- two members in the log (stock-processor/src/rebuild.rs).
  local unit = redis.call('INCR', next_unit)
  redis.call('HSET', winners, member, unit)
  return 'WON|' .. unit, t
end

local out = { '-1', string.format('%.0f', now), '0' }
local decided_on = {}
local wrote = false
for i = at_arg, #ARGV, 5 do
  local entry, member, accepted_at = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local claimed = tonumber(ARGV[i + 3]) or 0
  local hole = ARGV[i + 4] == '1'
  local answer = stored_answer(entry, member)
  if known then
    redis.call('HDEL', holes, entry)
  end
  local t = tonumber(redis.call('HGET', tickets, entry) or '0') or 0
  current_entry = entry
  made_here = {}
  if answer then
    local again = redis.call('HGET', promoted, entry)
    if again then
      for p in string.gmatch(again, '[^;]+') do
        promotions[#promotions + 1] = p
      end
    end
  else
    if known and hole then
      -- A hole: the entry never reached the log (the real record, had it
      -- been produced, comes first on the member's partition and was
      -- answered above). CLOSED, and only the ticket Redis gave it passes
      -- on: a record cannot name another entry's place. It is not the
      -- member's first entry: one who comes back is admitted afresh.
      local own = tonumber(redis.call('HGET', tickets, entry) or '')
      kill(own)
      answer, t = 'CLOSED|', own or 0
      redis.call('HSET', decisions, entry, answer)
      redis.call('ZREM', pending, entry)
      wrote = true
    elseif known then
      local first = redis.call('HGET', members, member)
      if first and first ~= entry then
        answer = standing(member, first)
        -- A second entry of a member never takes a place of its own.
        local own = tonumber(redis.call('HGET', tickets, entry) or '')
        if not own and claimed > 0 then
          own = ticket_of(entry, claimed)
        end
        kill(own)
        t = own or 0
      else
        -- An unreadable time is judged as now, like a future one.
        answer, t = decide(entry, member, accepted_at or now, claimed)
        redis.call('HSET', members, member, entry)
      end
      redis.call('HSET', decisions, entry, answer)
      redis.call('ZREM', pending, entry)
      wrote = true
    else
      -- Unknown event: nothing is stored, so junk event ids leave no keys behind.
      answer = 'INELIGIBLE|'
    end
  end
  out[#out + 1] = answer
  decided_on[#decided_on + 1] = string.format('%.0f', t)
end
for _, t in ipairs(decided_on) do
  out[#out + 1] = t
end
out[3] = tostring(#promotions)
for _, p in ipairs(promotions) do
  out[#out + 1] = p
end

if known then
  out[1] = tostring(tonumber(redis.call('GET', stock) or '0') or 0)
  if raise_marks(applied, new_marks) then
    wrote = true
  end
  -- Admission full (the admit script announced it when it gave the last
  -- place): the event's status says so, for pages and new ingest instances.
  local limit, issued = admission_limit(meta, frontier, ticket)
  if status == 'open' and issued >= limit then
    redis.call('HSET', meta, 'status', 'sold_out')
    redis.call('PUBLISH', channel, cjson.encode({ event_id = event_id, status = 'sold_out' }))
  end
end

-- Keys first created here expire with the event, like the ones set at creation.
if wrote then
  expire_with_event(meta, { winners, decisions, next_unit, applied, waitlist, members, ticket, tickets, frontier, dead, promoted })
end

return out
