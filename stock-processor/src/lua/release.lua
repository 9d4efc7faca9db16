-- release: a won unit goes back to stock (compensation after a failed gift).
--
-- KEYS: 1 meta, 2 stock, 3 winners, 4 decisions, 5 free_units, 6 released
-- ARGV: 1 entry_id, 2 user_id, 3 unit_no, 4 event_id, 5 state channel
-- Returns 'RELEASED', 'REOPENED' (released and the event reopened),
-- 'DUPLICATE' (this entry's unit was already returned), 'MISMATCH' (the entry
-- did not win this unit for this member) or 'UNKNOWN_EVENT'.
local meta, stock, winners, decisions, free_units, released =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local entry, member, unit = ARGV[1], ARGV[2], ARGV[3]
local event_id, channel = ARGV[4], ARGV[5]
-- Redis' clock, as in decide.lua: no host's skew decides a reopening.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

if redis.call('EXISTS', meta) == 0 then
  return 'UNKNOWN_EVENT'
end
-- Checked before the released mark, so a wrong release cannot block the right one,
-- and only the entry that won the unit can return it (never twice per unit).
if redis.call('HGET', decisions, entry) ~= 'WON|' .. unit or redis.call('HGET', winners, member) ~= unit then
  return 'MISMATCH'
end
if redis.call('SADD', released, entry) == 0 then
  return 'DUPLICATE'
end
local after = redis.call('INCR', stock)
redis.call('RPUSH', free_units, unit)

local result = 'RELEASED'
if after == 1 then
  local fields = redis.call('HMGET', meta, 'status', 'close_at_ms')
  local close_at = tonumber(fields[2])
  if fields[1] == 'sold_out' and close_at ~= nil and now < close_at then
    redis.call('HSET', meta, 'status', 'open')
    redis.call('PUBLISH', channel, cjson.encode({ event_id = event_id, status = 'open' }))
    result = 'REOPENED'
  end
end

local ttl = redis.call('PTTL', meta)
if ttl > 0 then
  for _, key in ipairs({ released, free_units }) do
    if redis.call('PTTL', key) == -1 then
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return result
