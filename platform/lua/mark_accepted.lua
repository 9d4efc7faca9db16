-- mark_accepted: the pending first-entry mark becomes acknowledged (see ingest/src/admission.rs).
--
-- KEYS: entered; ARGV: member, entry id
local mark = redis.call('HGET', KEYS[1], ARGV[1])
if not mark then return 0 end
if mark == 'A|' .. ARGV[2] then return 1 end
local prefix = 'P|' .. ARGV[2] .. '|'
if string.sub(mark, 1, #prefix) == prefix then
  redis.call('HSET', KEYS[1], ARGV[1], 'A|' .. ARGV[2])
  return 1
end
return 0
