//! What the pipeline did with a rush, read from the stores once it drained:
//! decisions and gifts per second, stock remaining over time, the time from
//! the last request to the last decision and the last gift, FCFS fidelity
//! (winners among the first N accepted entries by accept time), the
//! oversell check and the invariants, each service's peak RSS; and the
//! drill's whole JSON report with the baselines measured in the same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::RushReport;
use audit::Stores;

/// One second of the pipeline, from the start of the rush.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineSecond {
    pub second: i64,
    pub decisions: i64,
    pub won: i64,
    pub gifts: i64,
    /// Units for sale not yet won at the end of this second.
    pub stock_remaining: i64,
}

/// A service process's memory.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceMemory {
    pub name: String,
    pub pid: u32,
    /// Peak resident set (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PipelineReport {
    pub drained: bool,
    pub drained_after_last_request_s: f64,
    pub for_sale: i64,
    pub entries: i64,
    pub decided: i64,
    pub won: i64,
    pub sent: i64,
    pub failed: i64,
    /// Last decision / last gift, seconds after the last request was sent.
    pub last_decision_after_last_request_s: Option<f64>,
    pub last_gift_after_last_request_s: Option<f64>,
    /// Winners among the first N accepted entries by accept time, N = winners.
    pub fcfs_first_n: i64,
    pub fcfs_winners_in_first_n: i64,
    pub fcfs_fidelity: f64,
    /// Gifts sent beyond the stock for sale (must be 0).
    pub oversold: i64,
    /// Members told "won" whose WON the payout guard refused (must be 0).
    pub phantom_successes: i64,
    pub invariants_hold: bool,
    pub failing_invariants: Vec<String>,
    pub timeline: Vec<PipelineSecond>,
}

/// Waits until every accepted entry is recorded and decided and no WON
/// waits for its gift (or `timeout`), then reads the pipeline's figures.
pub async fn pipeline(
    stores: &Stores,
    event_id: &str,
    rush: &RushReport,
    timeout: Duration,
    provider_url: Option<&str>,
) -> anyhow::Result<PipelineReport> {
    let client = stores.db().await?;
    let started = Instant::now();
    let accepted = rush.accepted.len() as i64;
    let drained = loop {
        let row = client
            .query_one(
                "SELECT count(*),
                        count(*) FILTER (WHERE status = 'pending'),
                        count(*) FILTER (WHERE status = 'won'
                            AND entry_id NOT IN (SELECT entry_id FROM payout_refusals WHERE event_id = $1))
                 FROM event_entries WHERE event_id = $1",
                &[&event_id],
            )
            .await?;
        let (entries, pending, won_waiting): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if entries >= accepted && pending == 0 && won_waiting == 0 {
            break true;
        }
        if started.elapsed() > timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained_at_ms = chrono::Utc::now().timestamp_millis();
    let last_request_at = rush.started_at_ms + rush.last_request_ms as i64;

    let for_sale: i64 = client
        .query_one("SELECT (total_stock - safety_stock)::bigint FROM events WHERE event_id = $1", &[&event_id])
        .await?
        .get(0);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE decided_at IS NOT NULL),
                    count(*) FILTER (WHERE outcome = 'WON'),
                    (extract(epoch FROM max(decided_at)) * 1000)::bigint
             FROM event_entries WHERE event_id = $1",
            &[&event_id],
        )
        .await?;
    let (entries, decided, won, last_decision): (i64, i64, i64, Option<i64>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'SENT'), count(*) FILTER (WHERE status = 'FAILED'),
                    (extract(epoch FROM max(created_at) FILTER (WHERE status = 'SENT')) * 1000)::bigint
             FROM gift_dispatches WHERE event_id = $1",
            &[&event_id],
        )
        .await?;
    let (sent, failed, last_gift): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));

    // FCFS: of the first N entries (N = the winners), how many won.
    let fidelity = audit::fcfs_fidelity(stores, event_id, audit::FirstN::Winners).await?;
    let timeline = timeline(&client, event_id, rush.started_at_ms, for_sale).await?;
    let final_check = audit::check(stores, event_id, &rush.accepted, provider_url).await?;
    let seconds_after = |at: Option<i64>| at.map(|at| (at - last_request_at) as f64 / 1_000.0);
    Ok(PipelineReport {
        drained,
        drained_after_last_request_s: (drained_at_ms - last_request_at) as f64 / 1_000.0,
        for_sale,
        entries,
        decided,
        won,
        sent,
        failed,
        last_decision_after_last_request_s: seconds_after(last_decision),
        last_gift_after_last_request_s: seconds_after(last_gift),
        fcfs_first_n: fidelity.first_n,
        fcfs_winners_in_first_n: fidelity.winners_among_first_n,
        fcfs_fidelity: if fidelity.first_n > 0 { fidelity.share } else { 1.0 },
        oversold: (sent - for_sale).max(0),
        phantom_successes: final_check.tally.phantom_successes,
        invariants_hold: final_check.all_hold(),
        failing_invariants: final_check.failing().iter().map(|c| format!("{}: {}", c.name, c.detail)).collect(),
        timeline,
    })
}

