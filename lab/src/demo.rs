//! `firstcome-lab demo`: an opening rush on the local stack, end to end.
//!
//! Seeds members, creates an event, starts every service as its own process
//! (two ingest instances behind a round-robin client, one of each consumer
//! group, the provider simulator with faults switched on), fires the burst,
//! waits for the pipeline to drain and prints the outcome with every
//! invariant checked. The stack must be up and the topics/schemas in place
//! (`scripts/demo.sh` does both).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::output::Output;
use crate::rush::{self, RushPlan, RushReport};
use crate::service_settings::{ProviderLink, Stack};
use crate::services::{self, ServiceProcess, ServiceSpec};
use audit::InvariantReport;
use firstcome_cli::commands::event::{self, NewEvent, DEFAULT_QUESTIONS};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_cli::CliSettings;

/// The knobs of the demo.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    pub members: usize,
    pub eligible_ratio: f64,
    pub total_stock: i32,
    pub safety_stock: i32,
    pub duplicate_ratio: f64,
    pub concurrency: usize,
    pub ingest_instances: usize,
    /// Provider faults: 503 before issuing, and issuing but timing out.
    pub provider_transient_rate: f64,
    pub provider_timeout_after_issue_rate: f64,
    /// Phones ending with this are refused for good (their units go back).
    pub refused_phone_suffix: Option<String>,
    pub drain_timeout: Duration,
    pub log_dir: PathBuf,
}

impl Default for DemoPlan {
    fn default() -> Self {
        Self {
            members: 5_000,
            eligible_ratio: 0.9,
            total_stock: 1_050,
            safety_stock: 50,
            duplicate_ratio: 0.1,
            concurrency: 64,
            ingest_instances: 2,
            provider_transient_rate: 0.05,
            provider_timeout_after_issue_rate: 0.02,
            refused_phone_suffix: Some("77".into()),
            drain_timeout: Duration::from_secs(180),
            log_dir: PathBuf::from(".stack/demo"),
        }
    }
}

/// `firstcome-lab demo`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 5_000)]
    pub members: usize,
    #[arg(long, default_value_t = 1_050)]
    pub total: i32,
    #[arg(long, default_value_t = 50)]
    pub safety: i32,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 2)]
    pub ingest_instances: usize,
}

/// Runs the demo as the command line asked: its outcome (`--format json`:
/// one document), failed when an invariant broke.
pub async fn command(settings: &CliSettings, args: DemoArgs) -> anyhow::Result<Output> {
    let plan = DemoPlan {
        members: args.members,
        total_stock: args.total,
        safety_stock: args.safety,
        concurrency: args.concurrency,
        ingest_instances: args.ingest_instances,
        ..Default::default()
    };
    let outcome = run(settings, &plan).await?;
    let holds = outcome.invariants.all_hold();
    let text = if holds { format!("\nall invariants hold for {}", outcome.event_id) } else { String::new() };
    Ok(Output::new(text, &outcome).failed_if(!holds, format!("invariants broken for {}", outcome.event_id)))
}

/// What the demo saw.
#[derive(Debug, serde::Serialize)]
pub struct DemoOutcome {
    pub event_id: String,
    pub rush: RushReport,
    pub invariants: InvariantReport,
    #[serde(rename = "drained_in_ms", serialize_with = "as_millis")]
    pub drained_in: Duration,
}

fn as_millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(duration.as_millis() as u64)
}

const INGEST_BASE_PORT: u16 = 8080;
/// Ingest instance i serves `/healthz` and `/metrics` on this + i.
const INGEST_OPS_BASE_PORT: u16 = 9110;
const PROVIDER_PORT: u16 = 8090;

/// Runs the demo; the services are stopped before it returns.
pub async fn run(settings: &CliSettings, plan: &DemoPlan) -> anyhow::Result<DemoOutcome> {
    crate::say!("seeding {} members ({}% bought the product)…", plan.members, plan.eligible_ratio * 100.0);
    let seed_plan = SeedPlan { count: plan.members, eligible_ratio: plan.eligible_ratio, ..Default::default() };
    let seeded = members::seed(&settings.member_primary, &settings.replica, &seed_plan).await?;

    let now = chrono::Utc::now();
    let new_event = NewEvent {
        event_id: format!("demo-{}", now.format("%Y%m%d-%H%M%S")),
        name: "Survey reward: ₩10,000 coffee gifticon".into(),
        product_id: seed_plan.product_id.clone(),
        total_stock: plan.total_stock,
        safety_stock: plan.safety_stock,
        open_at: now,
        close_at: now + chrono::Duration::hours(1),
        questions: DEFAULT_QUESTIONS.map(String::from).to_vec(),
        line_depth: None,
    };
    let eligible = event::create(settings, &new_event).await?;
    crate::say!(
        "event {}: {} in stock, {} safety, {} for sale, {eligible} eligible members",
        new_event.event_id,
        plan.total_stock,
        plan.safety_stock,
        new_event.for_sale()
    );

    let running = start_services(settings, plan).await?;
    let result = rush_and_drain(settings, plan, &new_event, &seeded.members).await;
    services::stop_all(running, Duration::from_secs(10)).await;
    result
}

