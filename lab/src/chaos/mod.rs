//! `firstcome-lab chaos --seed N`: the six invariants proven while processes,
//! brokers and stores fail.
//!
//! One run, in its own slice of the stack (topic prefix `chaos-<seed>-<id>.`
//! on the three-broker Kafka, database and member schema `chaos_<seed>_<id>`,
//! the Sentinel-managed Redis, a fresh event): members are seeded, every
//! service is started as its own process, the rush is fired, and the faults
//! of the seed's schedule ([`schedule::plan`]) strike at their moments in
//! the rush and the drain. After the drain the invariant checker
//! (`invariants`: the stores' five checks and the log's) runs and the report
//! is printed and written with the service logs under
//! `<artifacts>/<seed>/` (default `.stack/chaos/<seed>/`); the seed's next
//! run keeps a failed run's folder apart as `<seed>-failed-<unix seconds>`.
//!
//! Needs `stack/bin/stack up kafka3 redis-sentinel` and the settings of
//! `stack env kafka3 redis-sentinel` (`scripts/chaos.sh` does both).

pub mod faults;
pub mod load;
pub mod report;
pub mod schedule;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use platform::event_keys::EventKeys;
use platform::kafka::admin::{create_topics, pipeline_topics, Layout};

use crate::output::Output;
use crate::service_settings::{ProviderLink, Stack};
use crate::services::{ServiceProcess, ServiceSpec};
use audit::{Check, Stores};
use faults::World;
use firstcome_cli::commands::event::{self, NewEvent, DEFAULT_QUESTIONS};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_cli::CliSettings;
use load::{InFlight, LoadPlan};
use report::ChaosReport;
use schedule::{Fault, Shape};

/// The knobs of a chaos run (the issue's minimums are the defaults).
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    pub seed: u64,
    pub members: usize,
    /// Share of members who bought the product (the others are refused 403).
    pub eligible_ratio: f64,
    /// Requests of the rush: every member once, the rest second entries.
    pub requests: usize,
    pub units: i32,
    pub rush: Duration,
    /// Faults keep coming this long after the rush (the drain).
    pub drain_window: Duration,
    /// The drain must end within this after the last fault.
    pub drain_timeout: Duration,
    pub ingest: usize,
    pub stock: usize,
    pub recorders: usize,
    pub senders: usize,
    pub kills_per_consumer: usize,
    pub concurrency: usize,
    pub partitions: i32,
    pub provider_transient_rate: f64,
    pub provider_timeout_after_issue_rate: f64,
    /// Answers the provider's contract never promised (docs/provider.md):
    /// another key's gift, a body that is not JSON, a reset after issuing.
    pub provider_wrong_key_rate: f64,
    pub provider_malformed_rate: f64,
    pub provider_reset_after_issue_rate: f64,
    /// Phones ending with this are refused for good: their units go back
    /// and to the next in line.
    pub refused_phone_suffix: String,
    /// Calls per second the sender makes to the provider (the slowest link).
    pub provider_rate_per_sec: u32,
    /// Reports and logs go to `<artifacts>/<seed>/`.
    pub artifacts: PathBuf,
    pub stack_bin: Option<PathBuf>,
}

impl Default for ChaosPlan {
    fn default() -> Self {
        Self {
            seed: 1,
            members: 15_000,
            eligible_ratio: 0.8,
            requests: 20_000,
            units: 2_000,
            rush: Duration::from_secs(40),
            drain_window: Duration::from_secs(35),
            drain_timeout: Duration::from_secs(180),
            ingest: 2,
            stock: 2,
            recorders: 1,
            senders: 1,
            kills_per_consumer: 2,
            concurrency: 48,
            partitions: 6,
            provider_transient_rate: 0.3,
            provider_timeout_after_issue_rate: 0.1,
            provider_wrong_key_rate: 0.05,
            provider_malformed_rate: 0.05,
            provider_reset_after_issue_rate: 0.05,
            refused_phone_suffix: "77".into(),
            provider_rate_per_sec: 60,
            artifacts: PathBuf::from(".stack/chaos"),
            stack_bin: None,
        }
    }
}