/// Decisions, wins and gifts per second from the start of the rush.
async fn timeline(
    client: &deadpool_postgres::Object,
    event_id: &str,
    started_at_ms: i64,
    for_sale: i64,
) -> anyhow::Result<Vec<PipelineSecond>> {
    let mut seconds: BTreeMap<i64, PipelineSecond> = BTreeMap::new();
    for row in client
        .query(
            "SELECT ((extract(epoch FROM decided_at) * 1000)::bigint - $2) / 1000 AS s,
                    count(*), count(*) FILTER (WHERE outcome = 'WON')
             FROM event_entries WHERE event_id = $1 AND decided_at IS NOT NULL GROUP BY 1",
            &[&event_id, &started_at_ms],
        )
        .await?
    {
        let s = seconds.entry(row.get(0)).or_default();
        s.decisions = row.get(1);
        s.won = row.get(2);
    }
    for row in client
        .query(
            "SELECT ((extract(epoch FROM created_at) * 1000)::bigint - $2) / 1000 AS s, count(*)
             FROM gift_dispatches WHERE event_id = $1 AND status = 'SENT' GROUP BY 1",
            &[&event_id, &started_at_ms],
        )
        .await?
    {
        seconds.entry(row.get(0)).or_default().gifts = row.get(1);
    }
    let (first, last) = match (seconds.keys().next(), seconds.keys().last()) {
        (Some(first), Some(last)) => ((*first).min(0), *last),
        _ => return Ok(Vec::new()),
    };
    let mut remaining = for_sale;
    let mut out = Vec::new();
    for second in first..=last {
        let mut s = seconds.remove(&second).unwrap_or_default();
        s.second = second;
        remaining -= s.won;
        s.stock_remaining = remaining.max(0);
        out.push(s);
    }
    Ok(out)
}

/// Peak RSS (VmHWM) of each named process, from /proc.
pub fn memory(watched: &[(String, u32)]) -> Vec<ServiceMemory> {
    watched
        .iter()
        .filter_map(|(name, pid)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kib: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
            Some(ServiceMemory { name: name.clone(), pid: *pid, peak_rss_mib: kib / 1024.0 })
        })
        .collect()
}

/// Ingest's ratio to each baseline measured in the same run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Ratios {
    /// Accepted entries/s (wrk, stock never runs out) / bare handler req/s.
    pub accept_to_bare: Option<f64>,
    /// Refusals/s (no Kafka) / bare handler req/s: 425 before the opening.
    pub refusal_to_bare: Option<f64>,
    /// 410 to members who never entered, after sell-out (the admit script
    /// still tells them from entrants and non-buyers) / bare.
    pub sold_out_to_bare: Option<f64>,
    /// 404 for an unknown event / bare.
    pub unknown_event_to_bare: Option<f64>,
    /// 401 for a token that does not verify / bare.
    pub unauthorized_to_bare: Option<f64>,
    /// Accepted entries/s / Kafka ProducerPerformance records/s.
    pub accept_to_kafka: Option<f64>,
    /// Accepted entries/s / redis-benchmark admit script calls/s.
    pub accept_to_redis_admit: Option<f64>,
}

fn rate(baselines: &serde_json::Value, name: &str) -> Option<f64> {
    baselines.get(name)?.get("per_sec")?.as_f64().filter(|r| *r > 0.0)
}

impl Ratios {
    /// From the drill's baselines file: `{name: {"per_sec": …}}` with names
    /// `bare`, `ingest_accept`, `ingest_refusal`, `ingest_sold_out`,
    /// `ingest_unknown_event`, `ingest_unauthorized`, `kafka_produce`, `redis_admit`.
    pub fn of(baselines: &serde_json::Value) -> Self {
        let accept = rate(baselines, "ingest_accept");
        let bare = rate(baselines, "bare");
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        Ratios {
            accept_to_bare: ratio(accept, bare),
            refusal_to_bare: ratio(rate(baselines, "ingest_refusal"), bare),
            sold_out_to_bare: ratio(rate(baselines, "ingest_sold_out"), bare),
            unknown_event_to_bare: ratio(rate(baselines, "ingest_unknown_event"), bare),
            unauthorized_to_bare: ratio(rate(baselines, "ingest_unauthorized"), bare),
            accept_to_kafka: ratio(accept, rate(baselines, "kafka_produce")),
            accept_to_redis_admit: ratio(accept, rate(baselines, "redis_admit")),
        }
    }
}

/// The drill's report: the rush, the pipeline, the services' memory and the
/// baselines of the same run.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub event_id: String,
    pub machine: String,
    pub command: String,
    pub rush: RushReport,
    pub pipeline: Option<PipelineReport>,
    pub memory: Vec<ServiceMemory>,
    pub baselines: serde_json::Value,
    pub ratios: Ratios,
}

impl DrillReport {
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }
}

/// `nproc`, the CPU model and the memory, for the report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({model}), {mem_gib:.0} GiB RAM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_come_from_the_baselines_of_the_same_run() {
        let baselines = serde_json::json!({
            "bare": {"per_sec": 80_000.0},
            "ingest_accept": {"per_sec": 20_000.0},
            "ingest_refusal": {"per_sec": 60_000.0},
            "ingest_sold_out": {"per_sec": 40_000.0},
            "kafka_produce": {"per_sec": 160_000.0},
        });
        let r = Ratios::of(&baselines);
        assert_eq!(r.accept_to_bare, Some(0.25));
        assert_eq!(r.refusal_to_bare, Some(0.75));
        assert_eq!(r.sold_out_to_bare, Some(0.5));
        assert_eq!(r.unknown_event_to_bare, None);
        assert_eq!(r.accept_to_kafka, Some(0.125));
        assert_eq!(r.accept_to_redis_admit, None);
    }

    #[test]
    fn the_memory_of_this_process_is_read_from_proc() {
        let me = memory(&[("me".into(), std::process::id())]);
        assert_eq!(me.len(), 1);
        assert!(me[0].peak_rss_mib > 0.0);
        assert!(memory(&[("gone".into(), u32::MAX)]).is_empty());
    }
}
