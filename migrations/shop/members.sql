-- The shop's member database (not firstcome's): members, their phones and purchases.
-- firstcome reads it only on a streaming replica (`replica.url`); the local stack runs
-- it as its own PostgreSQL primary (5433) with hot standbys (5434, 5435), and
-- `firstcome members seed` (playing the shop) writes it on the primary. Idempotent,
-- applied to the schema first on the search_path (tests use one schema each).

CREATE TABLE IF NOT EXISTS members (
    member_id   text PRIMARY KEY,
    name        text        NOT NULL,
    phone       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS purchases (
    purchase_id   bigserial PRIMARY KEY,
    member_id     text        NOT NULL REFERENCES members (member_id),
    product_id    text        NOT NULL,
    purchased_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS purchases_by_product ON purchases (product_id, member_id);