impl ChaosPlan {
    pub fn shape(&self) -> Shape {
        Shape {
            rush: self.rush,
            drain_window: self.drain_window,
            ingest: self.ingest,
            stock: self.stock,
            recorders: self.recorders,
            senders: self.senders,
            kills_per_consumer: self.kills_per_consumer,
        }
    }

    pub fn artifacts_dir(&self) -> PathBuf {
        self.artifacts.join(self.seed.to_string())
    }
}

/// `firstcome-lab chaos`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 15_000)]
    pub members: usize,
    /// Requests of the rush (every member once, the rest second entries).
    #[arg(long, default_value_t = 20_000)]
    pub entries: usize,
    #[arg(long, default_value_t = 2_000)]
    pub units: i32,
    /// Seconds the rush is spread over.
    #[arg(long, default_value_t = 40)]
    pub rush_secs: u64,
    /// Seconds after the rush in which faults still strike.
    #[arg(long, default_value_t = 35)]
    pub drain_window_secs: u64,
    /// Plain SIGKILLs of each consumer instance.
    #[arg(long, default_value_t = 2)]
    pub kills: usize,
    /// Reports and service logs go to <artifacts>/<seed>/.
    #[arg(long, default_value = ".stack/chaos")]
    pub artifacts: PathBuf,
}

/// Runs one seed as the command line asked: its report (`--format json`:
/// the report.json document), failed when an invariant broke.
pub async fn command(settings: &CliSettings, args: ChaosArgs) -> anyhow::Result<Output> {
    let plan = ChaosPlan {
        seed: args.seed,
        members: args.members,
        requests: args.entries,
        units: args.units,
        rush: Duration::from_secs(args.rush_secs),
        drain_window: Duration::from_secs(args.drain_window_secs),
        kills_per_consumer: args.kills,
        artifacts: args.artifacts,
        ..Default::default()
    };
    let report = run(settings, &plan).await?;
    report.print();
    let passed = report.passed();
    let text = if passed { format!("\nchaos seed {}: every invariant holds", args.seed) } else { String::new() };
    let why = format!("chaos seed {} FAILED: the report and every service log are in {}", args.seed, report.artifacts);
    Ok(Output::new(text, &report).failed_if(!passed, why))
}

/// The run's own names, derived from the seed and a random id.
struct Names {
    prefix: String,
    database: String,
    event_id: String,
    product: String,
    member_prefix: String,
}

impl Names {
    fn new(seed: u64) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Self {
            prefix: format!("chaos-{seed}-{id}."),
            database: format!("chaos_{seed}_{id}"),
            event_id: format!("chaos-{seed}-{id}"),
            product: format!("chaos-product-{id}"),
            member_prefix: format!("c{id}-"),
        }
    }
}

