-- hold_settle: keeps new admissions waiting while Redis has forgotten
-- tickets an admit call still in flight was given (ingest/src/admission.rs,
-- "in flight"). An instance whose call was answered but is not settled yet
-- (its admission fence still waits for the replicas, or the instance was
-- slow to go on) cannot count those tickets as a floor: the fence may fail,
-- and then nobody holds them. But if the counter went below them meanwhile,
-- the other instances must not hand them out again. So the wait the admit
-- script starts after a raise (`settle`) is started, or kept, until the
-- call is settled (its floor then raises the counter) or refused (nobody
-- holds its tickets, and the line goes on from the counter, with no gap).
-- KEYS: ticket, settle
-- ARGV: the highest ticket in flight, settle_ms
-- Returns 1 when the wait was (re)started, 0 when the counter covers the
-- tickets (or is gone: an event lost whole is the stock stage's to restore).
local issued = tonumber(redis.call('GET', KEYS[1]) or '')
if issued and issued < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
