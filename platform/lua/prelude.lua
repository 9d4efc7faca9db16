-- prelude: helpers shared by the scripts that write an event's keys.
--
-- Not a script of its own: `platform::scripts` puts this text in front of
-- decide.lua, release.lua and admit.lua (concat! of the two files), so each of
-- them runs as ONE script, atomically, and every helper below is a local of it.
-- Lua line numbers in Redis' error messages count from the top of this file.
--
-- Helpers (no KEYS/ARGV of their own: the caller passes what they need):
--   redis_now_ms()                   Redis' clock in ms (TIME), the one clock
--                                    every host judges on (scripts replicate by
--                                    effects since Redis 5, so TIME is allowed)
--   read_marks(at)                   a count at ARGV[at], then that many
--                                    (field, next_offset) pairs; returns
--                                    marks = { {field, offset}, ... } and the
--                                    ARGV index after them
--   stale_answer(meta, applied, expected)
--                                    the committed-marks check: nil when Redis
--                                    is not behind, else { 'STALE', field,
--                                    applied, expected } (nothing written)
--   raise_marks(applied, marks)      raise `applied` to the new marks, never
--                                    lower; returns whether one was raised
--   expire_with_event(meta, keys)    give every key among `keys` that has no
--                                    expiry the event's (meta's) expiry
--   held(hold)                       whether a rebuild holds the event: the
--                                    scripts then answer { 'HELD' } and write
--                                    nothing (stock-processor/src/rebuild.rs)
--   admission_limit(meta, frontier, ticket)
--                                    the tickets ingest may issue, and how many
--                                    it has: admission is full once issued
--                                    reaches the limit
--   read_frontier(meta, frontier)    the highest ticket a unit is kept for
--   kill_ticket(frontier, dead, f, t)
--                                    ticket t will never take a unit; the new
--                                    frontier
--   advance_frontier(frontier, dead, f)
--                                    one more unit passes down the line
--   promote_waiting(k, f, now)       waitlisted entries within the frontier
--                                    take the free units, lowest ticket first
--
-- The marks (docs/DESIGN.md, "Defence in depth"): `applied` holds, per input
-- partition of the stock stage (`s:<p>` / `r:<p>`), the next offset of this
-- event's records the stage applied here. The stage commits the same marks as
-- offset metadata with its Kafka transaction; an `applied` mark below the
-- committed one means Redis lost writes the log kept (AOF everysec, a
-- failover), and deciding on it could sell a unit twice.

local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function read_marks(at)
  local count = tonumber(ARGV[at]) or 0
  local marks = {}
  for i = 1, count do
    marks[i] = { ARGV[at + 2 * i - 1], tonumber(ARGV[at + 2 * i]) or 0 }
  end
  return marks, at + 2 * count + 1
end

