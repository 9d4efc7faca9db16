-- rebuild_swap: swaps an event's rebuilt stock state in, atomically, if
-- nothing was decided since the rebuild read Redis' state, and lets go of the
-- rebuild's hold on the event (see stock-processor/src/rebuild.rs).
--
-- KEYS: live  1 meta, 2 stock, 3 next_unit, 4 applied,
--             5 decisions, 6 winners, 7 members, 8 released, 9 waitlist,
--             10 entered, 11 entries, 12 tickets, 13 dead
--       temp  14 applied,
--             15 decisions, 16 winners, 17 members, 18 released, 19 waitlist,
--             20 entered, 21 entries, 22 tickets, 23 dead
--       live  24 hold (`promoted` is left as it is: a release re-run after an
--             aborted transaction announces its promotion again),
--             25 ticket, 26 frontier (`pending` is ingest's and left as is)
-- ARGV: 1 stock, 2 next_unit, 3 event_id, 4 state channel, 5 the rebuild's
--       hold token, 6 the highest ticket rebuilt, 7 the frontier, then
--       (field, mark) pairs: the live `applied` hash the rebuild saw (the
--       compare).
-- Runs behind prelude.lua (platform::scripts::rebuild_swap).
-- Returns {'SWAPPED', status}, {'MOVED', field} (nothing written),
-- {'NOT_HELD'} (the hold expired or is another's: nothing written) or
-- {'UNKNOWN_EVENT'}.
local meta, stock, next_unit, applied = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

if redis.call('EXISTS', meta) == 0 then
  return { 'UNKNOWN_EVENT' }
end

-- The hold kept every decision out since the rebuild read Redis' state;
-- without it (it expired, a failover lost it) one may have been written
-- that the read did not see.
if redis.call('GET', KEYS[24]) ~= ARGV[5] then
  return { 'NOT_HELD' }
end

-- Compare: the live marks are exactly those the read saw. A mark that moved
-- means a batch was decided meanwhile and the rebuilt state may lack it.
local seen = {}
for i = 8, #ARGV, 2 do
  seen[ARGV[i]] = ARGV[i + 1]
end
local live = redis.call('HGETALL', applied)
local live_count = 0
for i = 1, #live, 2 do
  live_count = live_count + 1
  if seen[live[i]] ~= live[i + 1] then
    return { 'MOVED', live[i] }
  end
end
if live_count ~= (#ARGV - 7) / 2 then
  return { 'MOVED', 'applied' }
end

-- First-entry marks, entry lookups and tickets are merged, not replaced: an
-- admission in flight (a pending mark) or acknowledged after the read keeps
-- its mark and its ticket (ingest is not held by the hold).
for _, pair in ipairs({ { KEYS[10], KEYS[20] }, { KEYS[11], KEYS[21] }, { KEYS[12], KEYS[22] } }) do
  local fields = redis.call('HGETALL', pair[1])
  for i = 1, #fields, 2 do
    redis.call('HSETNX', pair[2], fields[i], fields[i + 1])
  end
end

-- Swap: every rebuilt key replaces its live twin (an empty one deletes it).
for i = 4, 13 do
  local temp = KEYS[i + 10]
  if redis.call('EXISTS', temp) == 1 then
    redis.call('RENAME', temp, KEYS[i])
  else
    redis.call('DEL', KEYS[i])
  end
end
redis.call('DEL', KEYS[24])
redis.call('SET', stock, ARGV[1])
redis.call('SET', next_unit, ARGV[2])
redis.call('SET', KEYS[26], ARGV[7])
-- Never below what ingest issued meanwhile, nor below the log's tickets.
local issued = tonumber(redis.call('GET', KEYS[25]) or '0') or 0
if tonumber(ARGV[6]) > issued then
  redis.call('SET', KEYS[25], ARGV[6])
end

-- The status follows admission (the tickets issued against the line's
-- limit), as the decide and release scripts would have left it; ingest hears
-- of a change on the state channel.
local now = redis_now_ms()
local fields = redis.call('HMGET', meta, 'status', 'close_at_ms')
local status, close_at = fields[1], tonumber(fields[2])
local limit, now_issued = admission_limit(meta, KEYS[26], KEYS[25])
local next_status = status
if status ~= 'closed' then
  if now_issued >= limit then
    next_status = 'sold_out'
  elseif status == 'sold_out' and close_at ~= nil and now < close_at then
    next_status = 'open'
  end
end
if next_status ~= status then
  redis.call('HSET', meta, 'status', next_status)
  redis.call('PUBLISH', ARGV[4], cjson.encode({ event_id = ARGV[3], status = next_status }))
end

-- Every key expires with the event, like the ones written at creation.
local ttl = redis.call('PTTL', meta)
if ttl > 0 then
  for _, key in ipairs({ KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
    KEYS[11], KEYS[12], KEYS[13], KEYS[25], KEYS[26] }) do
    if redis.call('EXISTS', key) == 1 then
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return { 'SWAPPED', next_status }
