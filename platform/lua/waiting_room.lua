-- waiting_room: one member's turn in an event's waiting line, atomically
-- (see ingest/src/waiting_room.rs). Runs behind prelude.lua
-- (platform::scripts::waiting_room), before the admit script.
--
-- KEYS: meta, eligible, entered, room (hash: seq, served, tokens, ts,
--       opened_at, seed), line (sorted set member -> ticket), prequeue
--       (sorted set member -> arrival ms), passed (hash member -> ms),
--       draws (sorted set, score 0, '<draw>|<member>': the shuffle's draws)
-- ARGV: member, rate (admissions per second, shared by every instance),
--       burst (most admitted at once), mode ('fifo' | 'shuffle'), seed (the
--       event's committed seed), draw (hex SHA-256(seed|member), 64 chars),
--       commitment (hex SHA-256(seed), as the caller knows it)
-- Returns {code, position, waiting, retry_ms}:
--   'pass'      go on to the admit script (turn come, or nothing to wait for:
--               unknown or closed event, a non-buyer, a member who entered)
--   'pre_queue' before open_at: in the pre-queue at `position` (arrival
--               order) of `waiting`; it opens in `retry_ms`
--   'wait'      after open_at: `position` tickets ahead of the gate (1 = next),
--               `waiting` tickets not yet let through; try again in `retry_ms`
--   'reseed'    the room's commitment is not the caller's (the room was made
--               anew): the caller reads the committed seed again and retries
--
-- The line is a ticket counter: every arrival after the opening takes the
-- next ticket (ZADD NX: a retry keeps its place); a token bucket refilled at
-- `rate` per second moves the gate (`served`) forward over the tickets in
-- order, whether or not their holders are still there (as the large
-- waiting-room products do: the outflow is a rate, an absent holder's turn
-- is spent). A holder whose ticket is at or behind the gate passes, however
-- late they come back. The pre-queue becomes the first tickets at the opening
-- instant, in arrival order (fifo) or by draw (shuffle: SHA-256(seed|member),
-- computed by the caller from the seed committed before anyone queued,
-- whose hash is public and which is revealed after the opening, so anyone
-- can replay the draw: ingest/src/shuffle.rs; the fastest connection gains
-- nothing, and no one can know or buy a better draw).
local now = redis_now_ms()
local member, rate, burst, mode = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local state = redis.call('HMGET', KEYS[1], 'status', 'open_at_ms', 'close_at_ms')
if not state[2] or state[1] == 'closed' or (state[3] and now >= tonumber(state[3])) then
  return {'pass', 0, 0, 0}
end
-- Nobody waits to be told they cannot enter, or that they already did.
if redis.call('SISMEMBER', KEYS[2], member) == 0 or redis.call('HEXISTS', KEYS[3], member) == 1 then
  return {'pass', 0, 0, 0}
end
if redis.call('HEXISTS', KEYS[7], member) == 1 then
  return {'pass', 0, 0, 0}
end
local open_at = tonumber(state[2])

local opened = redis.call('HGET', KEYS[4], 'opened_at')
if not opened and mode == 'shuffle' and redis.call('HGET', KEYS[4], 'commitment') ~= ARGV[7] then
  return {'reseed', 0, 0, 0}
end

if now < open_at then
  redis.call('ZADD', KEYS[6], 'NX', now, member)
  if mode == 'shuffle' then
    redis.call('ZADD', KEYS[8], 0, ARGV[6] .. '|' .. member)
  end
  expire_with_event(KEYS[1], { KEYS[6], KEYS[8] })
  local rank = redis.call('ZRANK', KEYS[6], member)
  return {'pre_queue', rank + 1, redis.call('ZCARD', KEYS[6]), open_at - now}
end

-- The opening instant (the first call at or after open_at): the pre-queue
-- becomes tickets 1..n, the bucket starts full at open_at.
-- The draws sort by '<draw>|<member>' (ZRANGE of equal scores is
-- lexicographic): by draw, then member id. They stay, for the replay.
if not opened then
  local early = redis.call('ZRANGE', KEYS[6], 0, -1)
  if mode == 'shuffle' then
    early = redis.call('ZRANGE', KEYS[8], 0, -1)
    for i, d in ipairs(early) do
      early[i] = string.sub(d, 66)
    end
  end
  for i, m in ipairs(early) do
    redis.call('ZADD', KEYS[5], i, m)
  end
  redis.call('DEL', KEYS[6])
  redis.call('HSET', KEYS[4], 'opened_at', now, 'seq', #early, 'served', 0,
    'tokens', burst, 'ts', open_at, 'seed', ARGV[5], 'mode', mode, 'pre_queued', #early,
    'rate', rate, 'burst', burst)
  expire_with_event(KEYS[1], { KEYS[4], KEYS[5] })
end

local room = redis.call('HMGET', KEYS[4], 'seq', 'served', 'tokens', 'ts')
local seq, served = tonumber(room[1]), tonumber(room[2])
local tokens, ts = tonumber(room[3]), tonumber(room[4])
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
local ticket = tonumber(redis.call('ZSCORE', KEYS[5], member))
if not ticket then
  seq = seq + 1
  ticket = seq
  redis.call('ZADD', KEYS[5], ticket, member)
  expire_with_event(KEYS[1], { KEYS[5] })
end
local advance = math.min(math.floor(tokens), seq - served)
if advance > 0 then
  served = served + advance
  tokens = tokens - advance
end
redis.call('HSET', KEYS[4], 'seq', seq, 'served', served, 'tokens', string.format('%.6f', tokens), 'ts', ts)
if ticket <= served then
  redis.call('ZREM', KEYS[5], member)
  redis.call('HSET', KEYS[7], member, now)
  expire_with_event(KEYS[1], { KEYS[7] })
  return {'pass', 0, 0, 0}
end
local position = ticket - served
-- When the gate reaches this ticket at `rate` per second, from the tokens held.
local retry_ms = math.ceil((position - tokens) * 1000 / rate)
return {'wait', position, seq - served, math.max(retry_ms, 1)}