/// Runs the suite; the report says whether every check held (the services
/// are stopped and the stack left healthy before it returns).
pub async fn run(settings: &CliSettings, plan: &ChaosPlan) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    if settings.redis.sentinels.trim().is_empty() || settings.kafka.brokers.split(',').count() < 3 {
        bail!("the chaos suite runs on the three-broker Kafka and the Sentinel-managed Redis: eval \"$(stack/bin/stack env kafka3 redis-sentinel)\" first (scripts/chaos.sh does)");
    }
    let stack_bin = match &plan.stack_bin {
        Some(bin) => bin.clone(),
        None => find_stack()?,
    };
    let artifacts = plan.artifacts_dir();
    if let Some(kept) = report::prepare_dir(&artifacts)? {
        crate::say!("the seed's last run failed: its report and logs are kept in {}", kept.display());
    }
    let artifacts = std::fs::canonicalize(&artifacts)?;

    let names = Names::new(plan.seed);
    let schedule = schedule::plan(plan.seed, &plan.shape());
    crate::say!("chaos seed {} — {} faults planned (same seed, same schedule):", plan.seed, schedule.len());
    for p in &schedule {
        crate::say!("  {:>7.1} s  {}", p.at_ms as f64 / 1000.0, p.fault.label());
    }

    let mut run_settings = settings.clone();
    run_settings.kafka.topic_prefix = names.prefix.clone();
    run_settings.database = settings.database.with_database(&names.database);
    run_settings.replica.schema = names.database.clone();
    run_settings.member_primary.schema = names.database.clone();

    crate::say!(
        "\nsetting up: topics {}* (RF 3), database {}, {} members…",
        names.prefix,
        names.database,
        plan.members
    );
    faults::stack(&stack_bin, &["up", "kafka3", "redis-sentinel"]).await?;
    faults::wait_redis_healthy(Duration::from_secs(60)).await;
    let topics = run_settings.kafka.topics();
    let layout = Layout { partitions: plan.partitions, dlq_partitions: 1, replication: 3 };
    create_topics(&run_settings.kafka, &pipeline_topics(&topics, layout))
        .await
        .context("creating the topics on kafka3")?;
    // The services log in as themselves (SASL): their ACLs on the run's topics.
    platform::kafka::acl::create_acls(
        &run_settings.kafka,
        &platform::kafka::acl::pipeline_acls(&run_settings.kafka.topic_prefix),
    )
    .await
    .context("creating the ACLs on kafka3")?;
    schemas::RegistryAdmin::new(&run_settings.registry.url, Duration::from_millis(run_settings.registry.timeout_ms))?
        .register_all(&topics)
        .await
        .context("registering the schemas")?;
    platform::db::create_database(&settings.database, &names.database).await?;
    let pool = platform::db::pool(&run_settings.database)?;
    platform::db::migrate(&pool).await?;
    drop(pool);
    let seeded = members::seed(
        &run_settings.member_primary,
        &run_settings.replica,
        &SeedPlan {
            count: plan.members,
            id_prefix: names.member_prefix.clone(),
            product_id: names.product.clone(),
            eligible_ratio: plan.eligible_ratio,
        },
    )
    .await?;
    let now = chrono::Utc::now();
    let new_event = NewEvent {
        event_id: names.event_id.clone(),
        name: "chaos".into(),
        product_id: names.product.clone(),
        total_stock: plan.units,
        safety_stock: 0,
        open_at: now - chrono::Duration::minutes(1),
        close_at: now + chrono::Duration::hours(2),
        questions: DEFAULT_QUESTIONS.map(String::from).to_vec(),
        line_depth: None,
    };
    event::create(&run_settings, &new_event).await?;

    let mut report = ChaosReport {
        seed: plan.seed,
        event_id: names.event_id.clone(),
        topic_prefix: names.prefix.clone(),
        database: names.database.clone(),
        members: seeded.members.len(),
        eligible: seeded.eligible.len(),
        for_sale: new_event.for_sale(),
        schedule: schedule.clone(),
        faults: Vec::new(),
        load: Default::default(),
        accepted: 0,
        drained: false,
        drain_ms: 0,
        rush_to_last_fault_ms: 0,
        invariants: None,
        log: None,
        checks: Vec::new(),
        fidelity: None,
        last_request_to_last_gift_ms: None,
        duration_ms: 0,
        artifacts: artifacts.display().to_string(),
        error: None,
    };

    let (services, urls, provider_url) = start_services(&run_settings, plan, &artifacts).await?;
    let ingest_index = (0..plan.ingest).map(|i| (schedule::name("ingest", i), i)).collect();
    let mut world = World {
        services,
        stack_bin: stack_bin.clone(),
        brokers: run_settings.kafka.brokers.clone(),
        kafka: run_settings.kafka.clone(),
        decided_topic: topics.stock_decided.clone(),
        event_keys: EventKeys::new(&names.event_id),
        event_id: names.event_id.clone(),
        settings: run_settings.clone(),
        redis: platform::redis::connect(&run_settings.redis).await?,
        admin: platform::db::pool(&settings.database.with_database("postgres"))?,
        database: names.database.clone(),
        in_flight: InFlight::default(),
        ingest_index,
        background: Vec::new(),
    };

    let outcome = rush_faults_and_drain(
        &run_settings,
        plan,
        &mut world,
        &urls,
        &provider_url,
        &seeded.members,
        &schedule,
        &mut report,
    )
    .await;
    if let Err(error) = outcome {
        report.error = Some(format!("{error:#}"));
    }
    for (_, service) in world.services.drain() {
        // A frozen process cannot stop: thaw it first (harmless otherwise).
        let _ = service.signal("CONT").await;
        service.stop(Duration::from_secs(10)).await;
    }
    // Leave the brokers and the Sentinel set running and healthy for others.
    if let Err(error) = faults::stack(&stack_bin, &["up", "kafka3", "redis-sentinel"]).await {
        report.error.get_or_insert(format!("leaving the stack up: {error:#}"));
    }
    faults::wait_redis_healthy(Duration::from_secs(60)).await;
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.write(&artifacts)?;
    if report.passed() {
        cleanup(settings, &run_settings, &names).await;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn rush_faults_and_drain(
    settings: &CliSettings,
    plan: &ChaosPlan,
    world: &mut World,
    urls: &[String],
    provider_url: &str,
    members: &[String],
    schedule: &[schedule::Planned],
    report: &mut ChaosReport,
) -> anyhow::Result<()> {
    let secret = &settings.auth.token_secret;
    let mut shots = Vec::with_capacity(members.len());
    for member in members {
        shots.push((member.clone(), ingest::auth::mint(secret, member, Duration::from_secs(3600))?));
    }
    let load_plan = LoadPlan {
        base_urls: urls.to_vec(),
        event_id: report.event_id.clone(),
        members: shots,
        requests: plan.requests.max(members.len()),
        rush: plan.rush,
        concurrency: plan.concurrency,
        seed: plan.seed,
        shot_deadline: Duration::from_secs(90),
    };
    crate::say!(
        "\nrush: {} requests over {:.0} s from {} members; faults:",
        load_plan.requests,
        plan.rush.as_secs_f64(),
        members.len()
    );
    let rush_started = Instant::now();
    let in_flight = world.in_flight.clone();
    let rush = tokio::spawn(async move { load::run(&load_plan, &in_flight).await });
    for planned in schedule {
        let injected = world.inject(planned, rush_started).await;
        let failed = injected.error.is_some();
        report.faults.push(injected);
        if failed {
            // The world is broken (a service that does not come back, a
            // store that does not answer): the run has failed; waiting out
            // the rest of the schedule would only delay the report.
            crate::say!(
                "  a fault could not be injected: the remaining {} are skipped",
                schedule.len() - report.faults.len()
            );
            break;
        }
    }
    let unfinished = world.settle().await;
    let load = rush.await.context("the rush task")??;
    let faults_ended = Instant::now();
    report.rush_to_last_fault_ms = faults_ended
        .saturating_duration_since(rush_started + Duration::from_millis(load.elapsed_ms))
        .as_millis() as u64;
    report.accepted = load.accepted.len();
    crate::say!(
        "rush done in {:.1} s: {} requests, final answers {:?}",
        load.elapsed_ms as f64 / 1000.0,
        load.requests,
        load.finals
    );

    crate::say!("waiting for the drain…");
    let stores = connect_stores(settings).await?;
    let accepted = load.accepted.clone();
    report.load = load;
    // After a failed fault the run has failed: a short look is enough for the report.
    let broken = report.faults.iter().any(|f| f.error.is_some());
    let drain_timeout = if broken { Duration::from_secs(30) } else { plan.drain_timeout };
    let drained = platform::wait::wait_until(drain_timeout, || async {
        match audit::check(&stores, &report.event_id, &accepted, None).await {
            Ok(state) => state.drained(accepted.len()),
            Err(_) => false,
        }
    })
    .await;
    report.drained = drained;
    report.drain_ms = faults_ended.elapsed().as_millis() as u64;

    let checked = audit::check(&stores, &report.event_id, &accepted, Some(provider_url)).await?;
    report.checks.extend(checked.checks.iter().cloned());
    report.invariants = Some(checked);
    let (log, log_check) =
        audit::check_log(&settings.kafka, &settings.registry, &stores, &report.event_id, &accepted).await?;
    report.log = Some(log);
    report.checks.push(log_check);
    report.checks.extend(fault_checks(&report.faults, schedule.len(), &unfinished));
    report.fidelity = Some(audit::fcfs_fidelity(&stores, &report.event_id, audit::FirstN::ForSale).await?);
    if let (Some(last_gift), Some(last_request)) =
        (audit::last_gift_at(&stores, &report.event_id, provider_url).await?, report.load.last_request_at)
    {
        report.last_request_to_last_gift_ms = Some((last_gift - last_request).num_milliseconds());
    }
    if !drained {
        bail!("not drained {:.0} s after the last fault", drain_timeout.as_secs_f64());
    }
    Ok(())
}

/// The stores, retried for a while: the last fault may have left Redis
/// failing over.
async fn connect_stores(settings: &CliSettings) -> Result<Stores, audit::AuditError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Stores::connect(&settings.database, &settings.redis).await {
            Ok(stores) => return Ok(stores),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The faults themselves must have happened as planned: every one injected,
/// and the conditional ones caught in their window.
fn fault_checks(faults: &[faults::Injected], planned: usize, unfinished: &[String]) -> Vec<Check> {
    let mut failed: Vec<String> =
        faults.iter().filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.label))).collect();
    failed.extend(unfinished.iter().cloned());
    if faults.len() < planned {
        failed.push(format!("{} of {planned} faults skipped after a failed one", planned - faults.len()));
    }
    let caught = |what: fn(&Fault) -> bool| faults.iter().any(|f| what(&f.fault) && f.condition_met == Some(true));
    vec![
        Check {
            name: "faults: every planned fault injected",
            holds: failed.is_empty(),
            detail: if failed.is_empty() { format!("{} faults", faults.len()) } else { failed.join("; ") },
        },
        Check {
            name: "faults: stock stage killed inside an open transaction",
            holds: caught(|f| matches!(f, Fault::KillStockInTransaction { .. })),
            detail: faults
                .iter()
                .filter(|f| matches!(f.fault, Fault::KillStockInTransaction { .. }))
                .map(|f| f.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        },
        Check {
            name: "faults: ingest killed between the mark and the ack",
            holds: caught(|f| matches!(f, Fault::KillIngestBeforeAck { .. })),
            detail: faults
                .iter()
                .filter(|f| matches!(f.fault, Fault::KillIngestBeforeAck { .. }))
                .map(|f| f.detail.clone())
                .collect::<Vec<_>>()
                .join("; "),
        },
    ]
}

