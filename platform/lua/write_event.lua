-- write_event: the last step of writing an event's keys (platform::event_keys::write_event):
-- the stock counter, the eligible set's expiry and `meta`, atomically, `meta` last.
-- A script rather than MULTI/EXEC: the stock stage restores a lost event with it, and
-- its Redis user may run scripts, not transactions.
-- KEYS: 1 meta, 2 stock, 3 eligible
-- ARGV: 1 for_sale, 2 expire_at (ms, Unix), then (field, value) pairs of meta
-- Returns 1.
local meta, stock, eligible = KEYS[1], KEYS[2], KEYS[3]
local for_sale, expire_at = ARGV[1], ARGV[2]

redis.call('SET', stock, for_sale)
redis.call('PEXPIREAT', stock, expire_at)
redis.call('PEXPIREAT', eligible, expire_at)
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', meta, unpack(fields))
redis.call('PEXPIREAT', meta, expire_at)
return 1
