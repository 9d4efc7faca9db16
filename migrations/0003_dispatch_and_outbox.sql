-- The `dispatch` group's own state: one dispatch per won entry, and the outbox
-- its relay publishes to Kafka (gift-dispatched, stock-released).

CREATE TABLE gift_dispatches (
    entry_id      uuid PRIMARY KEY,
    event_id      text        NOT NULL,
    user_id       text        NOT NULL,
    unit_no       integer     NOT NULL,
    status        text        NOT NULL CHECK (status IN ('SENT', 'FAILED')),
    provider_ref  text,
    attempts      integer     NOT NULL,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gift_dispatches_by_event ON gift_dispatches (event_id, status);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    topic         text        NOT NULL,
    message_key   text        NOT NULL,
    payload       bytea       NOT NULL,     -- already in the Confluent wire format
    headers       jsonb       NOT NULL,     -- message-id, correlation-id, traceparent
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
