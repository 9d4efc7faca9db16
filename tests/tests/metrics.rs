//! The services' Prometheus metrics agree with the database: a
//! burst of entries (some members twice, some not eligible, more buyers than
//! stock) runs through the whole pipeline while every service's `/metrics`
//! is scraped; once drained, the counters equal what PostgreSQL holds
//! (accepted entries, decisions, sent gifts), the latency histograms counted
//! every request and every produce, the stock gauge is at zero, no record
//! was dead-lettered, and every consumer group's lag per partition is back
//! to zero.
//!
//!
//! And every service's page is Prometheus' own kind: `promtool check
//! metrics` finds nothing to lint (every metric has its help text), and a
//! fresh pipeline already serves each described metric, its known series at
//! zero.
//!
//! A test binary of its own: the metrics recorder is process-wide, so the
//! counters here are this test's alone (and the fresh pipeline's check runs
//! in a process of its own, apart from the burst).

#[allow(dead_code)]
#[path = "e2e/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "e2e/pipeline_harness.rs"]
mod pipeline_harness;

use std::time::Duration;

use platform::metrics::{Kind, Metric, CONSUMER, PRODUCER, REDIS};
use testkit::{metric, metrics_text, poll_until};

use crate::helpers::TestEnv;
use crate::pipeline_harness::{drain, open_event, seed_crowd, submit, Pipeline, Topology};

const ENTRIES_ROUTE: &str = ingest::metrics::ENTRIES_ROUTE;

/// Every service's `/metrics`, in one text (one process: they share the
/// recorder, so each is the same; all are scraped to show each serves it).
async fn scrape(pipeline: &Pipeline) -> String {
    let mut text = String::new();
    for (service, port) in &pipeline.ops_ports {
        let page = metrics_text(*port).await;
        assert!(page.contains("# TYPE"), "{service} serves Prometheus text on its ops port {port}");
        if text.is_empty() {
            text = page;
        }
    }
    text
}

