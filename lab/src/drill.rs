//! `firstcome-lab drill`: the opening-rush drill's rush (docs/drill.md).
//!
//! Seeds the rush's members, starts every service as its own process from
//! the typed settings built in one place ([`crate::service_settings`]): one
//! ingest (with the waiting room when asked), one instance of each consumer
//! group and the gift provider's simulator, which accepts 2,000 calls/s as
//! a contracted provider would. Then it creates the event with its opening
//! ahead by the ramp, fires the rush ([`crate::rush::command`]), waits for
//! the pipeline, writes report.json and rush.png with each service's peak
//! RSS, and stops every process it started — also when the run fails or is
//! interrupted (SIGINT, SIGTERM).
//!
//! What the drill measures beside the rush (the baselines: wrk, perf,
//! Kafka's and Redis' own benchmarks) and the stack's set-up for the run's
//! topic prefix stay in `scripts/drill.sh`, which calls this command.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::output::{Format, Output};
use crate::rush::command::{self as rush_command, RushArgs};
use crate::rush::report::DrillReport;
use crate::service_settings::{ProviderLink, Stack};
use crate::services::{self, ServiceProcess, ServiceSpec};
use firstcome_cli::commands::event::{self, EventCommand};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_cli::CliSettings;
use ingest::waiting_room::{PreQueueOrder, WaitingRoomSettings};

/// The rush's members' ids start with this (`r0000000`, …).
const MEMBER_PREFIX: &str = "r";
/// The product 90 % of them bought: the rush's event is for its buyers.
const PRODUCT: &str = "drill-rush";
const ELIGIBLE_RATIO: f64 = 0.9;
/// Members who submit twice (double clicks, retries).
const DUPLICATE_RATIO: f64 = 0.1;
/// Provider calls per second the simulator accepts (429 beyond), and the
/// sender's pace toward it: a provider's contracted rate, not ours to raise.
const PROVIDER_RATE_PER_SEC: u32 = 2_000;
/// Gifts in flight at once toward the provider: enough to keep 2,000 calls/s
/// going at the simulator's latency.
const SENDER_CONCURRENCY: usize = 64;
/// A request due while every connection is busy waits this long, then
/// counts as unsent: the load stays open-loop.
const MAX_LATENESS_MS: u64 = 1_000;

/// `firstcome-lab drill`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// Members seeded (ids `r…`, 90 % of them bought the product) and fired
    /// for: with 10 % of them twice and the early crowd, 880,000 members are
    /// about 1,000,000 requests.
    #[arg(long, default_value_t = 880_000)]
    pub members: usize,
    /// Units for sale.
    #[arg(long, default_value_t = 10_000)]
    pub stock: i32,
    /// Requests per second at the peak.
    #[arg(long, default_value_t = 20_000.0)]
    pub peak_rate: f64,
    /// Keep-alive connections (the most requests in flight).
    #[arg(long, default_value_t = 512)]
    pub connections: usize,
    /// Seconds from zero to the peak, ending at the event's opening: that crowd is answered 425.
    #[arg(long, default_value_t = 10.0)]
    pub ramp_secs: f64,
    /// Seconds from the peak back to zero.
    #[arg(long, default_value_t = 10.0)]
    pub decline_secs: f64,
    #[command(flatten)]
    pub waiting_room: WaitingRoomArgs,
    /// With the waiting room: how long after the last arrival is due a member
    /// in line may still wait (asking again after each Retry-After).
    #[arg(long, default_value_t = 60)]
    pub max_wait_secs: u64,
    /// How long to wait for the pipeline to drain after the rush.
    #[arg(long, default_value_t = 300)]
    pub drain_secs: u64,
    /// Where report.json and rush.png go.
    #[arg(long, default_value = "docs/drill")]
    pub out: PathBuf,
    /// The baselines measured in the same run (scripts/drill.sh writes them),
    /// for the report's ratios.
    #[arg(long)]
    pub baselines: Option<PathBuf>,
    /// The rush's event (default: `drill-rush-<UTC stamp>`).
    #[arg(long)]
    pub event_id: Option<String>,
    /// The services' settings files and logs (default: `.stack/drill/<event id>`).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
}