/// Every service as its own process, on free ports, logging into `dir`.
async fn start_services(
    settings: &CliSettings,
    plan: &ChaosPlan,
    dir: &Path,
) -> anyhow::Result<(HashMap<String, ServiceProcess>, Vec<String>, String)> {
    let stack = Stack::new(settings);
    let mut specs = Vec::new();

    let provider_port = free_port()?;
    let faults = provider_sim::Faults {
        transient_failure_rate: plan.provider_transient_rate,
        timeout_after_issue_rate: plan.provider_timeout_after_issue_rate,
        hang_ms: 2000,
        refused_phone_suffixes: vec![plan.refused_phone_suffix.clone()],
        wrong_key_rate: plan.provider_wrong_key_rate,
        malformed_rate: plan.provider_malformed_rate,
        reset_after_issue_rate: plan.provider_reset_after_issue_rate,
        ..Default::default()
    };
    let simulator = stack.provider_sim(provider_port, faults, Some(plan.seed))?;
    specs.push(ServiceSpec::new("provider-sim", "provider-sim", &simulator, dir, provider_port)?);
    let provider_url = format!("http://127.0.0.1:{provider_port}");
    for n in 0..plan.stock {
        let port = free_port()?;
        // The failover fence: Sentinel's Redis has one replica.
        let stock = stack.stock(port, Some(format!("chaos-stock-{}", n + 1)), Some(1))?;
        specs.push(ServiceSpec::new(&schedule::name("stock", n), "stock-processor", &stock, dir, port)?);
    }
    for n in 0..plan.recorders {
        let port = free_port()?;
        specs.push(ServiceSpec::new(&schedule::name("recorder", n), "recorder", &stack.recorder(port)?, dir, port)?);
    }
    let link = ProviderLink {
        base_url: provider_url.clone(),
        timeout_ms: 1000,
        rate_per_sec: Some(plan.provider_rate_per_sec),
        backoff_max_ms: Some(1000),
    };
    for n in 0..plan.senders {
        let port = free_port()?;
        specs.push(ServiceSpec::new(&schedule::name("sender", n), "sender", &stack.sender(port, &link)?, dir, port)?);
    }
    let mut urls = Vec::new();
    for n in 0..plan.ingest {
        let (port, ops) = (free_port()?, free_port()?);
        urls.push(format!("http://127.0.0.1:{port}"));
        // Ingest fences its admissions as the stage fences its batches: a
        // failover must not hand a ticket out twice.
        let ingest = ingest::Settings { replica_acks: 1, ..stack.ingest(port, ops)? };
        specs.push(ServiceSpec::new(&schedule::name("ingest", n), "ingest", &ingest, dir, ops)?);
    }
    let mut running = HashMap::new();
    for spec in &specs {
        running.insert(spec.name.clone(), ServiceProcess::start(spec, dir)?);
    }
    for spec in &specs {
        let service = running.get_mut(&spec.name).context("started")?;
        service.wait_healthy(Duration::from_secs(120)).await?;
        crate::say!(
            "  {:<14} healthy (pid {}, log {})",
            service.name,
            service.pid().unwrap_or(0),
            service.log.display()
        );
    }
    Ok((running, urls, provider_url))
}

