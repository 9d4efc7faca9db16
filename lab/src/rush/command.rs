//! `firstcome-lab rush …`: the drill's command line. Fires the rush at running
//! ingest instances, then (with `--drain-secs`) waits for the pipeline and
//! writes the JSON report and the plot into `--report-dir`.

use std::path::PathBuf;
use std::time::Duration;

use super::report::{self, DrillReport, Ratios};
use super::{RushPlan, Shape};
use audit::Stores;
use firstcome_cli::commands::event;
use firstcome_cli::CliSettings;

use crate::output::{Format, Output};

#[derive(Debug, Clone, clap::Args)]
pub struct RushArgs {
    pub event_id: String,
    /// Ingest base URLs, round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Members to fire for: the first N of the replica (eligible or not, as seeded).
    #[arg(long, default_value_t = 1_000)]
    pub members: i64,
    /// Only members whose id starts with this (e.g. the prefix given to `members seed`).
    #[arg(long, default_value = "")]
    pub member_prefix: String,
    /// Share of members who submit twice.
    #[arg(long, default_value_t = 0.1)]
    pub duplicate_ratio: f64,
    /// Keep-alive connections (the most requests in flight).
    #[arg(long, alias = "concurrency", default_value_t = 64)]
    pub connections: usize,
    /// Requests per second at the peak.
    #[arg(long, default_value_t = 2_000.0)]
    pub peak_rate: f64,
    /// Seconds from zero to the peak, ending at the event's opening instant
    /// (when it is still ahead): that crowd arrives early (425).
    #[arg(long, default_value_t = 0.0)]
    pub ramp_secs: f64,
    /// Seconds from the peak back to zero.
    #[arg(long, default_value_t = 1.0)]
    pub decline_secs: f64,
    /// A request due while every connection is busy waits this long for one,
    /// then counts as unsent (open loop). 0: wait as long as it takes.
    #[arg(long, default_value_t = 1_000)]
    pub max_lateness_ms: u64,
    /// With ingest's waiting room on: how long after the last arrival is due
    /// a member answered 429 `waiting` / 425 in the pre-queue may still wait
    /// in line (asking again after each Retry-After); then the run stops.
    #[arg(long, default_value_t = 60)]
    pub max_wait_secs: u64,
    /// After the rush, wait this long for the pipeline to drain and report on it (0: don't).
    #[arg(long, default_value_t = 0)]
    pub drain_secs: u64,
    /// The gift provider, for the invariants' provider check.
    #[arg(long)]
    pub provider_url: Option<String>,
    /// Service processes whose peak RSS goes in the report: name=pid,…
    #[arg(long, value_delimiter = ',', value_parser = parse_watched)]
    pub watch: Vec<(String, u32)>,
    /// Baselines measured in the same run (JSON: {name: {"per_sec": …}, …}).
    #[arg(long)]
    pub baselines: Option<PathBuf>,
    /// Write report.json and rush.png here.
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
}

/// `name=pid`, one process of `--watch`.
fn parse_watched(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text.split_once('=').ok_or_else(|| format!("{text:?} is not name=pid"))?;
    let pid = pid.parse().map_err(|_| format!("{text:?}: {pid:?} is not a process id"))?;
    Ok((name.to_string(), pid))
}

/// Fires the rush; its report (`--format json`: the whole report, as
/// report.json). The progress bar and lines are for text only.
pub async fn run(settings: &CliSettings, args: RushArgs, format: Format) -> anyhow::Result<Output> {
    Ok(Output::new(String::new(), &run_report(settings, args, format).await?))
}

