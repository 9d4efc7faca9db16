//! Rebuilding the projection from Kafka (`firstcome rebuild projections`).
//!
//! Kafka is the log of record; `event_entries`, `stock_movements` and the
//! `stock_ledger` counters are a projection of `survey-submitted`,
//! `stock-decided` and `gift-dispatched`. [`rebuild`] reads those three
//! topics again (committed records only, every partition from the beginning
//! to the high watermark taken when it starts, see
//! [`platform::kafka::LogReader`]) and records them into fresh tables in a
//! schema of their own, `rebuild_<timestamp>`, created `LIKE` the live ones.
//!
//! The records go through the recorder's own [`Recorder`] handler — the same
//! decoding, merging, SQL and poison isolation as the service — pointed at
//! the fresh schema by [`Store::in_schema`]. The projection is written to be
//! independent of the order records are read in (see [`crate::store`]), so a
//! rebuild that reads the topics in another interleaving than the service
//! did must end with the same rows; [`compare`] checks that it does, row by
//! row, on every column that derives from Kafka.
//!
//! What is not from Kafka is taken from the live tables: the ledger's
//! `total` and `safety_stock` (set by `firstcome event create`). The
//! `recorded_at`/`updated_at` timestamps are when a row was written, not
//! facts of the log, and are not compared.
//!
//! Compare on a drained pipeline: records produced after the snapshot, or
//! not yet recorded by the service, show as differences.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use platform::kafka::{BatchHandler, LogReader, Record, RecordContext};
use rdkafka::message::Message;

use crate::handler::Recorder;
use crate::settings::Settings;
use crate::store::{quote_ident, Store};

/// The `client.id` of the log reader; also the span group of its records.
pub const CLIENT_ID: &str = "firstcome-rebuild-projections";

/// A batch that fails for a reason that is not its records' (database or
/// registry unavailable) is tried this many times before the rebuild stops.
const BATCH_ATTEMPTS: u32 = 5;

/// One projected table: its key and the columns that derive from Kafka.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    pub key: &'static [&'static str],
    pub columns: &'static [&'static str],
}

/// The tables a rebuild writes and compares, in creation order.
pub const TABLES: [TableSpec; 3] = [
    TableSpec {
        name: "event_entries",
        key: &["entry_id"],
        columns: &[
            "event_id",
            "user_id",
            "answers",
            "client_channel",
            "submitted_at",
            "accepted_at",
            "outcome",
            "unit_no",
            "decided_at",
            "dispatch_status",
            "provider_ref",
            "dispatch_reason",
            "dispatched_at",
            "status",
        ],
    },
    TableSpec { name: "stock_movements", key: &["entry_id", "kind"], columns: &["event_id", "unit_no"] },
    TableSpec { name: "stock_ledger", key: &["event_id"], columns: &["total", "safety_stock", "issued", "returned"] },
];

/// At most this many differing rows are kept per table for the report.
pub const SAMPLE_LIMIT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Settings(#[from] platform::settings::SettingsError),
    #[error("database: {0}")]
    Database(#[from] platform::db::DbError),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", crate::store::query_text(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("schema registry client: {0}")]
    Registry(#[from] schemas::CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("a batch failed {attempts} times: {reason}")]
    Batch { attempts: u32, reason: String },
}

/// What a rebuild read and where it wrote.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The fresh schema holding the rebuilt tables.
    pub schema: String,
    /// The schema of the live tables (the connection's current schema).
    pub live_schema: String,
    /// Records read, per topic.
    pub records: BTreeMap<String, u64>,
    /// Records the recorder refused (poison): the service dead-lettered them too.
    pub dead_letters: u64,
    pub batches: u64,
    pub elapsed: Duration,
}

impl Rebuilt {
    pub fn total_records(&self) -> u64 {
        self.records.values().sum()
    }
}

/// How one rebuilt table compares with its live twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableComparison {
    pub table: &'static str,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    pub only_live: u64,
    pub only_rebuilt: u64,
    pub differing: u64,
    /// The first [`SAMPLE_LIMIT`] differences, by key.
    pub samples: Vec<RowDifference>,
}

impl TableComparison {
    pub fn is_equal(&self) -> bool {
        self.live_rows == self.rebuilt_rows && self.only_live == 0 && self.only_rebuilt == 0 && self.differing == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDifference {
    /// The key columns' values, joined by `/`.
    pub key: String,
    pub kind: DifferenceKind,
    /// For [`DifferenceKind::Differs`]: the columns whose values differ.
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceKind {
    OnlyLive,
    OnlyRebuilt,
    Differs,
}

impl DifferenceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::OnlyLive => "only live",
            DifferenceKind::OnlyRebuilt => "only rebuilt",
            DifferenceKind::Differs => "differs",
        }
    }
}

/// Every table's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub tables: Vec<TableComparison>,
}

impl Comparison {
    pub fn is_equal(&self) -> bool {
        self.tables.iter().all(TableComparison::is_equal)
    }
}