/// The rush's ingest with its waiting room, as `scripts/drill.sh --waiting-room …` asks.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WaitingRoomArgs {
    /// Start the rush's ingest with the waiting room on; the rush keeps the
    /// members it puts in line asking again, and reports the line.
    #[arg(long = "waiting-room")]
    pub enabled: bool,
    /// Members let through per second (ingest's setting otherwise).
    #[arg(long = "waiting-room-rate")]
    pub rate_per_sec: Option<u32>,
    /// Most members let through at once (ingest's setting otherwise).
    #[arg(long = "waiting-room-burst")]
    pub burst: Option<u32>,
    /// The order of those who came before the opening: fifo or shuffle.
    #[arg(long, value_parser = parse_pre_queue)]
    pub pre_queue: Option<PreQueueOrder>,
}

fn parse_pre_queue(text: &str) -> Result<PreQueueOrder, String> {
    [PreQueueOrder::Fifo, PreQueueOrder::Shuffle]
        .into_iter()
        .find(|order| order.as_str() == text)
        .ok_or_else(|| format!("{text:?}: fifo or shuffle"))
}

impl WaitingRoomArgs {
    /// `base` (ingest's waiting room as the environment gives it) with what
    /// the command line asks on top.
    fn apply(&self, base: WaitingRoomSettings) -> WaitingRoomSettings {
        WaitingRoomSettings {
            enabled: base.enabled || self.enabled,
            rate_per_sec: self.rate_per_sec.unwrap_or(base.rate_per_sec),
            burst: self.burst.unwrap_or(base.burst),
            pre_queue: self.pre_queue.unwrap_or(base.pre_queue),
        }
    }
}

/// A signal stopped the drill before its report.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by a signal: the drill stopped the services it had started, without a report")]
pub struct Interrupted;

/// The ports of the drill's services: unused ones, so a demo or a test on
/// the same machine keeps its own.
#[derive(Debug, Clone, Copy)]
struct Ports {
    ingest: u16,
    /// Ingest's `/healthz`, `/metrics` and dashboard.
    ingest_ops: u16,
    stock: u16,
    recorder: u16,
    sender: u16,
    provider: u16,
}

impl Ports {
    fn unused() -> std::io::Result<Self> {
        let port = platform::ports::unused_port;
        Ok(Self {
            ingest: port()?,
            ingest_ops: port()?,
            stock: port()?,
            recorder: port()?,
            sender: port()?,
            provider: port()?,
        })
    }
}

/// Every service of the rush, named as the report names them, each with its
/// settings file in `dir`.
fn service_specs(
    stack: &Stack,
    ports: &Ports,
    waiting_room: &WaitingRoomArgs,
    dir: &Path,
) -> anyhow::Result<Vec<ServiceSpec>> {
    let faults = provider_sim::Faults { rate_limit_per_sec: Some(PROVIDER_RATE_PER_SEC), ..Default::default() };
    let provider = ProviderLink {
        base_url: format!("http://127.0.0.1:{}", ports.provider),
        timeout_ms: sender::Settings::default().provider.timeout_ms,
        rate_per_sec: Some(PROVIDER_RATE_PER_SEC),
        backoff_max_ms: None,
    };
    let mut sender = stack.sender(ports.sender, &provider)?;
    sender.provider.concurrency = SENDER_CONCURRENCY;
    let ingest = stack.ingest(ports.ingest, ports.ingest_ops)?;
    let ingest = ingest::Settings { waiting_room: waiting_room.apply(ingest.waiting_room.clone()), ..ingest };
    Ok(vec![
        ServiceSpec::new(
            "provider-sim",
            "provider-sim",
            &stack.provider_sim(ports.provider, faults, None)?,
            dir,
            ports.provider,
        )?,
        ServiceSpec::new(
            "stock-processor",
            "stock-processor",
            &stack.stock(ports.stock, None, None)?,
            dir,
            ports.stock,
        )?,
        ServiceSpec::new("recorder", "recorder", &stack.recorder(ports.recorder)?, dir, ports.recorder)?,
        ServiceSpec::new("sender", "sender", &sender, dir, ports.sender)?,
        // The drill's members fire many times a second from one process: the
        // per-member rate limit stays on, every request is one member.
        ServiceSpec::new("ingest", "ingest", &ingest, dir, ports.ingest_ops)?,
    ])
}

