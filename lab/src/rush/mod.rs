//! `firstcome-lab rush`: the opening-rush drill's load generator.
//!
//! An open-loop generator ([`schedule`]): arrivals ramp up to a peak rate at
//! the opening instant, hold, then decline; each request leaves when it is
//! due whatever the server does, over many keep-alive connections
//! ([`client`]), and a request due while every connection is busy is counted
//! as unsent instead of waiting. The crowd: every member once (eligible or
//! not, as the member database says), some of them twice (double clicks,
//! retries), and those arriving during the ramp before the opening (425,
//! then again at their turn). Tokens are minted before the clock starts.
//!
//! What came back — status counts, HdrHistogram latency percentiles, a
//! per-second timeline — is the [`RushReport`]; [`report`] adds what the
//! pipeline did with it (decisions and gifts over time, the time from the
//! last request to the last decision and gift, FCFS fidelity, the oversell
//! check, each service's peak RSS), and [`plot`] draws it.
//!
//! With ingest's waiting room on, a member answered 429 `waiting` or 425 in
//! the pre-queue stays in line and asks again when told ([`line`]); the
//! report's `line` gives how many waited, their wait (p50/p99/max), the
//! line's length over time and those still waiting when the run stopped.

pub mod client;
pub mod command;
pub mod line;
pub mod plot;
pub mod report;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use client::Shot;
pub use schedule::{Schedule, Shape};

/// What to fire.
#[derive(Debug, Clone)]
pub struct RushPlan {
    /// Ingest base URLs, used round-robin.
    pub base_urls: Vec<String>,
    pub event_id: String,
    /// (member id, bearer token) of every member who enters once.
    pub members: Vec<(String, String)>,
    /// Share of members who submit a second time (double clicks, retries).
    pub duplicate_ratio: f64,
    /// Keep-alive connections, the most requests in flight at once.
    pub connections: usize,
    /// The arrival rate over time.
    pub shape: Shape,
    /// The event's opening instant: the ramp ends there (its arrivals are
    /// early, 425). `None` or past: the rush starts now.
    pub opening: Option<chrono::DateTime<chrono::Utc>>,
    /// The survey answers sent.
    pub answers: Vec<(String, String)>,
    /// Per-request timeout: the drill stops by itself.
    pub request_timeout: Duration,
    /// How late a shot may leave when every connection is busy before it
    /// is counted unsent; `None`: every shot is sent, however late.
    pub max_lateness: Option<Duration>,
    /// How long after the last arrival is due a member may still wait in
    /// the waiting room's line; then the run stops and counts them.
    pub max_wait: Duration,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

impl RushPlan {
    /// A plan with the defaults of a small rush: 64 connections, 2,000
    /// requests/s at the peak reached at once, no early arrivals.
    pub fn new(base_urls: Vec<String>, event_id: String, members: Vec<(String, String)>) -> Self {
        Self {
            base_urls,
            event_id,
            members,
            duplicate_ratio: 0.1,
            connections: 64,
            shape: Shape { peak_rate: 2_000.0, ramp: Duration::ZERO, decline: Duration::from_secs(1) },
            opening: None,
            answers: vec![("satisfaction".into(), "5".into()), ("recommend".into(), "yes".into())],
            request_timeout: Duration::from_secs(10),
            max_lateness: None,
            max_wait: Duration::from_secs(60),
            progress: false,
        }
    }
}

/// One 202 (the auditor's input).
pub use audit::Accepted;

/// One second of the rush (answers by the second they came back).
#[derive(Debug, Clone, Serialize, Default)]
pub struct SecondReport {
    /// Seconds from the start of the rush.
    pub second: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub sent: u64,
    pub unsent: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The waiting room's line: the longest `waiting` an answer of this
    /// second reported (`None`: no answer in line this second).
    pub line_waiting: Option<i64>,
}

/// What the rush saw.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RushReport {
    /// Requests due (sent + unsent): arrivals; a member in line's follow-ups are `line.retries`.
    pub requests: usize,
    pub sent: u64,
    /// Due while every connection was busy, longer than the allowed
    /// lateness: not sent (open loop).
    pub unsent: u64,
    /// Sent more than 10 ms after they were due.
    pub late: u64,
    /// HTTP status (0 = transport error) → count, every answer (follow-ups too).
    pub by_status: BTreeMap<u16, usize>,
    /// Error code of non-202 answers → count.
    pub by_error: BTreeMap<String, usize>,
    #[serde(skip)]
    pub accepted: Vec<Accepted>,
    pub accepted_count: usize,
    /// Wall clock of the start (ms since the epoch): the pipeline's
    /// timestamps are read against it.
    pub started_at_ms: i64,
    /// From the start: the opening instant, the last request sent.
    pub opening_ms: u64,
    pub last_request_ms: u64,
    pub elapsed_ms: u64,
    pub requests_per_sec: f64,
    pub peak_rate: f64,
    pub hold_ms: u64,
    pub connections: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The waiting room's line (all zero when it is off).
    pub line: line::LineReport,
    pub timeline: Vec<SecondReport>,
}

