-- Gifts whose outcome the provider's answers cannot settle (docs/provider.md).

-- When the sender first asked the provider to issue the claim's gift (set
-- before the call is made). From then on a gift may exist under the entry's
-- key, across runs, restarts and instances: the claim is FAILED only after
-- the provider says nothing was issued (lookup 404 `not_found`), never on
-- what we know alone (a phone blanked or deleted since).
ALTER TABLE payout_claims ADD COLUMN issue_started_at timestamptz;

-- A gift that may have been issued and whose provider answers settle
-- nothing (a lookup with an unreadable body, a 404 without `not_found`,
-- another key's gift): set aside so it never holds its partition. Its claim
-- stays 'claimed' (the unit is neither paid twice nor handed on); the
-- sender's retrier looks it up again at `next_try_at`, with backoff, until
-- the provider answers; the row goes in the transaction that records the
-- outcome. `firstcome gifts parked` lists them.
CREATE TABLE parked_gifts (
    entry_id     uuid PRIMARY KEY REFERENCES payout_claims (entry_id),
    event_id     text        NOT NULL,
    user_id      text        NOT NULL,
    unit_no      integer     NOT NULL,
    -- The WON record's context (message-id, correlation-id, traceparent):
    -- the outcome records continue its trace.
    headers      jsonb       NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    -- Retries since it was parked, and when the next one is due (a retrier
    -- that takes a row pushes this forward first: a lease, so two instances
    -- never work on one gift at once).
    tries        integer     NOT NULL DEFAULT 0,
    next_try_at  timestamptz NOT NULL,
    last_error   text        NOT NULL
);
CREATE INDEX parked_gifts_due ON parked_gifts (next_try_at);
CREATE INDEX parked_gifts_by_event ON parked_gifts (event_id);

-- The dashboard's figures gain the parked count (same arguments, so the
-- grant in grants.sql still names it).
DROP FUNCTION dispatch_figures(text, double precision);
CREATE FUNCTION dispatch_figures(p_event_id text, p_retrying_after_secs double precision)
RETURNS TABLE (sent bigint, failed bigint, claimed bigint, retrying bigint, awaiting bigint, parked bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT
        (SELECT count(*) FROM gift_dispatches WHERE event_id = p_event_id AND status = 'SENT'),
        (SELECT count(*) FROM gift_dispatches WHERE event_id = p_event_id AND status = 'FAILED'),
        (SELECT count(*) FROM payout_claims WHERE event_id = p_event_id AND status = 'claimed'),
        (SELECT count(*) FROM payout_claims WHERE event_id = p_event_id AND status = 'claimed'
            AND claimed_at < now() - make_interval(secs => p_retrying_after_secs)),
        (SELECT count(*) FROM event_entries e WHERE e.event_id = p_event_id AND e.status = 'won'
            AND NOT EXISTS (SELECT 1 FROM payout_claims c WHERE c.entry_id = e.entry_id)),
        (SELECT count(*) FROM parked_gifts WHERE event_id = p_event_id)
$$;
REVOKE ALL ON FUNCTION dispatch_figures(text, double precision) FROM PUBLIC;
