//! The process-wide Prometheus recorder behind `/metrics`, and the metrics
//! every service describes at start.
//!
//! Prometheus' way: every metric has its help text and unit from the start,
//! and every series whose labels are known before the first use is there
//! at zero, so a dashboard or an alert can tell "none yet" from "not
//! exported". Each crate lists its metrics once ([`Metric`]: a catalog such
//! as [`CONSUMER`]) and [`describe`]s them when its service is built; a
//! label whose values are only known in use (a group, a topic, an event)
//! shows from its first use (a consumer service initialises its own group's
//! series, [`consumer_group`]). The process' own metrics (CPU, resident
//! memory, open files; `metrics-process`) are read on each scrape.
//! `tests/tests/metrics.rs` runs `promtool check metrics` over every
//! service's page.

use std::sync::OnceLock;

use metrics::Label;
pub use metrics::Unit;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Installs the recorder on first use and returns its handle. Several services
/// in one process (tests, the demo) share it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .map(|builder| builder.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be global (a host process); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            let process = PROCESS.get_or_init(metrics_process::Collector::default);
            process.describe();
            process.collect();
            handle
        })
        .clone()
}

/// The page `/metrics` serves: the process' own metrics read now, then
/// everything rendered in Prometheus' text format.
pub fn render() -> String {
    let handle = handle();
    if let Some(process) = PROCESS.get() {
        process.collect();
    }
    handle.render()
}

/// What a metric is, in Prometheus' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric a service exposes, described at start ([`describe`]).
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Its label names, in the order of [`known`](Self::known)'s values.
    pub labels: &'static [&'static str],
    /// The label values known before the first use, each series shown at
    /// zero from the start. A metric without labels always is.
    pub known: &'static [&'static [&'static str]],
}

impl Metric {
    /// A counter of events (`…_total`).
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Counter, unit: Unit::Count, help, labels: &[], known: &[] }
    }

    /// A gauge, in `unit`.
    pub const fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Self {
        Self { name, kind: Kind::Gauge, unit, help, labels: &[], known: &[] }
    }

    /// A histogram of durations (`…_seconds`).
    pub const fn seconds(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Histogram, unit: Unit::Seconds, help, labels: &[], known: &[] }
    }

    /// Its label names.
    pub const fn labels(self, labels: &'static [&'static str]) -> Self {
        Self { labels, ..self }
    }

    /// The label values known before the first use (each as many as [`labels`](Self::labels)).
    pub const fn known(self, known: &'static [&'static [&'static str]]) -> Self {
        Self { known, ..self }
    }

    /// Registers one series at zero (a counter or gauge moved by 0, a
    /// histogram without samples): it shows from now on.
    fn register(&self, labels: Vec<Label>) {
        match self.kind {
            Kind::Counter => metrics::counter!(self.name, labels).increment(0),
            // By 0, not set: a value already there stays.
            Kind::Gauge => metrics::gauge!(self.name, labels).increment(0.0),
            Kind::Histogram => drop(metrics::histogram!(self.name, labels)),
        }
    }
}

/// Describes `catalog` (help text and unit) and registers its known series
/// at zero. Idempotent: services built in one process (tests) share the
/// recorder, and a series already moved keeps its value.
pub fn describe(catalog: &[Metric]) {
    let _ = handle();
    for metric in catalog {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.unit, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.unit, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.unit, metric.help),
        }
        if metric.labels.is_empty() {
            metric.register(Vec::new());
        }
        for values in metric.known {
            debug_assert_eq!(values.len(), metric.labels.len(), "{}: a value per label", metric.name);
            metric.register(metric.labels.iter().zip(values.iter()).map(|(k, v)| Label::new(*k, *v)).collect());
        }
    }
}

/// Registers at zero the series of consumer group `group` (its records by
/// result, its batches, its retries and failures): a consumer service calls
/// it once its group is known.
pub fn consumer_group(group: &str) {
    describe(CONSUMER);
    for metric in CONSUMER {
        match metric.labels {
            ["group"] => metric.register(vec![Label::new("group", group.to_string())]),
            ["group", "result"] => {
                for result in ["ok", "dead_letter"] {
                    metric.register(vec![Label::new("group", group.to_string()), Label::new("result", result)]);
                }
            }
            _ => {}
        }
    }
}

