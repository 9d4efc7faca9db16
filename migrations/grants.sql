-- Least privilege: what each service's role may do in this database. Applied by
-- `firstcome db migrate` (platform::db::migrate) after the migrations, on every run and
-- as a whole (it is idempotent), so the grants always match the tables: a migration that
-- adds a table or a query on another table adds its grant here, and nothing else does.
--
-- The roles are made by whoever runs the server (the local stack: stack/bin/stack; a
-- deployment: README, "Operations"); they log in, own nothing and cannot create
-- anything. The owner of the database (the role `firstcome db migrate` runs as) is the
-- only one that runs DDL; services never migrate. Members and phones are not here at all:
-- they are read from the shop's replica (`replica.url`): phones by the sender, purchases by
-- the stock stage (restoring a lost event's eligibility) and `event create`.

DO $$ BEGIN
    -- Only the owner and the service roles connect; no temporary tables for anyone else.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO firstcome_ingest, firstcome_stock, firstcome_recorder, firstcome_sender',
                   current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO firstcome_ingest, firstcome_stock, firstcome_recorder, firstcome_sender;

-- Start from nothing, so a grant removed here is removed from the database too.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, firstcome_ingest, firstcome_stock, firstcome_recorder, firstcome_sender;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC, firstcome_ingest, firstcome_stock, firstcome_recorder, firstcome_sender;

-- ingest: the events it admits entries to (state refresh) and a member's own entry
-- (GET /api/entries/{id}); for the operations dashboard on its ops listener, the
-- dispatch counts through dispatch_figures (never a dispatch or claim row). No writes at
-- all: an event's status (closing, or reopening a closed one) is the operator's, with
-- the owner's credentials (`firstcome event close`), never a public service's.
GRANT SELECT ON events, event_entries TO firstcome_ingest;
REVOKE ALL ON FUNCTION dispatch_figures(text, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dispatch_figures(text, double precision) TO firstcome_ingest;
-- The public report's pre-queue draw once Redis no longer holds the room (migration
-- 0014): its commitment, seed and summary. Read only; the operator's `firstcome` writes it.
GRANT SELECT ON event_shuffles TO firstcome_ingest;

-- operator_actions (the audit of operator actions, migration 0011): no service role at all.
-- Only the owner, as whom the operator's `firstcome` runs, writes it.

-- stock (group `stock`): reads an event's row to restore the event when Redis lost it
-- whole (stock_processor::restore); it decides in Redis and writes nothing here.
GRANT SELECT ON events TO firstcome_stock;

-- recorder (group `recording`): the entries projection and the stock ledger.
GRANT SELECT ON events TO firstcome_recorder;
GRANT SELECT, INSERT, UPDATE ON event_entries, stock_movements TO firstcome_recorder;
GRANT SELECT, UPDATE ON stock_ledger TO firstcome_recorder;

-- sender (group `dispatch`): the payout guard, its dispatches, its parked gifts and the outbox;
-- and the entries it reads (never writes) to pay a WON only for an entry recorded from
-- `survey-submitted` (sender::entries).
GRANT SELECT ON events, event_entries TO firstcome_sender;
GRANT UPDATE (payout_claimed) ON events TO firstcome_sender;
GRANT SELECT, INSERT, UPDATE ON payout_claims TO firstcome_sender;
GRANT SELECT, INSERT ON payout_refusals, gift_dispatches TO firstcome_sender;
GRANT SELECT, INSERT, UPDATE, DELETE ON parked_gifts TO firstcome_sender;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO firstcome_sender;
GRANT USAGE ON SEQUENCE outbox_id_seq TO firstcome_sender;
