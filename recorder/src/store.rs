//! The batch's SQL: one transaction, four statements at most whatever the
//! batch size, each taking the batch as arrays (`unnest`) and prepared once
//! per connection (`prepare_cached`).
//!
//! 1. [`CREATE_ENTRIES`]: create missing rows from whichever record came
//!    first, `ON CONFLICT DO NOTHING` on the entry id. One row per ENTRY: a
//!    member with two entry ids (another producer's, then ingest's) has two
//!    rows, each with the outcome the stock stage gave it.
//! 2. [`FILL_ENTRIES`]: fill the still-empty column groups (submission,
//!    decision, dispatch, each as a whole) and derive `status` from the
//!    result. Columns never empty again, so the status never moves backwards,
//!    and a redelivered record matches no hole and writes nothing. The one
//!    overwrite is the waitlist promotion ([`crate::facts::Decision::supersedes`]):
//!    a WON replaces a stored SOLD_OUT of the same entry id (lost → won), never
//!    the reverse.
//! 3. [`MOVE_STOCK`]: insert the stock movements `ON CONFLICT DO NOTHING` and
//!    add to the ledger only what was actually inserted, so a redelivered
//!    decision or dispatch never counts twice. Movements are facts about the
//!    stock and are kept even when the event has no ledger row.
//! 4. [`FILL_RETURNED_UNITS`]: a FAILED dispatch recorded before its WON
//!    returned a unit whose number was not known yet; it takes it now, so the
//!    movements end the same whatever order the topics were read in (which a
//!    rebuild from Kafka relies on, see [`crate::rebuild`]).
//!
//! [`Store`] says where: the live tables, or a rebuild's schema of its own.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::facts::{EntryChanges, MovementKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", query_text(.0))]
    Query(#[from] tokio_postgres::Error),
}

impl StoreError {
    /// The SQLSTATE, when the server answered with an error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Query(error) => error.code().map(|state| state.code()),
            StoreError::Pool(_) => None,
        }
    }

    /// Whether the rows themselves are refused: SQLSTATE class 22 (data
    /// exception) or 23 (integrity constraint violation). The same rows fail
    /// the same way on every try, so retrying the batch as it is would block
    /// its partitions forever. Everything else — no connection, a
    /// serialization failure (40001), a deadlock (40P01), a missing table —
    /// is about the database, not the records, and worth retrying as is.
    pub fn is_deterministic(&self) -> bool {
        self.sqlstate().is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
    }
}

/// The server's message with its SQLSTATE and constraint, which the driver's
/// own text leaves out.
pub(crate) fn query_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(", constraint {constraint}"));
            }
            if let Some(detail) = db.detail() {
                text.push_str(&format!(": {detail}"));
            }
            text
        }
        None => error.to_string(),
    }
}

