-- Projections written by the `recording` group from Kafka, and the stock ledger.

-- One row per member per event (the seed's separate entries table). Rows are
-- created by whichever record arrives first (entry or decision), so the
-- submission columns may be filled after the outcome columns.
CREATE TABLE event_entries (
    entry_id         uuid PRIMARY KEY,
    event_id         text        NOT NULL,
    user_id          text        NOT NULL,
    answers          jsonb,
    client_channel   text,
    submitted_at     timestamptz,
    accepted_at      timestamptz,
    outcome          text CHECK (outcome IN ('WON', 'SOLD_OUT', 'ALREADY_WON', 'INELIGIBLE', 'CLOSED')),
    unit_no          integer,
    decided_at       timestamptz,
    dispatch_status  text CHECK (dispatch_status IN ('SENT', 'FAILED')),
    provider_ref     text,
    dispatch_reason  text,
    dispatched_at    timestamptz,
    -- pending → won / lost → sent / failed, derived from the columns above.
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'won', 'lost', 'sent', 'failed')),
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX event_entries_one_per_member ON event_entries (event_id, user_id);
CREATE INDEX event_entries_by_status ON event_entries (event_id, status);

-- Per event: what was for sale and what moved. issued − returned = units held.
CREATE TABLE stock_ledger (
    event_id      text PRIMARY KEY REFERENCES events (event_id),
    total         integer     NOT NULL,
    safety_stock  integer     NOT NULL,
    issued        integer     NOT NULL DEFAULT 0 CHECK (issued >= 0),
    returned      integer     NOT NULL DEFAULT 0 CHECK (returned >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (issued - returned <= total - safety_stock)
);

-- The movements behind the ledger's counters, one per entry and kind, so a
-- redelivered decision or dispatch never counts twice.
CREATE TABLE stock_movements (
    entry_id     uuid        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('issued', 'returned')),
    event_id     text        NOT NULL,
    unit_no      integer,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, kind)
);
