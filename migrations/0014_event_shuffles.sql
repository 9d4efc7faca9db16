-- The pre-queue shuffle of an event, kept past its Redis keys (which expire a
-- day after the event closes, or vanish with a Redis loss), so that
-- `firstcome verify shuffle` and the public report still have it.
--
-- Written by the operator's `firstcome` only (as the owner): the commitment and
-- the seed by `event create`, before anyone can queue (the same pair it commits
-- in the waiting room's Redis hash, where ingest reads it); the draw as the
-- room ran it by `event close`, from the room's keys. Ingest, whose report
-- reads it when Redis no longer has the room, may only read (grants.sql).

CREATE TABLE event_shuffles (
    event_id     text PRIMARY KEY REFERENCES events (event_id),
    -- hex(SHA-256(seed)), public from the create on.
    commitment   text NOT NULL,
    -- 64 hex characters; secret until the opening (ingest reveals it then).
    seed         text NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    -- The room as `event close` found it; NULL until then (or if it never opened).
    mode         text,
    opened_at_ms bigint,
    pre_queued   bigint,
    rate_per_sec bigint,
    burst        bigint,
    archived_at  timestamptz
);

-- The pre-queue in the room's order (place 1 first): each member's draw, when
-- they passed the gate, or the ticket they still held in line at the archive.
CREATE TABLE event_shuffle_draws (
    event_id     text NOT NULL REFERENCES event_shuffles (event_id),
    place        bigint NOT NULL CHECK (place > 0),
    member       text NOT NULL,
    draw         text NOT NULL,
    passed_at_ms bigint,
    ticket       bigint,
    PRIMARY KEY (event_id, place)
);
