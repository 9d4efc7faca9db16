-- Reward events and the shop's read replica (members and purchases).
-- The replica is the eligibility source and holds the phone numbers gifts go to;
-- firstcome only ever reads it (`firstcome members seed` fills it for demos and tests).

CREATE TABLE events (
    event_id      text PRIMARY KEY,
    name          text        NOT NULL,
    product_id    text        NOT NULL,        -- members who bought it are eligible
    total_stock   integer     NOT NULL CHECK (total_stock >= 0),
    safety_stock  integer     NOT NULL DEFAULT 0 CHECK (safety_stock >= 0 AND safety_stock <= total_stock),
    open_at       timestamptz NOT NULL,
    close_at      timestamptz NOT NULL CHECK (close_at > open_at),
    questions     jsonb       NOT NULL DEFAULT '[]'::jsonb,   -- required survey question ids
    gift_product  text        NOT NULL DEFAULT 'coffee-10000',
    gift_amount   integer     NOT NULL DEFAULT 10000,         -- KRW
    status        text        NOT NULL DEFAULT 'scheduled'
                  CHECK (status IN ('scheduled', 'open', 'sold_out', 'closed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    closed_at     timestamptz
);

CREATE TABLE members (
    member_id   text PRIMARY KEY,
    name        text        NOT NULL,
    phone       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE purchases (
    purchase_id   bigserial PRIMARY KEY,
    member_id     text        NOT NULL REFERENCES members (member_id),
    product_id    text        NOT NULL,
    purchased_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchases_by_product ON purchases (product_id, member_id);
