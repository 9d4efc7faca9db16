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

-- ---- end of prelude; the script follows ----