/// [`run`]'s report, for a command that judges it (the drill).
pub async fn run_report(settings: &CliSettings, args: RushArgs, format: Format) -> anyhow::Result<DrillReport> {
    let json = format == Format::Json;
    let pool = platform::member_db::replica_pool(&settings.replica)?;
    let pattern = format!("{}%", args.member_prefix.replace('%', "\\%").replace('_', "\\_"));
    let ids: Vec<String> = pool
        .get()
        .await?
        .query(
            "SELECT member_id FROM members WHERE member_id LIKE $2 ORDER BY member_id LIMIT $1",
            &[&args.members, &pattern],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "no member id starts with {:?}: seed them first", args.member_prefix);
    let mut shots = Vec::with_capacity(ids.len());
    for id in ids {
        let token = ingest::auth::mint(&settings.auth.token_secret, &id, Duration::from_secs(3600))?;
        shots.push((id, token));
    }
    let stores = Stores::connect(&settings.database, &settings.redis).await?;
    let opening: Option<chrono::DateTime<chrono::Utc>> = stores
        .pool
        .get()
        .await?
        .query_opt("SELECT open_at FROM events WHERE event_id = $1", &[&args.event_id])
        .await?
        .map(|row| row.get(0));
    let plan = RushPlan {
        duplicate_ratio: args.duplicate_ratio,
        connections: args.connections,
        shape: Shape {
            peak_rate: args.peak_rate,
            ramp: Duration::from_secs_f64(args.ramp_secs.max(0.0)),
            decline: Duration::from_secs_f64(args.decline_secs.max(0.0)),
        },
        opening: opening.filter(|at| *at > chrono::Utc::now()),
        answers: event::DEFAULT_QUESTIONS.iter().map(|q| (q.to_string(), "5".to_string())).collect(),
        max_lateness: (args.max_lateness_ms > 0).then(|| Duration::from_millis(args.max_lateness_ms)),
        max_wait: Duration::from_secs(args.max_wait_secs),
        progress: !json,
        ..RushPlan::new(args.urls.clone(), args.event_id.clone(), shots)
    };
    let (schedule, early) = super::schedule_of(&plan);
    if !json {
        crate::say!(
            "rush on {}: {} requests ({} members, {:.0}% twice, {early} before the opening), peak {:.0}/s, hold {:.1} s, {} connections",
            args.event_id,
            schedule.requests,
            plan.members.len(),
            plan.duplicate_ratio * 100.0,
            schedule.shape.peak_rate,
            schedule.hold.as_secs_f64(),
            plan.connections
        );
    }
    let rush = super::run(&plan).await?;
    if !json {
        print_rush(&rush);
    }

    let pipeline = if args.drain_secs > 0 {
        if !json {
            crate::say!("waiting up to {} s for the pipeline…", args.drain_secs);
        }
        let pipeline = report::pipeline(
            &stores,
            &args.event_id,
            &rush,
            Duration::from_secs(args.drain_secs),
            args.provider_url.as_deref(),
        )
        .await?;
        if !json {
            print_pipeline(&pipeline);
        }
        Some(pipeline)
    } else {
        None
    };
    let memory = report::memory(&args.watch);
    let baselines: serde_json::Value = match &args.baselines {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
        None => serde_json::Value::Null,
    };
    let drill = DrillReport {
        event_id: args.event_id.clone(),
        machine: report::machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ratios: Ratios::of(&baselines),
        rush,
        pipeline,
        memory,
        baselines,
    };
    if !json {
        for m in &drill.memory {
            crate::say!("  {:<16} peak RSS {:.0} MiB", m.name, m.peak_rss_mib);
        }
    }
    if let Some(dir) = &args.report_dir {
        drill.write(dir)?;
        let title = format!(
            "firstcome-lab rush: {} requests, peak {:.0}/s, {} connections ({})",
            drill.rush.requests, drill.rush.peak_rate, drill.rush.connections, drill.machine
        );
        if let Err(error) = super::plot::draw(&dir.join("rush.png"), &title, &drill.rush, drill.pipeline.as_ref()) {
            eprintln!("no plot: {error:#}");
        }
        if !json {
            crate::say!("report: {}", dir.join("report.json").display());
        }
    }
    Ok(drill)
}

fn print_rush(r: &super::RushReport) {
    crate::say!(
        "{} requests due, {} sent ({} late, {} unsent) in {} ms: {:.0} req/s; p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        r.requests, r.sent, r.late, r.unsent, r.elapsed_ms, r.requests_per_sec, r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms
    );
    crate::say!("by status {:?}; by error {:?}", r.by_status, r.by_error);
    print_line(&r.line, &r.timeline);
}

/// The waiting room's line, when any answer put a member in it.
fn print_line(l: &super::line::LineReport, timeline: &[super::SecondReport]) {
    if l.waited == 0 {
        return;
    }
    crate::say!(
        "waiting room: {} members waited ({} served, {} still waiting at the stop), {} follow-ups ({} answers 429 waiting, {} 425 pre-queue); wait p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; longest line {}",
        l.waited,
        l.served,
        l.still_waiting,
        l.retries,
        l.waiting_answers,
        l.prequeue_answers,
        l.wait_p50_ms,
        l.wait_p99_ms,
        l.wait_max_ms,
        l.max_waiting
    );
    let samples: Vec<String> =
        timeline.iter().filter_map(|s| s.line_waiting.map(|w| format!("{}s:{w}", s.second))).collect();
    crate::say!("line length per second: {}", samples.join(" "));
}

fn print_pipeline(p: &report::PipelineReport) {
    let s = |v: Option<f64>| v.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "-".into());
    crate::say!(
        "pipeline {}: {} entries, {} decided, {} won, {} sent, {} failed (for sale {}); last decision {} and last gift {} after the last request",
        if p.drained { "drained" } else { "NOT drained" },
        p.entries,
        p.decided,
        p.won,
        p.sent,
        p.failed,
        p.for_sale,
        s(p.last_decision_after_last_request_s),
        s(p.last_gift_after_last_request_s)
    );
    crate::say!(
        "FCFS fidelity {:.2}% ({} of the first {} accepted won); oversold {}; invariants {}",
        p.fcfs_fidelity * 100.0,
        p.fcfs_winners_in_first_n,
        p.fcfs_first_n,
        p.oversold,
        if p.invariants_hold { "hold".to_string() } else { format!("FAIL: {:?}", p.failing_invariants) }
    );
}
