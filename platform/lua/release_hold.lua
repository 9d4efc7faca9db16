-- release_hold: a rebuild that did not swap lets go of its hold on the event
-- (stock-processor/src/rebuild.rs), unless the hold is no longer its own.
--
-- KEYS: 1 hold
-- ARGV: 1 the rebuild's hold token
-- Returns 1 when the hold was removed, 0 when it was another's or gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
