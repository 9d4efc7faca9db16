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