async fn count(env: &TestEnv, sql: &str, event_id: &str) -> f64 {
    let client = env.pool().get().await.expect("database");
    let row = client.query_one(sql, &[&event_id]).await.expect(sql);
    row.get::<_, i64>(0) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_agree_with_the_database_after_a_burst() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 24, 4).await;
    let event_id = open_event(&env, &crowd, 10, 0).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let members: Vec<String> = crowd.eligible.iter().chain(&crowd.ineligible).cloned().collect();

    // The burst, scraped while it runs: the counters only move forward.
    let mut scrapes = Vec::new();
    let report = {
        let burst = submit(&pipeline, &event_id, &members, 0.25);
        tokio::pin!(burst);
        loop {
            tokio::select! {
                report = &mut burst => break report,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let text = scrape(&pipeline).await;
                    scrapes.push(metric(&text, "firstcome_ingest_requests_total", &[]).unwrap_or(0.0));
                }
            }
        }
    };
    assert!(scrapes.windows(2).all(|w| w[0] <= w[1]), "request counter went backwards: {scrapes:?}");
    let drained = drain(&env, &pipeline, &event_id, &report.accepted).await;
    assert!(drained.all_hold(), "invariants: {:?}", drained.checks);

    // The consumer groups catch up: every partition's lag back to 0 (the
    // gauge is refreshed every `LAG_INTERVAL_MS`).
    let groups: Vec<String> = ["stock", "recording", "dispatch"].iter().map(|g| env.kafka.group(g)).collect();
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let caught_up = poll_until(Duration::from_secs(60), Duration::from_millis(500), || {
        let (pipeline, groups, last) = (&pipeline, &groups, last.clone());
        async move {
            let text = scrape(pipeline).await;
            let zero = groups.iter().all(|g| metric(&text, "firstcome_consumer_lag", &[("group", g)]) == Some(0.0));
            *last.lock().unwrap_or_else(|e| e.into_inner()) = text;
            zero
        }
    })
    .await;
    let text = std::mem::take(&mut *last.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(caught_up, "consumer lag not back to 0: {}", lines_of(&text, "firstcome_consumer_lag"));
    for group in &groups {
        let partitions = text
            .lines()
            .filter(|l| l.starts_with("firstcome_consumer_lag{") && l.contains(&format!("group=\"{group}\"")))
            .count();
        assert!(partitions >= testkit::PARTITIONS as usize, "{group}: a lag series per partition, got {partitions}");
    }

    let sql_entries = "SELECT count(*) FROM event_entries WHERE event_id = $1";
    let sql_won = "SELECT count(*) FROM event_entries WHERE event_id = $1 AND outcome = 'WON'";
    let sql_sent = "SELECT count(*) FROM gift_dispatches WHERE event_id = $1 AND status = 'SENT'";
    let sql_failed = "SELECT count(*) FROM gift_dispatches WHERE event_id = $1 AND status = 'FAILED'";
    let entries = count(&env, sql_entries, &event_id).await;
    let won = count(&env, sql_won, &event_id).await;
    let sent = count(&env, sql_sent, &event_id).await;
    let failed = count(&env, sql_failed, &event_id).await;
    assert_eq!(entries, report.accepted.len() as f64, "every accepted entry recorded");
    assert_eq!(won, 10.0, "the stock of 10 all won");

    let text = scrape(&pipeline).await;
    let m = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(0.0);
    // Ingest: one accepted answer per entry row; every request timed, by route and status.
    assert_eq!(m("firstcome_ingest_requests_total", &[("outcome", "accepted")]), entries);
    assert_eq!(m("firstcome_ingest_requests_total", &[("route", ENTRIES_ROUTE), ("status", "202")]), entries);
    let requests: usize = report.by_status.iter().filter(|(status, _)| **status != 0).map(|(_, n)| n).sum();
    assert_eq!(
        m("firstcome_ingest_request_seconds_count", &[("route", ENTRIES_ROUTE)]),
        requests as f64,
        "the latency histogram counted every request the burst got an answer to"
    );
    // Produce latency: at least one acknowledged produce per entry into survey-submitted.
    let survey = env.topics().named(schemas::Topics::SURVEY_SUBMITTED).expect("survey topic").to_string();
    assert!(m("firstcome_produce_seconds_count", &[("topic", &survey), ("result", "ok")]) >= entries);
    // Stock: decisions by outcome, and nothing left.
    assert_eq!(m("firstcome_stock_decisions_total", &[("outcome", "WON")]), won);
    assert_eq!(m("firstcome_stock_remaining", &[("event_id", &event_id)]), 0.0);
    // Dispatch: sent and failed as in gift_dispatches.
    assert_eq!(m("firstcome_sender_dispatches_total", &[("status", "SENT")]), sent);
    assert_eq!(m("firstcome_sender_dispatches_total", &[("status", "FAILED")]), failed);
    // Records processed per group: at least every record of the event's topics.
    let recording = env.kafka.group("recording");
    assert!(m("firstcome_records_total", &[("group", &recording), ("result", "ok")]) >= entries * 2.0 + sent);
    // Nothing was dead-lettered.
    assert_eq!(m("firstcome_dead_letters_total", &[]), 0.0);

    pipeline.stop().await;
}

fn lines_of(text: &str, name: &str) -> String {
    text.lines().filter(|l| l.starts_with(name)).collect::<Vec<_>>().join("\n")
}

/// The metrics each service describes at start, by the name its ops port is
/// listed under.
fn catalogs(service: &str) -> Vec<&'static [Metric]> {
    match service {
        "ingest" => vec![ingest::metrics::METRICS, PRODUCER, REDIS],
        "stock-processor" => vec![stock_processor::events::METRICS, CONSUMER, PRODUCER, REDIS],
        "recorder" => vec![recorder::METRICS, CONSUMER],
        "sender" => vec![sender::events::METRICS, CONSUMER, PRODUCER],
        other => panic!("no catalog for {other}"),
    }
}

