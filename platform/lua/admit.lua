-- admit: the first-entry decision of one request, atomically (see
-- ingest/src/admission.rs). Runs behind prelude.lua (platform::scripts::admit).
--
-- KEYS: meta, eligible, entered, entries, stock
-- ARGV: member, new entry id, resume_after_ms, admit_new (1, or 0 when this
--       instance was told the event sold out: known members are still
--       answered, nobody new is admitted)
local now = redis_now_ms()
local state = redis.call('HMGET', KEYS[1], 'status', 'open_at_ms', 'close_at_ms')
if state[1] == 'closed' or (state[3] and now >= tonumber(state[3])) then
  return {'closed', '', 0, now}
end
if state[2] and now < tonumber(state[2]) then
  return {'too_early', '', tonumber(state[2]), now}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  return {'not_eligible', '', 0, now}
end
local mark = redis.call('HGET', KEYS[3], ARGV[1])
if mark then
  if string.sub(mark, 1, 2) == 'A|' then
    return {'already_entered', string.sub(mark, 3), 0, now}
  end
  local entry, at = string.match(mark, '^P|([^|]+)|(%d+)$')
  if not entry then
    return {'corrupt_mark', mark, 0, now}
  end
  at = tonumber(at)
  if now - at < tonumber(ARGV[3]) then
    return {'in_progress', entry, at, now}
  end
  return {'resume', entry, at, now}
end
local stock = tonumber(redis.call('GET', KEYS[5]) or '0') or 0
if stock <= 0 or ARGV[4] == '0' then
  return {'sold_out', '', 0, now}
end
redis.call('HSET', KEYS[3], ARGV[1], 'P|' .. ARGV[2] .. '|' .. now)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[1])
-- The first admission creates `entered` and `entries`: they expire with the
-- event, like the keys written at creation.
expire_with_event(KEYS[1], { KEYS[3], KEYS[4] })
return {'accept', ARGV[2], now, now}
