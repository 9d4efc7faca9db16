-- mark_accepted_many: mark_accepted for many members of one event in one call
-- (ingest's acknowledged entries, grouped: see ingest/src/admission.rs).
--
-- KEYS: entered, pending; ARGV: member, entry id, member, entry id, ...
-- Answers one 1/0 per pair, as mark_accepted: 1 when the member's mark is
-- (now) `A|<entry>`, 0 when it was gone or belongs to another entry. An
-- acknowledged entry is in the log: it can no longer become a hole.
local done = {}
for i = 1, #ARGV - 1, 2 do
  local member, entry = ARGV[i], ARGV[i + 1]
  local mark = redis.call('HGET', KEYS[1], member)
  local ok = 0
  if mark then
    if mark == 'A|' .. entry then
      ok = 1
    else
      local prefix = 'P|' .. entry .. '|'
      if string.sub(mark, 1, #prefix) == prefix then
        redis.call('HSET', KEYS[1], member, 'A|' .. entry)
        ok = 1
      end
    end
  end
  if ok == 1 then
    redis.call('ZREM', KEYS[2], entry)
  end
  done[#done + 1] = ok
end
return done
