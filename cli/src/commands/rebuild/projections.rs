//! `firstcome rebuild projections`: the PostgreSQL projections (entries with
//! their outcomes and dispatch status, stock movements, the ledger) rebuilt
//! from Kafka into a fresh schema and compared with the live tables. The
//! work is `recorder::rebuild`; this wires the settings and prints.
//!
//! Exit status: 0 when the rebuilt tables equal the live ones (the fresh
//! schema is then dropped), 1 on any difference (the schema is kept for
//! inspection; its name is printed).

use std::fmt::Write;

use recorder::rebuild::Outcome;

use crate::CliSettings;

/// The recorder's settings for the same stack as the CLI's.
pub fn recorder_settings(settings: &CliSettings) -> recorder::Settings {
    recorder::Settings {
        kafka: settings.kafka.clone(),
        registry: settings.registry.clone(),
        database: settings.database.clone(),
        telemetry: settings.telemetry.clone(),
        ..Default::default()
    }
}

/// Rebuilds and compares; the caller decides what a difference means.
pub async fn rebuild(settings: &CliSettings) -> anyhow::Result<Outcome> {
    use anyhow::Context;
    recorder::rebuild::run(&recorder_settings(settings)).await.context("Failed to rebuild the projections")
}

/// The comparison as one JSON document.
pub fn json(outcome: &Outcome) -> serde_json::Value {
    let rebuilt = &outcome.rebuilt;
    let tables: Vec<_> = outcome
        .comparison
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "table": t.table,
                "live_rows": t.live_rows,
                "rebuilt_rows": t.rebuilt_rows,
                "only_live": t.only_live,
                "only_rebuilt": t.only_rebuilt,
                "differing": t.differing,
                "samples": t.samples.iter().map(|d| serde_json::json!({
                    "key": d.key, "kind": d.kind.as_str(), "columns": d.columns,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "equal": outcome.comparison.is_equal(),
        "schema": rebuilt.schema,
        "live_schema": rebuilt.live_schema,
        "records": rebuilt.records,
        "batches": rebuilt.batches,
        "dead_letters": rebuilt.dead_letters,
        "elapsed_ms": rebuilt.elapsed.as_millis() as u64,
        "tables": tables,
    })
}

/// The report: what was read, a table per projection, then the differences.
pub fn render(outcome: &Outcome) -> String {
    let rebuilt = &outcome.rebuilt;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "read {} records in {} ms ({} batches, {} refused as poison) into schema {}",
        rebuilt.total_records(),
        rebuilt.elapsed.as_millis(),
        rebuilt.batches,
        rebuilt.dead_letters,
        rebuilt.schema
    );
    for (topic, count) in &rebuilt.records {
        let _ = writeln!(out, "  {topic}: {count}");
    }
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>13} {:>10}",
        "table", "live", "rebuilt", "only live", "only rebuilt", "differing"
    );
    for t in &outcome.comparison.tables {
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>10} {:>13} {:>10}",
            t.table, t.live_rows, t.rebuilt_rows, t.only_live, t.only_rebuilt, t.differing
        );
    }
    for t in &outcome.comparison.tables {
        for d in &t.samples {
            let columns = if d.columns.is_empty() { String::new() } else { format!(": {}", d.columns.join(", ")) };
            let _ = writeln!(out, "  {} {} {}{columns}", t.table, d.key, d.kind.as_str());
        }
    }
    if outcome.comparison.is_equal() {
        let _ = writeln!(
            out,
            "equal: the projections rebuilt from Kafka match the live tables in {} (schema {} dropped)",
            rebuilt.live_schema, rebuilt.schema
        );
    } else {
        let _ = writeln!(
            out,
            "DIFFERENT: the rebuilt tables are kept in schema {} (drop it with: DROP SCHEMA {} CASCADE)",
            rebuilt.schema, rebuilt.schema
        );
    }
    out
}