/// Runs the drill's rush as the command line asked: its report (`--format
/// json`: the document written as report.json), failed when an invariant broke.
pub async fn command(settings: &CliSettings, args: DrillArgs, format: Format) -> anyhow::Result<Output> {
    crate::refuse_outside_local(settings, "drill", "it seeds invented members and fires a rush")?;
    let event_id =
        args.event_id.clone().unwrap_or_else(|| format!("drill-rush-{}", chrono::Utc::now().format("%Y%m%d%H%M%S")));
    let log_dir = args.log_dir.clone().unwrap_or_else(|| PathBuf::from(".stack/drill").join(&event_id));
    // From here on a signal stops the drill's own services before it exits,
    // instead of leaving them running without it.
    let stop = platform::shutdown::on_signal();

    crate::say!("seeding {} members ({}% bought the product)…", args.members, ELIGIBLE_RATIO * 100.0);
    let seed = SeedPlan {
        count: args.members,
        id_prefix: MEMBER_PREFIX.into(),
        product_id: PRODUCT.into(),
        eligible_ratio: ELIGIBLE_RATIO,
    };
    unless_stopped(&stop, members::seed(&settings.member_primary, &settings.replica, &seed)).await?;

    let ports = Ports::unused()?;
    let specs = service_specs(&Stack::new(settings), &ports, &args.waiting_room, &log_dir)?;
    crate::say!("starting the pipeline for the rush (settings and logs in {})", log_dir.display());
    let running = unless_stopped(&stop, services::start_all(&specs, &log_dir, Duration::from_secs(120))).await?;
    let report = unless_stopped(&stop, rush(settings, &args, &event_id, &ports, &running, format)).await;
    services::stop_all(running, Duration::from_secs(10)).await;
    let report = report?;

    let holds = report.pipeline.as_ref().is_none_or(|p| p.invariants_hold);
    let text = match &report.pipeline {
        Some(p) if p.invariants_hold => format!("all invariants hold for {event_id}"),
        Some(p) => format!("invariants broken for {event_id}: {}", p.failing_invariants.join("; ")),
        None => String::new(),
    };
    Ok(Output::new(text, &report).failed_if(!holds, format!("invariants broken for {event_id}")))
}

/// `work`, unless a signal comes first.
async fn unless_stopped<T>(
    stop: &CancellationToken,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        () = stop.cancelled() => Err(Interrupted.into()),
    }
}

