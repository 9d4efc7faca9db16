-- Who did what to which event, and when: one row per operator action (an event
-- created or closed, a rebuild, a dead-letter replay, a repair), written by the
-- operator's `firstcome` (cli/src/audit_trail.rs) before the action runs and
-- completed with its outcome after. An action whose row cannot be written does not run.
--
-- Only the database owner, as whom `firstcome` runs, writes here: grants.sql gives
-- no service role any privilege on this table. The rows are append-only: a row
-- may only move once from `started` to `done` or `failed`; nothing deletes them.

CREATE TABLE operator_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The database's clock, one clock for every operator's machine.
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- `--operator` (or FIRSTCOME_OPERATOR_NAME), else the OS user who ran the command.
    operator    text NOT NULL CHECK (operator <> ''),
    -- The database role the command logged in as.
    db_user     text NOT NULL DEFAULT session_user,
    -- `event create`, `event close`, `rebuild redis`, `rebuild projections`,
    -- `dlq replay`, `reconcile repair`.
    action      text NOT NULL,
    event_id    text,
    -- The command's arguments and, once finished, what it reported.
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb,
    outcome     text NOT NULL DEFAULT 'started' CHECK (outcome IN ('started', 'done', 'failed')),
    error       text
);

CREATE INDEX operator_actions_by_event ON operator_actions (event_id, started_at);

CREATE FUNCTION operator_actions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.outcome = 'started' AND NEW.outcome IN ('done', 'failed')
       AND NEW.id = OLD.id AND NEW.started_at = OLD.started_at AND NEW.operator = OLD.operator
       AND NEW.db_user = OLD.db_user AND NEW.action = OLD.action
       AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'operator_actions is append-only (% refused)', TG_OP;
END $$;

CREATE TRIGGER operator_actions_append_only BEFORE UPDATE OR DELETE ON operator_actions
    FOR EACH ROW EXECUTE FUNCTION operator_actions_append_only();
CREATE TRIGGER operator_actions_no_truncate BEFORE TRUNCATE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION operator_actions_append_only();