/// Creates the rows that do not exist yet, one per entry id (a member's
/// second entry id gets a row of its own).
pub const CREATE_ENTRIES: &str = "
INSERT INTO event_entries (entry_id, event_id, user_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
ON CONFLICT (entry_id) DO NOTHING";

/// Whether the batch's decision (`u`) is taken for the row (`e`): the row has
/// none yet, or it is the waitlist promotion of a SOLD_OUT entry (the SQL
/// twin of [`crate::facts::Decision::supersedes`]). Written against `e`
/// itself, not a snapshot of it, so a row changed by a concurrent instance is
/// judged again on its new values.
macro_rules! takes_decision {
    () => {
        "(u.outcome IS NOT NULL AND (e.outcome IS NULL OR (e.outcome = 'SOLD_OUT' AND u.outcome = 'WON')))"
    };
}

/// Fills empty column groups and derives the status; see the module docs.
/// Each group is anchored on one column that is set whenever the group is
/// (submitted_at, outcome, dispatch_status), so a group is taken whole from
/// one record and never mixed from two. The decision group is taken whole
/// when [`takes_decision!`] holds, promotion included.
pub const FILL_ENTRIES: &str = concat!(
    "
UPDATE event_entries e SET
    answers         = COALESCE(e.answers, u.answers),
    client_channel  = COALESCE(e.client_channel, u.client_channel),
    submitted_at    = COALESCE(e.submitted_at, u.submitted_at),
    accepted_at     = COALESCE(e.accepted_at, u.accepted_at),
    outcome         = CASE WHEN ",
    takes_decision!(),
    " THEN u.outcome    ELSE e.outcome    END,
    unit_no         = CASE WHEN ",
    takes_decision!(),
    " THEN u.unit_no    ELSE e.unit_no    END,
    decided_at      = CASE WHEN ",
    takes_decision!(),
    " THEN u.decided_at ELSE e.decided_at END,
    dispatch_status = COALESCE(e.dispatch_status, u.dispatch_status),
    provider_ref    = CASE WHEN e.dispatch_status IS NULL THEN u.provider_ref ELSE e.provider_ref END,
    dispatch_reason = CASE WHEN e.dispatch_status IS NULL THEN u.dispatch_reason ELSE e.dispatch_reason END,
    dispatched_at   = COALESCE(e.dispatched_at, u.dispatched_at),
    ticket          = COALESCE(u.ticket, e.ticket),
    status = CASE
        WHEN COALESCE(e.dispatch_status, u.dispatch_status) = 'SENT'   THEN 'sent'
        WHEN COALESCE(e.dispatch_status, u.dispatch_status) = 'FAILED' THEN 'failed'
        WHEN COALESCE(e.dispatch_status, u.dispatch_status) = 'REFUSED' THEN 'refused'
        WHEN (CASE WHEN ",
    takes_decision!(),
    " THEN u.outcome ELSE e.outcome END) = 'WON' THEN 'won'
        WHEN COALESCE(e.outcome, u.outcome) IS NOT NULL               THEN 'lost'
        ELSE 'pending'
    END,
    updated_at = now()
FROM unnest(
    $1::uuid[], $2::jsonb[], $3::text[], $4::timestamptz[], $5::timestamptz[],
    $6::text[], $7::int4[], $8::timestamptz[],
    $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::int8[]
) AS u(entry_id, answers, client_channel, submitted_at, accepted_at,
       outcome, unit_no, decided_at,
       dispatch_status, provider_ref, dispatch_reason, dispatched_at, ticket)
WHERE e.entry_id = u.entry_id
  AND (   (e.submitted_at IS NULL AND u.submitted_at IS NOT NULL)
       OR ",
    takes_decision!(),
    "
       OR (e.dispatch_status IS NULL AND u.dispatch_status IS NOT NULL))"
);

/// Inserts movements and adds the inserted ones to the ledger, per event.
/// A returned unit without a unit number in the batch takes the entry's
/// (statement 2 has already run in this transaction, so it is visible).
pub const MOVE_STOCK: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int4[]) AS m(entry_id, kind, event_id, unit_no)
), moved AS (
    INSERT INTO stock_movements (entry_id, kind, event_id, unit_no)
    SELECT m.entry_id, m.kind, m.event_id, COALESCE(m.unit_no, e.unit_no)
    FROM input m LEFT JOIN event_entries e ON e.entry_id = m.entry_id
    ON CONFLICT DO NOTHING
    RETURNING event_id, kind
), counts AS (
    SELECT event_id,
           (count(*) FILTER (WHERE kind = 'issued'))::int4   AS issued,
           (count(*) FILTER (WHERE kind = 'returned'))::int4 AS returned
    FROM moved GROUP BY event_id
), ledger AS (
    UPDATE stock_ledger l
    SET issued = l.issued + c.issued, returned = l.returned + c.returned, updated_at = now()
    FROM counts c WHERE l.event_id = c.event_id
    RETURNING l.event_id
)
SELECT c.event_id, c.issued, c.returned, EXISTS (SELECT 1 FROM ledger WHERE ledger.event_id = c.event_id) AS in_ledger
FROM counts c";

/// Gives returned movements recorded without a unit number (the FAILED came
/// before its WON) the unit of their entry, now that it is known.
pub const FILL_RETURNED_UNITS: &str = "
UPDATE stock_movements m SET unit_no = e.unit_no
FROM event_entries e
WHERE m.entry_id = ANY($1::uuid[]) AND m.kind = 'returned' AND m.unit_no IS NULL
  AND e.entry_id = m.entry_id AND e.unit_no IS NOT NULL";

/// What one batch did to the database.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows created by this batch.
    pub entries_created: u64,
    /// Rows whose columns this batch filled (new rows included).
    pub entries_filled: u64,
    /// Per event: movements newly inserted (issued, returned).
    pub moved: HashMap<String, Moved>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub issued: i32,
    pub returned: i32,
    /// False when the event has no ledger row: the counters were not updated.
    pub in_ledger: bool,
}

