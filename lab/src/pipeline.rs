//! The whole pipeline in this process, on one test's slice of the real stack
//! (`testkit::TestEnv`): every service's library `Application` on port 0,
//! a crowd of members seeded on the member primary, an open event created
//! as an operator creates it, a rush fired by the lab's generator, and the
//! wait until the pipeline is done, checked by `audit`.
//!
//! For the end-to-end tests and the operator command's own tests alike, so
//! neither builds a pipeline of its own (and the end-to-end tests need not
//! link the operator's command for their fixtures).

use std::time::Duration;

use anyhow::Context;
use platform::settings::HttpSettings;
use platform::CancellationToken;
use tokio::task::JoinHandle;

use audit::{Accepted, InvariantReport};
use firstcome_cli::commands::event::{self, NewEvent, DEFAULT_QUESTIONS};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_cli::CliSettings;
use testkit::TestEnv;

use crate::rush::{self, RushPlan, RushReport};

/// How many of each service, and how the provider misbehaves.
#[derive(Clone)]
pub struct Topology {
    pub ingest_instances: usize,
    pub instances_per_group: usize,
    pub faults: provider_sim::Faults,
    /// The sender's provider call timeout (short, so timeouts happen in tests).
    pub provider_timeout_ms: u64,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            ingest_instances: 1,
            instances_per_group: 1,
            faults: provider_sim::Faults::default(),
            provider_timeout_ms: 500,
        }
    }
}

/// The running services.
pub struct Pipeline {
    pub ingest_urls: Vec<String>,
    pub provider_url: String,
    /// Each service's ops port (`/metrics`, `/healthz`), by service name.
    pub ops_ports: Vec<(&'static str, u16)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Runs a service until it stops. One that stops with an error panics its
/// task: under test that is a failure to show loudly in the output, not a
/// result anyone waits for.
fn spawn_named<E: std::fmt::Display + Send + 'static>(
    name: &'static str,
    future: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = future.await {
            tracing::error!(service = name, %error, "service stopped with an error");
            panic!("{name} stopped with an error: {error}");
        }
    })
}

impl Pipeline {
    /// Starts the provider simulator, `instances_per_group` of each consumer
    /// service and `ingest_instances` ingest instances on `env`'s slice.
    pub async fn start(env: &TestEnv, topology: Topology) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut ops_ports = Vec::new();

        let provider = provider_sim::Application::build(provider_sim::Settings::ephemeral(topology.faults.clone(), 7))
            .await
            .context("Failed to start the provider simulator")?;
        let provider_url = provider.base_url();
        tasks.push(spawn_named("provider-sim", provider.run_until_stopped(shutdown.clone())));

        for _ in 0..topology.instances_per_group {
            let stock = stock_processor::Application::build(stock_settings(env))
                .await
                .context("Failed to start stock-processor")?;
            ops_ports.push(("stock-processor", stock.ops_port()));
            tasks.push(spawn_named("stock-processor", stock.run_until_stopped(shutdown.clone())));

            let recorder =
                recorder::Application::build(recorder_settings(env)).await.context("Failed to start recorder")?;
            ops_ports.push(("recorder", recorder.ops_port()));
            tasks.push(spawn_named("recorder", recorder.run_until_stopped(shutdown.clone())));

            let mut sender_settings = sender::Settings {
                kafka: env.kafka.clone(),
                registry: env.registry.clone(),
                database: env.database.clone(),
                replica: env.replica.clone(),
                http: HttpSettings::on_port(0),
                ..Default::default()
            };
            sender_settings.provider.base_url = provider_url.clone();
            sender_settings.provider.timeout_ms = topology.provider_timeout_ms;
            sender_settings.provider.backoff_base_ms = 20;
            sender_settings.provider.backoff_max_ms = 200;
            let sender = sender::Application::build(sender_settings).await.context("Failed to start sender")?;
            ops_ports.push(("sender", sender.ops_port()));
            tasks.push(spawn_named("sender", sender.run_until_stopped(shutdown.clone())));
        }

        let mut ingest_urls = Vec::new();
        for _ in 0..topology.ingest_instances {
            let ingest = ingest::Application::build(ingest_settings(env)).await.context("Failed to start ingest")?;
            ingest_urls.push(ingest.base_url());
            ops_ports.push(("ingest", ingest.ops_port()));
            tasks.push(spawn_named("ingest", ingest.run_until_stopped(shutdown.clone())));
        }
        Ok(Self { ingest_urls, provider_url, ops_ports, shutdown, tasks })
    }

    /// Stops every service, each given 30 s to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

/// Members of one slice: `eligible` bought the product, `ineligible` did not.
pub struct Crowd {
    pub product: String,
    pub eligible: Vec<String>,
    pub ineligible: Vec<String>,
}