-- Only an event Redis still knows can be behind: once its keys expired (a day
-- after close) `applied` is gone with `meta`, yet the partitions' committed
-- marks may still name it. Such an event is unknown, not stale: the scripts
-- answer it as unknown and write nothing, so nothing can be sold on a
-- forgetful state; answering STALE instead would send the stage to rebuild an
-- event that no longer exists and block the partition. (decide.lua tells an
-- event Redis lost whole from an expired one by its entries' accept times.)
local function stale_answer(meta, applied, expected)
  if redis.call('EXISTS', meta) == 0 then
    return nil
  end
  for _, mark in ipairs(expected) do
    local have = tonumber(redis.call('HGET', applied, mark[1]) or '0') or 0
    if have < mark[2] then
      return { 'STALE', mark[1], string.format('%.0f', have), string.format('%.0f', mark[2]) }
    end
  end
  return nil
end

-- Raised, never lowered: a batch re-run after an abort applies nothing new.
local function raise_marks(applied, marks)
  local raised = false
  for _, mark in ipairs(marks) do
    local have = tonumber(redis.call('HGET', applied, mark[1]) or '0') or 0
    if mark[2] > have then
      redis.call('HSET', applied, mark[1], string.format('%.0f', mark[2]))
      raised = true
    end
  end
  return raised
end

-- Keys first created by a script expire with the event, like the ones set at
-- creation (meta's expiry is the event's). A key that already has an expiry,
-- or does not exist (PTTL -2), is left as it is.
local function expire_with_event(meta, keys)
  local ttl = redis.call('PTTL', meta)
  if ttl > 0 then
    for _, key in ipairs(keys) do
      if redis.call('PTTL', key) == -1 then
        redis.call('PEXPIRE', key, ttl)
      end
    end
  end
end

-- A rebuild reads the log and swaps its state in while it holds the event.
-- Nothing is written meanwhile, not even a re-run of a batch: a decision
-- written after the read but committed after the swap would be in the log and
-- missing from Redis.
local function held(hold)
  return redis.call('EXISTS', hold) == 1
end

-- The line (docs/DESIGN.md, "First come, first served"). Every accepted
-- entry holds a ticket; the valid entries with the lowest tickets hold the
-- units, whichever instance decides them and in whatever order. The frontier
-- is the highest ticket a unit is kept for: `for_sale` at first; every
-- returned unit, and every ticket within it that will never take one (an
-- invalid entry, a hole), moves it one further, skipping tickets already
-- known dead (`dead`). A ticket within the frontier wins when decided; one
-- beyond it waits in line (`waitlist`, scored by ticket) and is promoted
-- when the frontier reaches it. The free-unit counter (`stock`) still guards
-- every win, so duplicate tickets (a lost span of Redis writes) can never
-- sell more units than there are: they only wait.

-- How deep the line is beyond the units: `line_depth` in meta when the event
-- sets it, else a tenth of the units, at least 100.
local function admission_limit(meta, frontier, ticket)
  local f = redis.call('HMGET', meta, 'for_sale', 'line_depth')
  local for_sale = tonumber(f[1]) or 0
  local depth = tonumber(f[2]) or math.max(100, math.ceil(for_sale / 10))
  local reached = tonumber(redis.call('GET', frontier) or '') or for_sale
  local issued = tonumber(redis.call('GET', ticket) or '0') or 0
  -- More units came back than the line holds: admission reopens.
  return math.max(for_sale + depth, reached), issued
end

local function read_frontier(meta, frontier)
  return tonumber(redis.call('GET', frontier) or '') or tonumber(redis.call('HGET', meta, 'for_sale') or '0') or 0
end

local function advance_frontier(frontier, dead, f)
  f = f + 1
  while redis.call('SREM', dead, f) == 1 do
    f = f + 1
  end
  redis.call('SET', frontier, f)
  return f
end

local function kill_ticket(frontier, dead, f, t)
  if t <= f then
    return advance_frontier(frontier, dead, f)
  end
  redis.call('SADD', dead, t)
  return f
end

-- k: { stock, waitlist, winners, decisions, next_unit, frontier, dead }.
-- Waitlist elements are `entry|member|accepted_at`. Each promotion gets a new
-- unit number (see decide.lua) and is returned as
-- `entry|member|unit|accepted_at|decided_at|ticket`. Returns the promotions
-- and the frontier.
local function promote_waiting(k, f, now)
  local promoted = {}
  while (tonumber(redis.call('GET', k.stock) or '0') or 0) > 0 do
    local head = redis.call('ZRANGE', k.waitlist, 0, 0, 'WITHSCORES')
    local t = #head > 0 and tonumber(head[2]) or nil
    if not t or t > f then
      break
    end
    redis.call('ZREM', k.waitlist, head[1])
    local waiting, member, at = string.match(head[1], '^([^|]+)|([^|]+)|?(%d*)$')
    if waiting and redis.call('HEXISTS', k.winners, member) == 0
      and redis.call('HGET', k.decisions, waiting) == 'SOLD_OUT|' then
      redis.call('DECR', k.stock)
      local unit = redis.call('INCR', k.next_unit)
      redis.call('HSET', k.decisions, waiting, 'WON|' .. unit)
      redis.call('HSET', k.winners, member, unit)
      promoted[#promoted + 1] = table.concat({ waiting, member, unit, at ~= '' and at or '0',
        string.format('%.0f', now), string.format('%.0f', t) }, '|')
    else
      -- It cannot take it (its member won meanwhile, its answer is no
      -- longer SOLD_OUT): it leaves the line and its place passes on.
      f = kill_ticket(k.frontier, k.dead, f, t)
    end
  end
  return promoted, f
end

-- ---- end of prelude; the script follows ----
