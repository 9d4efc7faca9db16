-- The payout guard: PostgreSQL's own, Redis-independent limit on what the
-- `dispatch` group may pay. Redis decides fast, but one Redis with
-- `appendfsync everysec` can forget the last second of decisions, and a
-- `stock-decided` record can be replayed or forged. Before any provider call
-- the sender claims the payout here, in one transaction; a WON that cannot
-- claim is never sent (it is refused, recorded below and dead-lettered).

-- The guarded counter: claims currently holding a unit of the event. Taken
-- with `UPDATE … SET payout_claimed = payout_claimed + 1 WHERE … AND
-- payout_claimed < total_stock - safety_stock` (no read-then-write race), so
-- the CHECK is a second line, never the first.
ALTER TABLE events ADD COLUMN payout_claimed integer NOT NULL DEFAULT 0
    CHECK (payout_claimed >= 0 AND payout_claimed <= total_stock - safety_stock);

-- One claim per won entry and at most one per member and event, ever: a
-- member whose gift failed (status 'released', unit returned to stock) keeps
-- the row, so no later entry of that member is paid.
CREATE TABLE payout_claims (
    entry_id    uuid PRIMARY KEY,
    event_id    text        NOT NULL REFERENCES events (event_id),
    user_id     text        NOT NULL,
    unit_no     integer     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('claimed', 'sent', 'released')),
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    settled_at  timestamptz,
    UNIQUE (event_id, user_id)
);

-- WON decisions that could not claim: never sent, never compensated (their
-- unit is not returned to stock), dead-lettered for an operator.
CREATE TABLE payout_refusals (
    entry_id    uuid PRIMARY KEY,
    event_id    text        NOT NULL,
    user_id     text        NOT NULL,
    unit_no     integer,
    reason      text        NOT NULL
                CHECK (reason IN ('member_already_paid', 'stock_exhausted', 'unknown_event')),
    refused_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payout_refusals_by_event ON payout_refusals (event_id, reason);

-- Gifts recorded before the guard existed hold their claims too, so an
-- upgrade never lets an event pay its stock a second time: one claim per
-- member (a SENT one first), and the counter set to the units still held.
INSERT INTO payout_claims (entry_id, event_id, user_id, unit_no, status, claimed_at, settled_at)
SELECT DISTINCT ON (d.event_id, d.user_id)
       d.entry_id, d.event_id, d.user_id, d.unit_no,
       CASE d.status WHEN 'SENT' THEN 'sent' ELSE 'released' END,
       d.created_at, d.created_at
FROM gift_dispatches d
JOIN events e ON e.event_id = d.event_id
ORDER BY d.event_id, d.user_id, (d.status = 'SENT') DESC, d.created_at
ON CONFLICT DO NOTHING;

-- An event already oversold keeps the counter at its limit: no more claims.
UPDATE events e
SET payout_claimed = LEAST(
    e.total_stock - e.safety_stock,
    (SELECT count(*) FROM payout_claims c WHERE c.event_id = e.event_id AND c.status = 'sent'))
WHERE EXISTS (SELECT 1 FROM payout_claims c WHERE c.event_id = e.event_id);
