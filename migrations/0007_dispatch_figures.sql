-- The operations dashboard (ingest's ops listener) shows how the gifts of an
-- event are going. Ingest's role may not read dispatch or payout rows
-- (migrations/grants.sql): it gets the counts through this function, which
-- runs as its owner (SECURITY DEFINER, search_path pinned) and returns
-- numbers only. EXECUTE is granted in grants.sql.
CREATE FUNCTION dispatch_figures(p_event_id text, p_retrying_after_secs double precision)
RETURNS TABLE (sent bigint, failed bigint, claimed bigint, retrying bigint, awaiting bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT
        (SELECT count(*) FROM gift_dispatches WHERE event_id = p_event_id AND status = 'SENT'),
        (SELECT count(*) FROM gift_dispatches WHERE event_id = p_event_id AND status = 'FAILED'),
        (SELECT count(*) FROM payout_claims WHERE event_id = p_event_id AND status = 'claimed'),
        (SELECT count(*) FROM payout_claims WHERE event_id = p_event_id AND status = 'claimed'
            AND claimed_at < now() - make_interval(secs => p_retrying_after_secs)),
        (SELECT count(*) FROM event_entries e WHERE e.event_id = p_event_id AND e.status = 'won'
            AND NOT EXISTS (SELECT 1 FROM payout_claims c WHERE c.entry_id = e.entry_id))
$$;
REVOKE ALL ON FUNCTION dispatch_figures(text, double precision) FROM PUBLIC;
