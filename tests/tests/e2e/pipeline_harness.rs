//! Starts the whole pipeline in this process (every service's library
//! `Application`, on port 0) against one test's slice of the real stack.

use std::time::Duration;

use platform::settings::HttpSettings;
use platform::CancellationToken;
use tokio::task::JoinHandle;

use audit::{Accepted, InvariantReport};
use firstcome_cli::commands::event::{self, NewEvent, DEFAULT_QUESTIONS};
use firstcome_cli::commands::members::{self, SeedPlan};
use firstcome_lab::rush::{self, RushPlan, RushReport};

use crate::helpers::{wait_until, CliEnv, TestEnv};

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
    /// Each service's ops port (`/metrics`, `/healthz`), by service name
    /// (read by the metrics test, a binary of its own).
    #[allow(dead_code)]
    pub ops_ports: Vec<(&'static str, u16)>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

fn spawn_named<E: std::fmt::Display + Send + 'static>(
    name: &'static str,
    future: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = future.await {
            panic!("{name} stopped with an error: {error}");
        }
    })
}

impl Pipeline {
    pub async fn start(env: &TestEnv, topology: Topology) -> Self {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut ops_ports = Vec::new();

        let provider = provider_sim::Application::build(provider_sim::Settings::ephemeral(topology.faults.clone(), 7))
            .await
            .expect("provider simulator");
        let provider_url = provider.base_url();
        tasks.push(spawn_named("provider-sim", provider.run_until_stopped(shutdown.clone())));

        for _ in 0..topology.instances_per_group {
            let stock = stock_processor::Application::build(stock_processor::Settings {
                kafka: env.kafka.clone(),
                registry: env.registry.clone(),
                redis: env.redis.clone(),
                database: env.database.clone(),
                replica: env.replica.clone(),
                http: HttpSettings::on_port(0),
                ..Default::default()
            })
            .await
            .expect("stock-processor");
            ops_ports.push(("stock-processor", stock.ops_port()));
            tasks.push(spawn_named("stock-processor", stock.run_until_stopped(shutdown.clone())));

            let recorder = recorder::Application::build(recorder::Settings {
                kafka: env.kafka.clone(),
                registry: env.registry.clone(),
                database: env.database.clone(),
                http: HttpSettings::on_port(0),
                ..Default::default()
            })
            .await
            .expect("recorder");
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
            let sender = sender::Application::build(sender_settings).await.expect("sender");
            ops_ports.push(("sender", sender.ops_port()));
            tasks.push(spawn_named("sender", sender.run_until_stopped(shutdown.clone())));
        }

        let mut ingest_urls = Vec::new();
        for _ in 0..topology.ingest_instances {
            let ingest = ingest::Application::build(ingest_settings(env)).await.expect("ingest");
            ingest_urls.push(ingest.base_url());
            ops_ports.push(("ingest", ingest.ops_port()));
            tasks.push(spawn_named("ingest", ingest.run_until_stopped(shutdown.clone())));
        }
        Self { ingest_urls, provider_url, ops_ports, shutdown, tasks }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

/// Members of one test: `eligible` bought the product, `ineligible` did not.
pub struct Crowd {
    pub product: String,
    pub eligible: Vec<String>,
    pub ineligible: Vec<String>,
}

/// Seeds `eligible` + `ineligible` members with a product of their own.
pub async fn seed_crowd(env: &TestEnv, eligible: usize, ineligible: usize) -> Crowd {
    let tag = &env.prefix[2..10];
    let product = format!("product-{tag}");
    let buyers = members::seed(
        &env.member_primary,
        &env.replica,
        &SeedPlan { count: eligible, id_prefix: format!("e{tag}-"), product_id: product.clone(), eligible_ratio: 1.0 },
    )
    .await
    .expect("seed eligible");
    let others = members::seed(
        &env.member_primary,
        &env.replica,
        &SeedPlan {
            count: ineligible,
            id_prefix: format!("i{tag}-"),
            product_id: product.clone(),
            eligible_ratio: 0.0,
        },
    )
    .await
    .expect("seed ineligible");
    Crowd { product, eligible: buyers.members, ineligible: others.members }
}

/// An ingest on the test's stores, API and ops on port 0 (the harness's
/// instances and the browser tests' own).
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

/// Creates an open event; returns its id.
pub async fn open_event(env: &TestEnv, crowd: &Crowd, total: i32, safety: i32) -> String {
    let now = chrono::Utc::now();
    let new = NewEvent {
        event_id: format!("ev-{}", uuid::Uuid::new_v4()),
        name: "test event".into(),
        product_id: crowd.product.clone(),
        total_stock: total,
        safety_stock: safety,
        open_at: now - chrono::Duration::minutes(1),
        close_at: now + chrono::Duration::hours(1),
        questions: DEFAULT_QUESTIONS.map(String::from).to_vec(),
    };
    event::create(&env.cli(), &new).await.expect("create event");
    new.event_id
}

/// Each member submits once (the rush generator, loopback only).
pub async fn submit(pipeline: &Pipeline, event_id: &str, members: &[String], duplicate_ratio: f64) -> RushReport {
    let secret = ingest::Settings::default().auth.token_secret;
    let shots = members
        .iter()
        .map(|m| (m.clone(), ingest::mint(&secret, m, Duration::from_secs(600)).expect("token")))
        .collect();
    rush::run(&RushPlan {
        duplicate_ratio,
        connections: 32,
        request_timeout: Duration::from_secs(15),
        ..RushPlan::new(pipeline.ingest_urls.clone(), event_id.to_string(), shots)
    })
    .await
    .expect("rush ran")
}

/// Waits until the pipeline is done with `accepted` (see
/// `InvariantReport::drained`); returns the final invariant report.
pub async fn drain(env: &TestEnv, pipeline: &Pipeline, event_id: &str, accepted: &[Accepted]) -> InvariantReport {
    let stores = audit::Stores::connect(&env.admin_database(), &env.redis_admin()).await.expect("stores");
    let drained = wait_until(Duration::from_secs(90), || async {
        match audit::check(&stores, event_id, accepted, None).await {
            Ok(report) => report.drained(accepted.len()),
            Err(_) => false,
        }
    })
    .await;
    let report =
        audit::check(&stores, event_id, accepted, Some(&pipeline.provider_url)).await.expect("invariants checked");
    assert!(drained, "pipeline did not drain in 90 s: {:?}", report.tally);
    report
}