/// A rebuild and its comparison ([`run`]).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rebuilt: Rebuilt,
    pub comparison: Comparison,
    /// Whether the rebuilt schema was kept (only when it differs).
    pub kept: bool,
}

/// Rebuilds into a fresh schema and compares it with the live tables. The
/// rebuilt schema is dropped when equal and kept for inspection otherwise.
pub async fn run(settings: &Settings) -> Result<Outcome, RebuildError> {
    let pool = platform::db::pool(&settings.database)?;
    let rebuilt = rebuild(settings, &pool).await?;
    let comparison = compare(&pool, &rebuilt.live_schema, &rebuilt.schema).await?;
    let kept = !comparison.is_equal();
    if !kept {
        drop_schema(&pool, &rebuilt.schema).await?;
    }
    Ok(Outcome { rebuilt, comparison, kept })
}

/// Reads the three topics into the tables of a fresh schema (see the module
/// docs). The schema stays; [`drop_schema`] removes it.
pub async fn rebuild(settings: &Settings, pool: &Pool) -> Result<Rebuilt, RebuildError> {
    settings.validate()?;
    let started = Instant::now();
    let schema = format!(
        "rebuild_{}_{}",
        chrono::Utc::now().format("%Y%m%d_%H%M%S"),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let live_schema = create_schema(pool, &schema).await?;
    tracing::info!(%schema, %live_schema, "rebuilding the projections from Kafka");

    let topics = settings.kafka.topics();
    let recorder = Recorder::new(
        Store::in_schema(pool.clone(), schema.clone()),
        settings.registry.codec()?,
        topics.clone(),
        CLIENT_ID.into(),
    );
    let names = recorder.topics();
    let mut reader = LogReader::open(&settings.kafka, CLIENT_ID, &names).await?;

    let mut rebuilt = Rebuilt {
        schema,
        live_schema,
        records: names.iter().map(|t| (t.to_string(), 0)).collect(),
        dead_letters: 0,
        batches: 0,
        elapsed: Duration::ZERO,
    };
    let batch_size = settings.kafka.batch_max_records;
    let mut batch: Vec<Record> = Vec::with_capacity(batch_size);
    loop {
        let next = reader.next().await?;
        let done = next.is_none();
        if let Some(message) = next {
            *rebuilt.records.entry(message.topic().to_string()).or_default() += 1;
            let context = RecordContext::from_headers(message.headers());
            batch.push(Record { message, context });
        }
        if batch.len() >= batch_size || (done && !batch.is_empty()) {
            rebuilt.dead_letters += record_batch(&recorder, &batch).await? as u64;
            rebuilt.batches += 1;
            batch.clear();
        }
        if done {
            break;
        }
    }
    rebuilt.elapsed = started.elapsed();
    tracing::info!(
        schema = %rebuilt.schema,
        records = rebuilt.total_records(),
        dead_letters = rebuilt.dead_letters,
        elapsed_ms = rebuilt.elapsed.as_millis() as u64,
        "projections rebuilt"
    );
    Ok(rebuilt)
}

/// Records one batch, retrying what is not the records' fault; returns how
/// many records were refused as poison (not dead-lettered again: the service
/// did that when it met them).
async fn record_batch(recorder: &Recorder, batch: &[Record]) -> Result<usize, RebuildError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match recorder.handle(batch).await {
            Ok(outcome) => return Ok(outcome.dead_letters.len()),
            Err(error) if attempt >= BATCH_ATTEMPTS => {
                return Err(RebuildError::Batch { attempts: attempt, reason: error.chain().to_string() });
            }
            Err(error) => {
                tracing::warn!(attempt, error = %error.chain(), "rebuild batch failed; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        }
    }
}

/// Creates `schema` with empty twins of the projected tables (`LIKE … INCLUDING
/// ALL`: columns, defaults, CHECKs, keys and indexes; foreign keys are not
/// copied) and the ledger rows of the live events with nothing counted yet.
/// Returns the live tables' schema.
async fn create_schema(pool: &Pool, schema: &str) -> Result<String, RebuildError> {
    let mut client = pool.get().await?;
    let live: String = client.query_one("SELECT current_schema()", &[]).await?.try_get(0)?;
    let (new, old) = (quote_ident(schema), quote_ident(&live));
    let mut sql = format!("CREATE SCHEMA {new};\n");
    for table in TABLES {
        let name = quote_ident(table.name);
        sql.push_str(&format!("CREATE TABLE {new}.{name} (LIKE {old}.{name} INCLUDING ALL);\n"));
    }
    sql.push_str(&format!(
        "INSERT INTO {new}.stock_ledger (event_id, total, safety_stock)
         SELECT event_id, total, safety_stock FROM {old}.stock_ledger;"
    ));
    let tx = client.transaction().await?;
    tx.batch_execute(&sql).await?;
    tx.commit().await?;
    Ok(live)
}

/// Drops a rebuild's schema and its tables.
pub async fn drop_schema(pool: &Pool, schema: &str) -> Result<(), RebuildError> {
    let client = pool.get().await?;
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote_ident(schema))).await?;
    Ok(())
}