impl RushReport {
    pub fn count(&self, status: u16) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

/// The shots in firing order: the early crowd (random members, during the
/// ramp), then every member once and some twice, shuffled.
fn shots(plan: &RushPlan, early: usize) -> Vec<Shot> {
    let mut rng = rand::rng();
    let made: Vec<Shot> = plan
        .members
        .iter()
        .map(|(member, token)| Shot {
            member: Arc::from(member.as_str()),
            authorization: Arc::from(format!("Bearer {token}")),
        })
        .collect();
    let mut main: Vec<Shot> = made.clone();
    let duplicates = (made.len() as f64 * plan.duplicate_ratio.clamp(0.0, 1.0)) as usize;
    main.extend(made.iter().take(duplicates).cloned());
    main.shuffle(&mut rng);
    let mut all = Vec::with_capacity(early + main.len());
    if !made.is_empty() {
        all.extend((0..early).map(|_| made[rng.random_range(0..made.len())].clone()));
    }
    all.extend(main);
    all
}

/// The schedule of a plan: the early crowd is what the ramp brings before
/// the opening.
pub fn schedule_of(plan: &RushPlan) -> (Schedule, usize) {
    let main = plan.members.len() + (plan.members.len() as f64 * plan.duplicate_ratio.clamp(0.0, 1.0)) as usize;
    let early = if plan.members.is_empty() {
        0
    } else {
        (plan.shape.peak_rate * plan.shape.ramp.as_secs_f64() / 2.0).floor() as usize
    };
    (Schedule::fit(plan.shape, main + early), early)
}

/// Runs the rush and waits for every answer.
pub async fn run(plan: &RushPlan) -> anyhow::Result<RushReport> {
    anyhow::ensure!(!plan.base_urls.is_empty(), "no ingest URL");
    let client = reqwest::Client::builder()
        .timeout(plan.request_timeout)
        .pool_max_idle_per_host(plan.connections)
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    let answers: serde_json::Map<String, serde_json::Value> =
        plan.answers.iter().map(|(q, a)| (q.clone(), serde_json::Value::String(a.clone()))).collect();
    // One body for every request, made once for the whole process.
    let body: &'static str = Box::leak(
        serde_json::json!({ "answers": answers, "client": { "channel": "rush" } }).to_string().into_boxed_str(),
    );
    let urls: Vec<String> = plan
        .base_urls
        .iter()
        .map(|base| format!("{}/api/events/{}/entries", base.trim_end_matches('/'), plan.event_id))
        .collect();

    let (schedule, early) = schedule_of(plan);
    let shots = shots(plan, early);