async fn start_services(settings: &CliSettings, plan: &DemoPlan) -> anyhow::Result<Vec<ServiceProcess>> {
    let stack = Stack::new(settings);
    let dir = &plan.log_dir;
    let faults = provider_sim::Faults {
        transient_failure_rate: plan.provider_transient_rate,
        timeout_after_issue_rate: plan.provider_timeout_after_issue_rate,
        hang_ms: 3000,
        refused_phone_suffixes: plan.refused_phone_suffix.iter().cloned().collect(),
        ..Default::default()
    };
    let provider = ProviderLink {
        base_url: format!("http://127.0.0.1:{PROVIDER_PORT}"),
        timeout_ms: 1000,
        rate_per_sec: None,
        backoff_max_ms: None,
    };
    let mut specs = vec![
        ServiceSpec::new(
            "provider-sim",
            "provider-sim",
            &stack.provider_sim(PROVIDER_PORT, faults, None)?,
            dir,
            PROVIDER_PORT,
        )?,
        ServiceSpec::new("stock-processor", "stock-processor", &stack.stock(9101, None, None)?, dir, 9101)?,
        ServiceSpec::new("recorder", "recorder", &stack.recorder(9102)?, dir, 9102)?,
        ServiceSpec::new("sender", "sender", &stack.sender(9103, &provider)?, dir, 9103)?,
    ];
    for i in 0..plan.ingest_instances {
        let port = INGEST_BASE_PORT + 2 * i as u16;
        let ops_port = INGEST_OPS_BASE_PORT + i as u16;
        let name = format!("ingest-{}", i + 1);
        specs.push(ServiceSpec::new(&name, "ingest", &stack.ingest(port, ops_port)?, dir, ops_port)?);
    }
    services::start_all(&specs, &plan.log_dir, Duration::from_secs(60)).await
}

async fn rush_and_drain(
    settings: &CliSettings,
    plan: &DemoPlan,
    new_event: &NewEvent,
    members: &[String],
) -> anyhow::Result<DemoOutcome> {
    let secret: &SecretString = &settings.auth.token_secret;
    let mut shots = Vec::with_capacity(members.len());
    for member in members {
        shots.push((member.clone(), ingest::auth::mint(secret, member, Duration::from_secs(3600))?));
    }
    // The survey page and the dashboard, for a person to watch the rush (docs/event-pages.md).
    crate::say!("\nsurvey page  http://127.0.0.1:{INGEST_BASE_PORT}/?event={}", new_event.event_id);
    crate::say!(
        "dashboard    http://127.0.0.1:{INGEST_OPS_BASE_PORT}/dashboard?event={} (operator token: {})",
        new_event.event_id,
        ingest::settings::DEV_OPERATOR_TOKEN
    );
    // Signed in as the shop's login would send them: the token in the fragment.
    for (member, token) in shots.iter().take(3) {
        crate::say!("as {member}  http://127.0.0.1:{INGEST_BASE_PORT}/?event={}#token={token}", new_event.event_id);
    }
    let urls =
        (0..plan.ingest_instances).map(|i| format!("http://127.0.0.1:{}", INGEST_BASE_PORT + 2 * i as u16)).collect();
    // Open loop: a rate the demo's two ingest instances answer on a busy
    // two-core machine, reached at once (the event is already open), over
    // `concurrency` keep-alive connections.
    let rush_plan = RushPlan {
        duplicate_ratio: plan.duplicate_ratio,
        connections: plan.concurrency,
        shape: rush::Shape { peak_rate: 2_500.0, ramp: Duration::ZERO, decline: Duration::from_secs(1) },
        progress: true,
        ..RushPlan::new(urls, new_event.event_id.clone(), shots)
    };
    crate::say!(
        "\nopening rush: {} members (+{}% retries), {} connections…",
        members.len(),
        plan.duplicate_ratio * 100.0,
        plan.concurrency
    );
    let report = rush::run(&rush_plan).await?;
    crate::say!(
        "  {} requests in {} ms: {:.0} req/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.requests,
        report.elapsed_ms,
        report.requests_per_sec,
        report.p50_ms,
        report.p99_ms,
        report.max_ms
    );

    crate::say!("\nwaiting for the pipeline to drain…");
    let started = Instant::now();
    let provider = format!("http://127.0.0.1:{PROVIDER_PORT}");
    let stores = audit::Stores::connect(&settings.database, &settings.redis).await?;
    let drained = event::wait_until(plan.drain_timeout, || async {
        match audit::check(&stores, &new_event.event_id, &report.accepted, None).await {
            Ok(state) => state.drained(report.accepted.len()),
            Err(_) => false,
        }
    })
    .await;
    let drained_in = started.elapsed();
    let invariants = audit::check(&stores, &new_event.event_id, &report.accepted, Some(&provider)).await?;
    print_outcome(&report, &invariants, drained, drained_in);
    Ok(DemoOutcome { event_id: new_event.event_id.clone(), rush: report, invariants, drained_in })
}

fn print_outcome(report: &RushReport, invariants: &InvariantReport, drained: bool, drained_in: Duration) {
    let t = &invariants.tally;
    if drained {
        crate::say!("  drained in {:.1} s", drained_in.as_secs_f64());
    } else {
        crate::say!("  NOT drained after {:.1} s", drained_in.as_secs_f64());
    }
    crate::say!("\noutcome");
    crate::say!("  accepted (202)   {}", report.count(202));
    for (error, n) in &report.by_error {
        crate::say!("  refused {:<9} {n}", error);
    }
    crate::say!("  by status        {:?}", report.by_status);
    crate::say!("  won              {}", t.sent + t.failed + t.won);
    crate::say!("  sent             {}", t.sent);
    crate::say!("  failed→returned  {}", t.failed);
    crate::say!("  lost             {}", t.lost);
    crate::say!(
        "  phantom success  {}  (told \"won\", refused by the payout guard, never paid; must be 0)",
        t.phantom_successes
    );
    crate::say!(
        "  for sale         {}  (ledger issued {}, returned {}, redis stock {})",
        t.for_sale,
        t.ledger_issued,
        t.ledger_returned,
        t.redis_stock
    );
    crate::say!("\ninvariants");
    crate::say!("{}", audit::text(&invariants.checks).trim_end());
}