/// Creates the event, fires the rush at the running services and reports.
#[tracing::instrument(name = "drill", skip_all, fields(event_id = %event_id, members = args.members))]
async fn rush(
    settings: &CliSettings,
    args: &DrillArgs,
    event_id: &str,
    ports: &Ports,
    running: &[ServiceProcess],
    format: Format,
) -> anyhow::Result<DrillReport> {
    // The opening is ahead of the rush by its ramp (the early crowd gets
    // 425), plus the time the rush needs to read its members and mint their
    // tokens (about 50,000 a second) and 30 s for the event's creation.
    let open_in = args.ramp_secs.max(0.0).ceil() as usize + 30 + args.members / 50_000;
    // The operator's command, as an operator would create it: its checks
    // (the topics' retention covers the event) and its audit trail.
    let create = EventCommand::Create {
        id: Some(event_id.to_string()),
        name: "Survey reward: ₩10,000 coffee".into(),
        gift: event::DEFAULT_GIFT.into(),
        product: PRODUCT.into(),
        total: args.stock,
        safety: 0,
        line_depth: None,
        open_at: format!("+{open_in}s"),
        close_at: "+2h".into(),
        questions: event::DEFAULT_QUESTIONS.map(String::from).to_vec(),
        rebuild_window: "1d".into(),
        dry_run: false,
        yes: false,
    };
    let created = event::command(settings, create).await?;
    crate::say!("{}", created.text);
    crate::say!(
        "dashboard http://127.0.0.1:{}/dashboard?event={event_id} (operator token: {})",
        ports.ingest_ops,
        ingest::settings::DEV_OPERATOR_TOKEN
    );
    let rush = RushArgs {
        event_id: event_id.to_string(),
        urls: vec![format!("http://127.0.0.1:{}", ports.ingest)],
        members: i64::try_from(args.members)?,
        member_prefix: MEMBER_PREFIX.into(),
        duplicate_ratio: DUPLICATE_RATIO,
        connections: args.connections,
        peak_rate: args.peak_rate,
        ramp_secs: args.ramp_secs,
        decline_secs: args.decline_secs,
        max_lateness_ms: MAX_LATENESS_MS,
        max_wait_secs: args.max_wait_secs,
        drain_secs: args.drain_secs,
        provider_url: Some(format!("http://127.0.0.1:{}", ports.provider)),
        watch: running.iter().filter_map(|s| Some((s.name.clone(), s.pid()?))).collect(),
        baselines: args.baselines.clone(),
        report_dir: Some(args.out.clone()),
    };
    rush_command::run_report(settings, rush, format).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a service reads from the settings file the drill wrote for it.
    fn read_back<S: serde::de::DeserializeOwned>(spec: &ServiceSpec) -> S {
        let (_, file) = spec.env.iter().find(|(key, _)| key == "FIRSTCOME_CONFIG").expect("a settings file");
        toml::from_str(&std::fs::read_to_string(file).expect("written")).expect("the service reads it back")
    }

    #[test]
    fn every_service_is_started_from_its_file_with_the_drills_rates_and_waiting_room() {
        let mut settings = CliSettings::default();
        settings.kafka.topic_prefix = "drill-20261203.".into();
        let ports =
            Ports { ingest: 18380, ingest_ops: 19380, stock: 19381, recorder: 19382, sender: 19383, provider: 18390 };
        let room = WaitingRoomArgs {
            enabled: true,
            rate_per_sec: Some(2_000),
            burst: None,
            pre_queue: Some(PreQueueOrder::Fifo),
        };
        let dir = std::env::temp_dir().join(format!("firstcome-drill-{}", uuid::Uuid::new_v4()));
        let specs = service_specs(&Stack::new(&settings), &ports, &room, &dir).expect("specs");
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["provider-sim", "stock-processor", "recorder", "sender", "ingest"]);
        assert!(specs.iter().all(|s| s.env.len() == 1), "nothing but the settings file: {specs:?}");

        let sim: provider_sim::Settings = read_back(&specs[0]);
        assert_eq!((sim.http.port, sim.faults.rate_limit_per_sec), (18390, Some(2_000)));
        let sender: sender::Settings = read_back(&specs[3]);
        assert_eq!(sender.provider.base_url, "http://127.0.0.1:18390");
        assert_eq!((sender.provider.rate_per_sec, sender.provider.concurrency), (2_000, 64));
        assert_eq!(sender.kafka.topic_prefix, "drill-20261203.");
        let ingest: ingest::Settings = read_back(&specs[4]);
        assert_eq!((ingest.http.port, ingest.ops.port), (18380, 19380));
        assert_eq!(specs[4].health_url, "http://127.0.0.1:19380/healthz");
        let default_burst = WaitingRoomSettings::default().burst;
        let w = &ingest.waiting_room;
        assert_eq!(
            (w.enabled, w.rate_per_sec, w.burst, w.pre_queue),
            (true, 2_000, default_burst, PreQueueOrder::Fifo)
        );
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn without_the_flags_the_waiting_room_is_the_environments() {
        let base = WaitingRoomSettings::default();
        let kept = WaitingRoomArgs::default().apply(base.clone());
        assert_eq!((kept.enabled, kept.rate_per_sec, kept.burst), (base.enabled, base.rate_per_sec, base.burst));
        assert_eq!(parse_pre_queue("shuffle"), Ok(PreQueueOrder::Shuffle));
        assert!(parse_pre_queue("random").is_err());
    }
}
