-- A WON the payout guard refused is answered for its member: the sender
-- records a REFUSED dispatch (nothing sent, no unit returned) and the
-- recorder shows the entry as refused, never left "won".
ALTER TABLE gift_dispatches DROP CONSTRAINT IF EXISTS gift_dispatches_status_check;
ALTER TABLE gift_dispatches ADD CONSTRAINT gift_dispatches_status_check
    CHECK (status IN ('SENT', 'FAILED', 'REFUSED'));

ALTER TABLE event_entries DROP CONSTRAINT IF EXISTS event_entries_dispatch_status_check;
ALTER TABLE event_entries ADD CONSTRAINT event_entries_dispatch_status_check
    CHECK (dispatch_status IN ('SENT', 'FAILED', 'REFUSED'));

ALTER TABLE event_entries DROP CONSTRAINT IF EXISTS event_entries_status_check;
ALTER TABLE event_entries ADD CONSTRAINT event_entries_status_check
    CHECK (status IN ('pending', 'won', 'lost', 'sent', 'failed', 'refused'));