/// Compares every table of [`TABLES`] in `rebuilt` with its twin in `live`:
/// row counts, rows present on one side only, and rows whose Kafka-derived
/// columns differ (NULLs compare equal to NULLs).
pub async fn compare(pool: &Pool, live: &str, rebuilt: &str) -> Result<Comparison, RebuildError> {
    let client = pool.get().await?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let (live_rows, rebuilt_rows) = {
            let row = client.query_one(&count_sql(&table, live, rebuilt), &[]).await?;
            (row.try_get(0)?, row.try_get(1)?)
        };
        let mut comparison = TableComparison {
            table: table.name,
            live_rows,
            rebuilt_rows,
            only_live: 0,
            only_rebuilt: 0,
            differing: 0,
            samples: Vec::new(),
        };
        for row in client.query(&diff_sql(&table, live, rebuilt), &[]).await? {
            let key: String = row.try_get(0)?;
            let kind = match (row.try_get::<_, bool>(1)?, row.try_get::<_, bool>(2)?) {
                (true, false) => DifferenceKind::OnlyLive,
                (false, true) => DifferenceKind::OnlyRebuilt,
                _ => DifferenceKind::Differs,
            };
            match kind {
                DifferenceKind::OnlyLive => comparison.only_live += 1,
                DifferenceKind::OnlyRebuilt => comparison.only_rebuilt += 1,
                DifferenceKind::Differs => comparison.differing += 1,
            }
            if comparison.samples.len() < SAMPLE_LIMIT {
                comparison.samples.push(RowDifference { key, kind, columns: row.try_get(3)? });
            }
        }
        tables.push(comparison);
    }
    Ok(Comparison { tables })
}

fn count_sql(table: &TableSpec, live: &str, rebuilt: &str) -> String {
    let name = quote_ident(table.name);
    format!(
        "SELECT (SELECT count(*) FROM {l}.{name}), (SELECT count(*) FROM {r}.{name})",
        l = quote_ident(live),
        r = quote_ident(rebuilt),
    )
}

/// The rows that differ: key, in live, in rebuilt, differing columns; by key.
fn diff_sql(table: &TableSpec, live: &str, rebuilt: &str) -> String {
    let name = quote_ident(table.name);
    let on = table.key.iter().map(|k| format!("l.{k} = r.{k}", k = quote_ident(k))).collect::<Vec<_>>().join(" AND ");
    let first_key = quote_ident(table.key[0]);
    let key = table
        .key
        .iter()
        .map(|k| format!("COALESCE(l.{k}, r.{k})::text", k = quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" || '/' || ");
    let differing = table
        .columns
        .iter()
        .map(|c| format!("CASE WHEN l.{q} IS DISTINCT FROM r.{q} THEN '{c}' END", q = quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let row =
        |side: &str| table.columns.iter().map(|c| format!("{side}.{}", quote_ident(c))).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {key} AS key, r.{first_key} IS NULL AS only_live, l.{first_key} IS NULL AS only_rebuilt,
                array_remove(ARRAY[{differing}]::text[], NULL) AS columns
         FROM {l}.{name} l FULL JOIN {r}.{name} r ON {on}
         WHERE l.{first_key} IS NULL OR r.{first_key} IS NULL OR ROW({lrow}) IS DISTINCT FROM ROW({rrow})
         ORDER BY 1",
        l = quote_ident(live),
        r = quote_ident(rebuilt),
        lrow = row("l"),
        rrow = row("r"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_joins_on_the_whole_key_and_names_each_column() {
        let sql = diff_sql(&TABLES[1], "public", "rebuild_x");
        assert!(sql.contains("ON l.\"entry_id\" = r.\"entry_id\" AND l.\"kind\" = r.\"kind\""), "{sql}");
        assert!(sql.contains("THEN 'unit_no' END"), "{sql}");
        assert!(
            sql.contains("FROM \"public\".\"stock_movements\" l FULL JOIN \"rebuild_x\".\"stock_movements\" r"),
            "{sql}"
        );
    }

    #[test]
    fn timestamps_of_writing_are_not_compared() {
        for table in TABLES {
            assert!(!table.columns.iter().any(|c| *c == "recorded_at" || *c == "updated_at"), "{}", table.name);
        }
    }

    #[test]
    fn a_table_is_equal_only_without_any_difference() {
        let equal = TableComparison {
            table: "t",
            live_rows: 3,
            rebuilt_rows: 3,
            only_live: 0,
            only_rebuilt: 0,
            differing: 0,
            samples: Vec::new(),
        };
        assert!(equal.is_equal());
        assert!(!TableComparison { differing: 1, ..equal.clone() }.is_equal());
        assert!(!TableComparison { rebuilt_rows: 2, ..equal.clone() }.is_equal());
        assert!(!Comparison { tables: vec![equal.clone(), TableComparison { only_live: 1, ..equal }] }.is_equal());
    }
}
