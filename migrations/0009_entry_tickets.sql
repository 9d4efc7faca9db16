-- The ticket: an entry's place in line, a per-event sequence number ingest's
-- admit script takes atomically with the first-entry mark (or the stock
-- stage, for an entry another producer wrote without one). FCFS is judged
-- on (ticket, accepted_at, entry_id); entries recorded before tickets
-- existed have none and are ordered by accept time alone.
ALTER TABLE event_entries ADD COLUMN IF NOT EXISTS ticket bigint;
CREATE INDEX IF NOT EXISTS event_entries_by_ticket ON event_entries (event_id, ticket, accepted_at, entry_id);
