-- One row per ENTRY, not per member. A member can hold more than one entry
-- id: another producer's entry and then the member's own through ingest, or
-- a second entry after Redis lost the first-entry mark. Each was answered
-- 202 somewhere and must end recorded with its outcome (docs/DESIGN.md,
-- invariant 3); the stock stage answers the later ones with the first
-- entry's standing (ALREADY_WON or the same loss), so the second row never
-- holds a second unit. The unique index silently dropped those rows.
DROP INDEX IF EXISTS event_entries_one_per_member;
-- A member's entries are still looked up by (event, member).
CREATE INDEX IF NOT EXISTS event_entries_by_member ON event_entries (event_id, user_id);
