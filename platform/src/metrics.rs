//! The process-wide Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use and returns its handle. Several services
/// in one process (tests, the demo) share it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .map(|builder| builder.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be global (a host process); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

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