/// The metrics of platform's consumer loop (every consumer service).
pub const CONSUMER: &[Metric] = &[
    Metric::gauge(
        "firstcome_consumer_lag",
        Unit::Count,
        "Records of a partition this member has not handed to its service yet, plus those of the batch in work",
    )
    .labels(&["group", "topic", "partition"]),
    Metric::counter("firstcome_records_total", "Records handled, by result (ok, dead_letter)")
        .labels(&["group", "result"]),
    Metric::seconds("firstcome_batch_seconds", "Time from a batch's first record to its commit").labels(&["group"]),
    Metric::counter("firstcome_rebalances_total", "Rebalances of the group this member took part in")
        .labels(&["group"]),
    Metric::counter(
        "firstcome_revoked_records_dropped_total",
        "Fetched records dropped because their partition was revoked before they were handled",
    )
    .labels(&["group"]),
    Metric::counter(
        "firstcome_partitions_stalled_total",
        "Times the timestamp order waited its longest for a partition that was behind",
    )
    .labels(&["group"]),
    Metric::counter("firstcome_poll_errors_total", "Errors polling the consumer").labels(&["group"]),
    Metric::counter("firstcome_batch_retries_total", "Batches that failed and were tried again").labels(&["group"]),
    Metric::counter("firstcome_dead_letters_total", "Records sent to their dead-letter topic")
        .labels(&["group", "topic"]),
    Metric::counter(
        "firstcome_drain_abandoned_total",
        "Batches abandoned uncommitted at shutdown past the drain deadline",
    )
    .labels(&["group"]),
    Metric::counter("firstcome_commit_failures_total", "Offset commits that failed").labels(&["group"]),
    Metric::counter("firstcome_transaction_aborts_total", "Kafka transactions aborted").labels(&["group"]),
    Metric::counter(
        "firstcome_transaction_calls_stuck_total",
        "Transactional producer calls that did not return within their deadline",
    )
    .labels(&["group"]),
    Metric::counter(
        "firstcome_transaction_init_retries_total",
        "Times a starting transactional loop asked again for its producer id (the coordinator not ready)",
    )
    .labels(&["group"]),
    Metric::counter(
        "firstcome_consumer_loop_rebuilds_total",
        "Consumer loops rebuilt after an error they could not go on from",
    )
    .labels(&["group"]),
];

/// The metrics of platform's producer (every service that writes to Kafka).
pub const PRODUCER: &[Metric] = &[
    Metric::seconds(
        "firstcome_produce_seconds",
        "Time from a record's send to the broker's answer, by topic and result (ok, error)",
    )
    .labels(&["topic", "result"]),
    Metric::counter(
        "firstcome_produce_refused_total",
        "Records the broker refused for good (ACLs, size or timestamp limits), by topic and error code",
    )
    .labels(&["topic", "code"]),
];

/// The metrics of platform's Redis client (ingest and the stock stage).
pub const REDIS: &[Metric] = &[
    Metric::counter("firstcome_redis_rediscoveries_total", "Redis primaries (re)discovered through Sentinel"),
    Metric::counter(
        "firstcome_redis_eviction_policy_checks_total",
        "Checks of Redis' maxmemory-policy at start, by result (noeviction, evicts, unknown)",
    )
    .labels(&["result"])
    .known(&[&["noeviction"], &["evicts"], &["unknown"]]),
];

/// How often a consumer's client reports its partitions (librdkafka
/// `statistics.interval.ms`), which refreshes the lag gauge.
pub const LAG_INTERVAL_MS: u64 = 2_000;

/// Consumer lag per partition, from the client's statistics:
/// `firstcome_consumer_lag{group,topic,partition}` = the records of the
/// partition this member has not handed to its service yet (last stable
/// offset − position, so transaction markers never count) plus those of the
/// batch in work (not committed yet). A partition the member no longer
/// fetches (revoked) is set to 0: summed over the group's members, the
/// gauge is the group's lag.
pub fn record_lag(
    group: &str,
    statistics: &rdkafka::Statistics,
    in_work: &std::collections::HashMap<(String, i32), u64>,
) {
    for (topic, stats) in &statistics.topics {
        for (partition, p) in &stats.partitions {
            if *partition < 0 {
                continue; // librdkafka's internal "unassigned" partition
            }
            let fetching = p.fetch_state == "active";
            let lag = if !fetching {
                0
            } else {
                // -1001: no position yet (nothing fetched since the assignment).
                let position = if p.app_offset >= 0 { p.app_offset } else { p.committed_offset };
                let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                let unfetched = if position >= 0 && end >= 0 { (end - position).max(0) as u64 } else { 0 };
                unfetched + in_work.get(&(topic.clone(), *partition)).copied().unwrap_or(0)
            };
            metrics::gauge!(
                "firstcome_consumer_lag",
                "group" => group.to_string(),
                "topic" => topic.clone(),
                "partition" => partition.to_string()
            )
            .set(lag as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_metric_is_served_with_its_help_before_its_first_use() {
        const CATALOG: &[Metric] = &[
            Metric::counter("firstcome_test_described_total", "A counter no code moved yet")
                .labels(&["outcome"])
                .known(&[&["a"], &["b"]]),
            Metric::seconds("firstcome_test_described_seconds", "A histogram without samples yet"),
        ];
        describe(CATALOG);
        let page = render();
        assert!(page.contains("# HELP firstcome_test_described_total A counter no code moved yet"), "{page}");
        assert!(page.contains("firstcome_test_described_total{outcome=\"a\"} 0"), "{page}");
        assert!(page.contains("firstcome_test_described_total{outcome=\"b\"} 0"), "{page}");
        assert!(page.contains("firstcome_test_described_seconds_count 0"), "{page}");
        assert!(page.contains("process_resident_memory_bytes"), "the process' own metrics: {page}");
    }

    #[test]
    fn every_platform_metric_names_its_unit_and_has_help() {
        for metric in CONSUMER.iter().chain(PRODUCER).chain(REDIS) {
            assert!(!metric.help.is_empty(), "{}", metric.name);
            match metric.kind {
                Kind::Counter => assert!(metric.name.ends_with("_total"), "{}", metric.name),
                Kind::Histogram => assert!(metric.name.ends_with("_seconds"), "{}", metric.name),
                Kind::Gauge => assert!(!metric.name.ends_with("_total"), "{}", metric.name),
            }
            assert!(metric.known.iter().all(|values| values.len() == metric.labels.len()), "{}", metric.name);
        }
    }
}
