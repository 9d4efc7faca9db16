-- rebuild_swap: swaps an event's rebuilt stock state in, atomically, if
-- nothing was decided since the rebuild read the log (see stock-processor/src/rebuild.rs).
--
-- KEYS: live  1 meta, 2 stock, 3 next_unit, 4 applied,
--             5 decisions, 6 winners, 7 members, 8 released, 9 free_units, 10 waitlist,
--             11 entered, 12 entries
--       temp  13 applied,
--             14 decisions, 15 winners, 16 members, 17 released, 18 free_units, 19 waitlist,
--             20 entered, 21 entries
--       live  22 promoted (emptied: see stock-processor/src/rebuild.rs)
-- ARGV: 1 stock, 2 next_unit, 3 event_id, 4 state channel, then (field, mark)
--       pairs: the live `applied` hash the rebuild saw (the compare).
-- Returns {'SWAPPED', status}, {'MOVED', field} (nothing written) or
-- {'UNKNOWN_EVENT'}.
local meta, stock, next_unit, applied = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

if redis.call('EXISTS', meta) == 0 then
  return { 'UNKNOWN_EVENT' }
end

-- Compare: the live marks are exactly those the read saw. A mark that moved
-- means a batch was decided meanwhile and the rebuilt state may lack it.
local seen = {}
for i = 5, #ARGV, 2 do
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
if live_count ~= (#ARGV - 4) / 2 then
  return { 'MOVED', 'applied' }
end

-- First-entry marks and entry lookups are merged, not replaced: an admission
-- in flight (a pending mark) or acknowledged after the read keeps its mark.
for _, pair in ipairs({ { KEYS[11], KEYS[20] }, { KEYS[12], KEYS[21] } }) do
  local fields = redis.call('HGETALL', pair[1])
  for i = 1, #fields, 2 do
    redis.call('HSETNX', pair[2], fields[i], fields[i + 1])
  end
end

-- Swap: every rebuilt key replaces its live twin (an empty one deletes it).
for i = 4, 12 do
  local temp = KEYS[i + 9]
  if redis.call('EXISTS', temp) == 1 then
    redis.call('RENAME', temp, KEYS[i])
  else
    redis.call('DEL', KEYS[i])
  end
end
redis.call('DEL', KEYS[22])
redis.call('SET', stock, ARGV[1])
redis.call('SET', next_unit, ARGV[2])

-- The status follows the rebuilt counter, as the decide and release scripts
-- would have left it; ingest hears of a change on the state channel.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HMGET', meta, 'status', 'close_at_ms')
local status, close_at = fields[1], tonumber(fields[2])
local left = tonumber(ARGV[1])
local next_status = status
if status ~= 'closed' then
  if left <= 0 then
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
  for i = 2, 12 do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
return { 'SWAPPED', next_status }
