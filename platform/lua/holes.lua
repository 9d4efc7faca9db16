-- holes: admitted entries the broker never acknowledged, past their deadline
-- (see ingest/src/holes.rs). Runs behind prelude.lua (platform::scripts::holes).
--
-- A hole holds a ticket no entry will ever claim: ingest died between the
-- admit script and the broker's acknowledgement, and the member did not come
-- back in time. Its place must pass down the line, or its unit stays idle
-- until close. Ingest announces each hole on `survey-submitted` (a hole
-- record: the same entry id, no answers, channel "hole"); the stock stage
-- decides it CLOSED and passes its ticket on. An acknowledged entry is never
-- a hole: it is in the log.
--
-- KEYS: 1 pending, 2 holes, 3 entries, 4 entered, 5 tickets
-- ARGV: 1 most holes per call, 2 announce again after (ms)
-- Returns the holes to announce, 'entry|member|accepted_at|ticket' each: the
-- ones just found and those announced more than ARGV[2] ago and still not
-- decided (the stock stage deletes a hole from `holes` when it decides it).
local pending, holes, entries, entered, tickets = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local most = tonumber(ARGV[1]) or 100
local again_after = tonumber(ARGV[2]) or 10000
local now = redis_now_ms()

for _, entry in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'LIMIT', 0, most)) do
  redis.call('ZREM', pending, entry)
  local member = redis.call('HGET', entries, entry)
  local mark = member and redis.call('HGET', entered, member)
  local marked, at = nil, nil
  if mark then
    marked, at = string.match(mark, '^P|([^|]+)|(%d+)$')
  end
  if marked ~= entry then
    at = nil
  end
  local ticket = redis.call('HGET', tickets, entry)
  if member and at and ticket then
    redis.call('HSET', holes, entry, table.concat({ member, at, ticket, '0' }, '|'))
  end
end

local out = {}
local found = redis.call('HGETALL', holes)
for i = 1, #found, 2 do
  if #out >= most then
    break
  end
  local member, at, ticket, announced = string.match(found[i + 1], '^([^|]+)|(%d+)|(%d+)|(%d+)$')
  if member and now - tonumber(announced) >= again_after then
    redis.call('HSET', holes, found[i], table.concat({ member, at, ticket, string.format('%.0f', now) }, '|'))
    out[#out + 1] = table.concat({ found[i], member, at, ticket }, '|')
  end
end
if #out > 0 then
  local ttl = redis.call('PTTL', pending)
  if ttl > 0 and redis.call('PTTL', holes) == -1 then
    redis.call('PEXPIRE', holes, ttl)
  end
end
return out