/// Seeds `eligible` + `ineligible` members with a product of their own
/// (`members seed`, on the slice's member schema).
pub async fn seed_crowd(env: &TestEnv, eligible: usize, ineligible: usize) -> anyhow::Result<Crowd> {
    let tag = env.prefix.get(2..10).unwrap_or(&env.prefix);
    let product = format!("product-{tag}");
    let plan = |prefix: &str, count: usize, eligible_ratio: f64| SeedPlan {
        count,
        id_prefix: format!("{prefix}{tag}-"),
        product_id: product.clone(),
        eligible_ratio,
    };
    let buyers = members::seed(&env.member_primary, &env.replica, &plan("e", eligible, 1.0))
        .await
        .context("Failed to seed the eligible members")?;
    let others = members::seed(&env.member_primary, &env.replica, &plan("i", ineligible, 0.0))
        .await
        .context("Failed to seed the ineligible members")?;
    Ok(Crowd { product, eligible: buyers.members, ineligible: others.members })
}

/// An event for `crowd`'s product, opened a minute ago, closing in an hour.
pub fn new_event(crowd: &Crowd, total: i32, safety: i32) -> NewEvent {
    let now = chrono::Utc::now();
    NewEvent {
        event_id: format!("ev-{}", uuid::Uuid::new_v4()),
        name: "test event".into(),
        product_id: crowd.product.clone(),
        total_stock: total,
        safety_stock: safety,
        open_at: now - chrono::Duration::minutes(1),
        close_at: now + chrono::Duration::hours(1),
        questions: DEFAULT_QUESTIONS.map(String::from).to_vec(),
        line_depth: None,
    }
}

/// Creates `event` as `firstcome event create` does; returns the members
/// found eligible.
pub async fn create_event(env: &TestEnv, event: &NewEvent) -> anyhow::Result<usize> {
    event::create(&operator_settings(env), event).await
}

/// Creates an open event for `crowd` ([`new_event`]); returns its id.
pub async fn open_event(env: &TestEnv, crowd: &Crowd, total: i32, safety: i32) -> anyhow::Result<String> {
    let event = new_event(crowd, total, safety);
    create_event(env, &event).await.with_context(|| format!("Failed to create event {}", event.event_id))?;
    Ok(event.event_id)
}

/// Each member submits once, `duplicate_ratio` of them twice (the rush
/// generator, loopback only), with tokens ingest's default secret signs.
pub async fn submit(
    pipeline: &Pipeline,
    event_id: &str,
    members: &[String],
    duplicate_ratio: f64,
) -> anyhow::Result<RushReport> {
    let secret = ingest::Settings::default().auth.token_secret;
    let mut shots = Vec::with_capacity(members.len());
    for member in members {
        shots.push((member.clone(), ingest::mint(&secret, member, Duration::from_secs(600))?));
    }
    rush::run(&RushPlan {
        duplicate_ratio,
        connections: 32,
        request_timeout: Duration::from_secs(15),
        ..RushPlan::new(pipeline.ingest_urls.clone(), event_id.to_string(), shots)
    })
    .await
}

/// Waits up to `timeout` until the pipeline is done with `accepted` (see
/// `InvariantReport::drained`); then the invariants, the provider's
/// records included. An error when it did not drain in time.
pub async fn drain(
    env: &TestEnv,
    pipeline: &Pipeline,
    event_id: &str,
    accepted: &[Accepted],
    timeout: Duration,
) -> anyhow::Result<InvariantReport> {
    let stores = audit::Stores::connect(&env.admin_database(), &env.redis_admin()).await?;
    let drained = testkit::wait_until(timeout, || async {
        match audit::check(&stores, event_id, accepted, None).await {
            Ok(report) => report.drained(accepted.len()),
            Err(_) => false,
        }
    })
    .await;
    let report = audit::check(&stores, event_id, accepted, Some(&pipeline.provider_url)).await?;
    anyhow::ensure!(drained, "the pipeline did not drain in {timeout:?}: {:?}", report.tally);
    Ok(report)
}

/// The operator's settings on the slice: its topics, database, member
/// schema and Redis, as the stores' administrator.
pub fn operator_settings(env: &TestEnv) -> CliSettings {
    CliSettings {
        kafka: env.kafka_admin(),
        registry: env.registry.clone(),
        database: env.admin_database(),
        replica: env.replica.clone(),
        member_primary: env.member_primary.clone(),
        redis: env.redis_admin(),
        ..Default::default()
    }
}

/// An ingest on the slice's stores, API and ops on port 0.
pub fn ingest_settings(env: &TestEnv) -> ingest::Settings {
    ingest::Settings {
        http: HttpSettings::on_port(0),
        ops: HttpSettings::on_port(0),
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        redis: env.redis.clone(),
        database: env.database.clone(),
        ..Default::default()
    }
}

/// A stock stage on the slice's stores, ops on port 0.
pub fn stock_settings(env: &TestEnv) -> stock_processor::Settings {
    stock_processor::Settings {
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        redis: env.redis.clone(),
        database: env.database.clone(),
        replica: env.replica.clone(),
        http: HttpSettings::on_port(0),
        ..Default::default()
    }
}

/// A recorder on the slice's stores, ops on port 0.
pub fn recorder_settings(env: &TestEnv) -> recorder::Settings {
    recorder::Settings {
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        database: env.database.clone(),
        http: HttpSettings::on_port(0),
        ..Default::default()
    }
}
