-- How many entries may wait in line beyond the units (`firstcome event create
-- --line-depth`): ingest admits until the tickets issued reach for-sale + this
-- depth. Kept here so a lost event restored from PostgreSQL admits as far as
-- the operator set; NULL (events created before) is the default rule,
-- `EventMeta::default_line_depth`.
ALTER TABLE events ADD COLUMN IF NOT EXISTS line_depth integer CHECK (line_depth >= 0);