/// A port nothing listens on right now (bound, then released).
fn free_port() -> anyhow::Result<u16> {
    Ok(platform::ports::unused_port()?)
}

/// `stack/bin/stack`, from the working folder or above the binary.
fn find_stack() -> anyhow::Result<PathBuf> {
    let mut places = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        places.extend(exe.ancestors().map(Path::to_path_buf));
    }
    for place in places {
        for dir in place.ancestors() {
            let candidate = dir.join("stack/bin/stack");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("stack/bin/stack not found (run from the repository, or pass --stack)")
}

/// A passing run leaves nothing behind but its report and logs.
async fn cleanup(settings: &CliSettings, run_settings: &CliSettings, names: &Names) {
    let specs = pipeline_topics(&run_settings.kafka.topics(), Layout::default());
    let topics: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let _ = platform::kafka::admin::delete_topics(&run_settings.kafka, &topics).await;
    if let Ok(admin) = platform::db::pool(&settings.database.with_database("postgres")) {
        if let Ok(db) = admin.get().await {
            let _ = db.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", names.database)).await;
        }
    }
    if let Ok(primary) = platform::member_db::primary_pool(&settings.member_primary) {
        if let Ok(db) = primary.get().await {
            let _ = db.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", names.database)).await;
        }
    }
}