impl BatchReport {
    /// Adds what another write did (records written one by one add up to a batch).
    pub fn absorb(&mut self, other: BatchReport) {
        self.entries_created += other.entries_created;
        self.entries_filled += other.entries_filled;
        for (event_id, moved) in other.moved {
            let total = self.moved.entry(event_id).or_insert(Moved { in_ledger: true, ..Moved::default() });
            total.issued += moved.issued;
            total.returned += moved.returned;
            total.in_ledger &= moved.in_ledger;
        }
    }

    pub fn issued(&self) -> i64 {
        self.moved.values().map(|m| i64::from(m.issued)).sum()
    }
    pub fn returned(&self) -> i64 {
        self.moved.values().map(|m| i64::from(m.returned)).sum()
    }
}

/// Where batches are written: a pool, and the schema whose tables take the
/// writes (`None`: the connection's own search path, i.e. the live tables).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    schema: Option<String>,
}

impl Store {
    /// The live projection.
    pub fn live(pool: Pool) -> Self {
        Self { pool, schema: None }
    }

    /// The tables of `schema` (a rebuild): every batch transaction sets its
    /// search path to it, so the very same statements write there.
    pub fn in_schema(pool: Pool, schema: impl Into<String>) -> Self {
        Self { pool, schema: Some(schema.into()) }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Writes a merged batch in one transaction; nothing is committed on error.
    pub async fn record(&self, changes: &[EntryChanges]) -> Result<BatchReport, StoreError> {
        let mut report = BatchReport::default();
        if changes.is_empty() {
            return Ok(report);
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(schema) = &self.schema {
            // Scoped to this transaction. PostgreSQL re-parses a prepared
            // statement when the search path differs from its preparation,
            // so cached statements never write to the wrong tables.
            tx.batch_execute(&format!("SET LOCAL search_path TO {}", quote_ident(schema))).await?;
        }
        write(&tx, changes, &mut report).await?;
        tx.commit().await?;
        Ok(report)
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements of one batch, inside the caller's transaction.
async fn write(
    tx: &deadpool_postgres::Transaction<'_>,
    changes: &[EntryChanges],
    report: &mut BatchReport,
) -> Result<(), StoreError> {
    // 1. Create missing rows.
    let ids: Vec<Uuid> = changes.iter().map(|c| c.key.entry_id).collect();
    let events: Vec<&str> = changes.iter().map(|c| c.key.event_id.as_str()).collect();
    let users: Vec<&str> = changes.iter().map(|c| c.key.user_id.as_str()).collect();
    let create = tx.prepare_cached(CREATE_ENTRIES).await?;
    report.entries_created = tx.execute(&create, &[&ids, &events, &users]).await?;

    // 2. Fill the holes, derive the status.
    let columns = Columns::of(changes);
    let fill = tx.prepare_cached(FILL_ENTRIES).await?;
    report.entries_filled = tx
        .execute(
            &fill,
            &[
                &ids,
                &columns.answers,
                &columns.client_channel,
                &columns.submitted_at,
                &columns.accepted_at,
                &columns.outcome,
                &columns.unit_no,
                &columns.decided_at,
                &columns.dispatch_status,
                &columns.provider_ref,
                &columns.dispatch_reason,
                &columns.dispatched_at,
                &columns.ticket,
            ],
        )
        .await?;

    // 3. Stock movements and the ledger.
    let movements: Vec<_> = changes.iter().flat_map(EntryChanges::movements).collect();
    if !movements.is_empty() {
        let move_ids: Vec<Uuid> = movements.iter().map(|m| m.entry_id).collect();
        let kinds: Vec<&str> = movements.iter().map(|m| m.kind.as_str()).collect();
        let move_events: Vec<&str> = movements.iter().map(|m| m.event_id.as_str()).collect();
        let units: Vec<Option<i32>> = movements.iter().map(|m| m.unit_no).collect();
        let move_stock = tx.prepare_cached(MOVE_STOCK).await?;
        for row in tx.query(&move_stock, &[&move_ids, &kinds, &move_events, &units]).await? {
            report.moved.insert(
                row.try_get(0)?,
                Moved { issued: row.try_get(1)?, returned: row.try_get(2)?, in_ledger: row.try_get(3)? },
            );
        }
    }

    // 4. Unit numbers of units returned before their WON was recorded.
    let won: Vec<Uuid> = changes
        .iter()
        .filter(|c| c.decision.as_ref().is_some_and(|d| d.unit_no.is_some()))
        .map(|c| c.key.entry_id)
        .collect();
    if !won.is_empty() {
        let fill_units = tx.prepare_cached(FILL_RETURNED_UNITS).await?;
        tx.execute(&fill_units, &[&won]).await?;
    }
    Ok(())
}

/// The batch as one array per column of [`FILL_ENTRIES`], `None` where the
/// batch says nothing.
struct Columns<'a> {
    answers: Vec<Option<&'a serde_json::Value>>,
    client_channel: Vec<Option<&'a str>>,
    submitted_at: Vec<Option<DateTime<Utc>>>,
    accepted_at: Vec<Option<DateTime<Utc>>>,
    outcome: Vec<Option<&'static str>>,
    unit_no: Vec<Option<i32>>,
    decided_at: Vec<Option<DateTime<Utc>>>,
    dispatch_status: Vec<Option<&'static str>>,
    provider_ref: Vec<Option<&'a str>>,
    dispatch_reason: Vec<Option<&'a str>>,
    dispatched_at: Vec<Option<DateTime<Utc>>>,
    /// The decision's ticket (the stage's word), else the submission's.
    ticket: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn of(changes: &'a [EntryChanges]) -> Self {
        let s = |c: &'a EntryChanges| c.submission.as_ref();
        let d = |c: &'a EntryChanges| c.decision.as_ref();
        let g = |c: &'a EntryChanges| c.dispatch.as_ref();
        Self {
            answers: changes.iter().map(|c| s(c).map(|s| &s.answers)).collect(),
            client_channel: changes.iter().map(|c| s(c).map(|s| s.client_channel.as_str())).collect(),
            submitted_at: changes.iter().map(|c| s(c).map(|s| s.submitted_at)).collect(),
            accepted_at: changes.iter().map(|c| s(c).map(|s| s.accepted_at)).collect(),
            outcome: changes.iter().map(|c| d(c).map(|d| d.outcome.as_str())).collect(),
            unit_no: changes.iter().map(|c| d(c).and_then(|d| d.unit_no)).collect(),
            decided_at: changes.iter().map(|c| d(c).map(|d| d.decided_at)).collect(),
            dispatch_status: changes.iter().map(|c| g(c).map(|g| g.status.as_str())).collect(),
            provider_ref: changes.iter().map(|c| g(c).and_then(|g| g.provider_ref.as_deref())).collect(),
            dispatch_reason: changes.iter().map(|c| g(c).and_then(|g| g.reason.as_deref())).collect(),
            dispatched_at: changes.iter().map(|c| g(c).map(|g| g.dispatched_at)).collect(),
            ticket: changes
                .iter()
                .map(|c| d(c).and_then(|d| d.ticket).or_else(|| s(c).and_then(|s| s.ticket)))
                .collect(),
        }
    }
}

/// Kinds of rows counted in `firstcome_recorder_rows_total{kind}`.
pub fn row_kinds(report: &BatchReport) -> [(&'static str, u64); 4] {
    [
        ("entry_created", report.entries_created),
        ("entry_filled", report.entries_filled),
        (MovementKind::Issued.as_str(), report.issued().max(0) as u64),
        (MovementKind::Returned.as_str(), report.returned().max(0) as u64),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_single_records_add_up_to_the_batch() {
        let mut total = BatchReport::default();
        let one = |issued, returned, in_ledger| BatchReport {
            entries_created: 1,
            entries_filled: 1,
            moved: HashMap::from([("ev".to_string(), Moved { issued, returned, in_ledger })]),
        };
        total.absorb(one(1, 0, true));
        total.absorb(one(0, 1, true));
        assert_eq!((total.entries_created, total.entries_filled), (2, 2));
        assert_eq!((total.issued(), total.returned()), (1, 1));
        assert!(total.moved["ev"].in_ledger);
        total.absorb(one(1, 0, false));
        assert!(!total.moved["ev"].in_ledger, "one write without a ledger row is reported");
    }
}