    // The ramp ends at the opening instant: wait until the ramp's start.
    if let Some(opening) = plan.opening {
        let start_at = opening - chrono::Duration::from_std(schedule.opening())?;
        let wait = (start_at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    let progress = if plan.progress {
        let bar = indicatif::ProgressBar::new(schedule.requests as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} requests due  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started_at_ms = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let line_deadline = schedule.length() + plan.max_wait;
    let recorded = client::fire(
        &client,
        &urls,
        body,
        shots,
        &schedule,
        plan.connections,
        plan.max_lateness,
        line_deadline,
        started,
        &progress,
    )
    .await;
    let elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(summarise(recorded, &schedule, plan.connections, started_at_ms, elapsed))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

fn summarise(
    recorded: client::Recorded,
    schedule: &Schedule,
    connections: usize,
    started_at_ms: i64,
    elapsed: Duration,
) -> RushReport {
    let h = &recorded.latency;
    let timeline = recorded
        .seconds
        .iter()
        .enumerate()
        .map(|(i, s)| SecondReport {
            second: i as u64,
            by_status: s.by_status.clone(),
            sent: s.sent,
            unsent: s.unsent,
            p50_ms: if s.latency.is_empty() { 0.0 } else { ms(s.latency.value_at_quantile(0.5)) },
            p99_ms: if s.latency.is_empty() { 0.0 } else { ms(s.latency.value_at_quantile(0.99)) },
            line_waiting: recorded.line.at_second(i),
        })
        .collect();
    let sent = recorded.sent;
    RushReport {
        requests: (recorded.sent + recorded.unsent) as usize,
        sent,
        unsent: recorded.unsent,
        late: recorded.late,
        by_status: recorded.by_status.iter().map(|(k, v)| (*k, *v as usize)).collect(),
        by_error: recorded.by_error.iter().map(|(k, v)| (k.clone(), *v as usize)).collect(),
        accepted_count: recorded.accepted.len(),
        accepted: recorded.accepted,
        started_at_ms,
        opening_ms: schedule.opening().as_millis() as u64,
        last_request_ms: recorded.last_sent.as_millis() as u64,
        elapsed_ms: elapsed.as_millis() as u64,
        requests_per_sec: sent as f64 / recorded.last_sent.as_secs_f64().max(1e-3),
        peak_rate: schedule.shape.peak_rate,
        hold_ms: schedule.hold.as_millis() as u64,
        connections,
        p50_ms: if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(0.50)) },
        p90_ms: if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(0.90)) },
        p99_ms: if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(0.99)) },
        p999_ms: if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(0.999)) },
        max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
        line: recorded.line.report(),
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(members: usize, duplicate_ratio: f64, shape: Shape) -> RushPlan {
        let members = (0..members).map(|n| (format!("m{n}"), format!("t{n}"))).collect();
        RushPlan { duplicate_ratio, shape, ..RushPlan::new(vec!["http://x".into()], "ev".into(), members) }
    }

    #[test]
    fn every_member_fires_once_some_twice_and_the_ramp_brings_the_early_crowd() {
        let shape = Shape { peak_rate: 100.0, ramp: Duration::from_secs(2), decline: Duration::ZERO };
        let plan = plan(1_000, 0.1, shape);
        let (schedule, early) = schedule_of(&plan);
        assert_eq!(early, 100);
        assert_eq!(schedule.requests, 1_100 + 100);
        assert_eq!(schedule.before_opening(), early);
        let shots = shots(&plan, early);
        assert_eq!(shots.len(), 1_200);
        let mut per_member: BTreeMap<&str, usize> = BTreeMap::new();
        for shot in &shots[early..] {
            *per_member.entry(&shot.member).or_default() += 1;
        }
        assert_eq!(per_member.len(), 1_000);
        assert_eq!(per_member.values().filter(|n| **n == 2).count(), 100);
        assert!(shots.iter().all(|s| s.authorization.starts_with("Bearer t")));
    }

    #[test]
    fn the_summary_ranks_latencies_with_the_histogram() {
        let mut recorded = client::Recorded {
            seconds: Vec::new(),
            latency: client::new_histogram(),
            by_status: BTreeMap::new(),
            by_error: BTreeMap::new(),
            accepted: Vec::new(),
            sent: 100,
            unsent: 5,
            late: 0,
            last_sent: Duration::from_secs(2),
            last_answer: Duration::from_secs(2),
            line: line::LineRecorder::default(),
        };
        for ms in 1..=100u64 {
            recorded.latency.record(ms * 1_000).unwrap();
        }
        recorded.by_status.insert(202, 90);
        recorded.by_status.insert(409, 10);
        let schedule = Schedule::fit(Shape { peak_rate: 50.0, ramp: Duration::ZERO, decline: Duration::ZERO }, 105);
        let report = summarise(recorded, &schedule, 8, 0, Duration::from_secs(2));
        assert_eq!(report.requests, 105);
        assert_eq!(report.unsent, 5);
        assert_eq!(report.count(202), 90);
        assert!((report.p50_ms - 50.0).abs() < 0.1, "{}", report.p50_ms);
        assert!((report.p99_ms - 99.0).abs() < 0.1, "{}", report.p99_ms);
        assert!((report.max_ms - 100.0).abs() < 0.1);
        assert_eq!(report.requests_per_sec, 50.0);
    }

    #[test]
    fn the_summary_carries_the_line_and_its_length_per_second() {
        let mut line = line::LineRecorder::default();
        let place =
            |waiting| line::InLine { prequeue: false, position: 1, waiting, retry_after: Duration::from_secs(1) };
        let mut stay = line::Stay::default();
        stay.answered(&mut line, Duration::from_millis(100), Some(&place(300)));
        stay.answered(&mut line, Duration::from_millis(1_100), Some(&place(120)));
        stay.answered(&mut line, Duration::from_millis(2_100), None);
        let mut seconds = Vec::new();
        for _ in 0..3 {
            seconds.push(client::Second {
                by_status: BTreeMap::new(),
                latency: client::new_histogram(),
                sent: 0,
                unsent: 0,
            });
        }
        let recorded = client::Recorded {
            seconds,
            latency: client::new_histogram(),
            by_status: BTreeMap::new(),
            by_error: BTreeMap::new(),
            accepted: Vec::new(),
            sent: 1,
            unsent: 0,
            late: 0,
            last_sent: Duration::from_secs(2),
            last_answer: Duration::from_secs(2),
            line,
        };
        let schedule = Schedule::fit(Shape { peak_rate: 50.0, ramp: Duration::ZERO, decline: Duration::ZERO }, 1);
        let report = summarise(recorded, &schedule, 8, 0, Duration::from_secs(3));
        assert_eq!(report.line.waited, 1);
        assert_eq!(report.line.max_waiting, 300);
        assert!((report.line.wait_max_ms - 2_000.0).abs() < 2.0, "{:?}", report.line);
        let samples: Vec<Option<i64>> = report.timeline.iter().map(|s| s.line_waiting).collect();
        assert_eq!(samples, [Some(300), Some(120), None]);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["line"]["max_waiting"], 300);
        assert_eq!(json["timeline"][0]["line_waiting"], 300);
    }
}