/// The series of `metric` that must show before its first use: without
/// labels, or each of its known label sets (a histogram by its `_count`).
fn known_series(metric: &Metric) -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    let name = match metric.kind {
        Kind::Histogram => format!("{}_count", metric.name),
        _ => metric.name.to_string(),
    };
    if metric.labels.is_empty() {
        return vec![(name, Vec::new())];
    }
    metric
        .known
        .iter()
        .map(|values| (name.clone(), metric.labels.iter().copied().zip(values.iter().copied()).collect()))
        .collect()
}

/// `promtool check metrics` over one page: its complaints, if any.
fn promtool_check(page: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (Debian's prometheus package; scripts/lib.sh installs it): {e}"));
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("page to promtool");
    let output = child.wait_with_output().expect("promtool");
    match output.status.success() {
        true => Ok(()),
        false => Err(format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))),
    }
}

/// Series a start moves before any traffic (joining the group, the Redis
/// eviction-policy check, the relay's and the retrier's first look).
const MOVED_BY_A_START: &[&str] = &["firstcome_rebalances_total", "firstcome_redis_eviction_policy_checks_total"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pipeline_serves_every_described_metric_as_promtool_wants() {
    // The recorder is process-wide and the burst above moves it: the check
    // runs this binary again with only the fresh pipeline in it.
    let exe = std::env::current_exe().expect("this test binary");
    let output = tokio::process::Command::new(exe)
        .args(["--exact", "fresh_pipeline_metrics", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .await
        .expect("this test binary, again");
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the fresh pipeline's metrics:\n{printed}");
    assert!(printed.contains("1 passed"), "the fresh pipeline's check ran: {printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run alone, in a process of its own, by a_fresh_pipeline_serves_every_described_metric_as_promtool_wants"]
async fn fresh_pipeline_metrics() {
    let env = TestEnv::new().await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let mut problems = Vec::new();
    for (service, port) in &pipeline.ops_ports {
        if *service == "provider-sim" {
            continue;
        }
        let page = metrics_text(*port).await;
        if let Err(lint) = promtool_check(&page) {
            problems.push(format!("{service}: promtool check metrics:\n{lint}"));
        }
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
            if metric(&page, name, &[]).is_none() {
                problems.push(format!("{service}: no {name}"));
            }
        }
        for catalog in catalogs(service) {
            for described in catalog.iter() {
                if !described.labels.is_empty() && described.known.is_empty() {
                    continue; // labels only known in use (a topic, an event): shown from the first use
                }
                if !page.contains(&format!("# HELP {} {}", described.name, described.help)) {
                    problems.push(format!("{service}: {} has no help text", described.name));
                }
                for (name, labels) in known_series(described) {
                    match metric(&page, &name, &labels) {
                        None => problems.push(format!("{service}: {name}{labels:?} not served")),
                        Some(value) if value != 0.0 && !MOVED_BY_A_START.contains(&described.name) => {
                            problems.push(format!("{service}: {name}{labels:?} = {value} before any traffic"))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        // The consumer services' own group, at zero before its first batch.
        let group = match *service {
            "stock-processor" => Some(env.kafka.group(stock_processor::GROUP)),
            "recorder" => Some(env.kafka.group(recorder::GROUP)),
            "sender" => Some(env.kafka.group(sender::GROUP)),
            _ => None,
        };
        if let Some(group) = group {
            for result in ["ok", "dead_letter"] {
                let series = metric(&page, "firstcome_records_total", &[("group", &group), ("result", result)]);
                if series != Some(0.0) {
                    problems.push(format!(
                        "{service}: firstcome_records_total{{group={group},result={result}}} = {series:?}"
                    ));
                }
            }
            if metric(&page, "firstcome_batch_seconds_count", &[("group", &group)]).is_none() {
                problems.push(format!("{service}: no firstcome_batch_seconds for {group}"));
            }
        }
    }
    pipeline.stop().await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
