//! Builds the service from its settings and runs it until shutdown.
//!
//! `build` connects what must work from the start (Redis, refused when its
//! `maxmemory-policy` can evict keys, and its pub/sub subscription; the
//! database when migrating) and binds both listeners (the
//! public API and the internal ops one), so a test can read the ports before
//! `run_until_stopped`. Kafka and the registry are reached lazily: ingest
//! starts while they are down and answers 503.

use axum::Router;
use platform::kafka::EventProducer;
use platform::ops::Health;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admitter;
use crate::dashboard::tally::Tally;
use crate::dashboard::Dashboard;
use crate::holes::HoleSweep;
use crate::ops::{CachedHealth, HEALTH_TTL};
use crate::rate_limit::MemberRateLimit;
use crate::routes::{self, AppState};
use crate::server::ServeLimits;
use crate::settings::Settings;
use crate::state::{EventCache, StateSync};
use crate::waiting_room::WaitingRoom;

/// The Kafka client id of ingest's producer.
const CLIENT_ID: &str = "ingest";

/// Why ingest could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] platform::settings::SettingsError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    EvictionPolicy(#[from] platform::redis::EvictionPolicyError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("schema registry: {0}")]
    Registry(#[from] schemas::CodecError),
    #[error("database: {0}")]
    Database(#[from] platform::db::DbError),
    #[error("http listener: {0}")]
    Bind(#[from] platform::settings::BindError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// A built, not yet running, ingest service.
pub struct Application {
    listener: TcpListener,
    host: String,
    port: u16,
    router: Router,
    ops_listener: TcpListener,
    ops_port: u16,
    ops_router: Router,
    serve_limits: ServeLimits,
    sync: StateSync,
    holes: HoleSweep,
    streams_stop: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        // Its own role, user and principal (least privilege); never the owner's.
        let settings = settings.with_local_credentials();
        let redis = platform::redis::connect(&settings.redis).await?;
        // First-entry marks, eligibility and the event's state must not be evicted.
        redis.check_eviction_policy().await?;
        let cache = EventCache::new(settings.state_refresh());
        let admitter = Admitter::new(settings.resume_after()).with_fence(settings.admission_fence());
        let sync = StateSync::connect(
            cache.clone(),
            admitter.floors(),
            platform::redis::client(&settings.redis)?,
            redis.clone(),
            settings.state_refresh(),
        )
        .await?;
        // Services never register a schema: one missing stops ingest here.
        let codec = settings.registry.required_codec(&settings.kafka.topics()).await?;
        let producer = EventProducer::new(&settings.kafka, codec, CLIENT_ID)?;
        let db = platform::db::pool(&settings.database)?;
        let health = Health::new()
            .with_redis(redis.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone())
            .with_postgres(db.clone());
        let holes = HoleSweep::new(cache.clone(), redis.clone(), producer.clone());
        let state = AppState {
            cache,
            redis,
            admitter,
            producer,
            db,
            auth: Arc::new(settings.auth.verifier()),
            limits: Arc::new(settings.limits.clone()),
            publish_deadline: settings.publish_deadline(),
            resume_after: settings.resume_after(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(settings.limits.max_in_flight)),
            member_rate: Arc::new(MemberRateLimit::new(
                settings.limits.member_requests_per_sec,
                settings.limits.member_burst,
                settings.limits.max_tracked_members,
            )),
            waiting_room: settings.waiting_room.enabled.then(|| WaitingRoom::new(settings.waiting_room.clone())),
            tally: Tally::default(),
            public_facts: Default::default(),
            receipts: Arc::new(settings.receipts.signer(settings.environment)?),
            reports: Default::default(),
        };
        // The dashboard's streams end when the service stops (an open SSE
        // response would hold the graceful shutdown forever).
        let streams_stop = CancellationToken::new();
        let dashboard = Dashboard::new(state.clone(), settings.operator.clone(), &settings.kafka, streams_stop.clone());
        let (listener, port) = settings.http.bind().await?;
        let (ops_listener, ops_port) = settings.ops.bind().await?;
        tracing::info!(address = %settings.http.address(), port, ops_port, "ingest listening");
        Ok(Self {
            listener,
            host: settings.http.host.clone(),
            port,
            router: routes::router(state),
            ops_listener,
            ops_port,
            ops_router: crate::ops::router(CachedHealth::new(health, HEALTH_TTL))
                .merge(crate::dashboard::router(dashboard)),
            streams_stop,
            serve_limits: ServeLimits {
                header_read_timeout: settings.limits.header_read_timeout(),
                max_connections: settings.limits.max_connections,
            },
            sync,
            holes,
        })
    }

    /// The bound ops port (`/healthz`, `/metrics`).
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// The bound port (the real one when the settings asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://host:port`, reachable from this machine.
    pub fn base_url(&self) -> String {
        let host = match self.host.as_str() {
            "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
            other => other,
        };
        format!("http://{host}:{}", self.port)
    }

    /// `http://127.0.0.1:<ops port>`, for operators and tests on this machine.
    pub fn ops_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ops_port)
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests
    /// finish (each is bounded by the publish deadline) and stops the state
    /// sync.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        // A child token: the sync also stops when the server ends on its own.
        let stop = shutdown.child_token();
        let streams_stop = self.streams_stop.clone();
        let ending = stop.clone();
        tokio::spawn(async move {
            ending.cancelled().await;
            streams_stop.cancel();
        });
        let sync = tokio::spawn(self.sync.run(stop.clone()));
        let holes = tokio::spawn(self.holes.run(stop.clone()));
        // The ops listener is internal yet served the same guarded way.
        let ops_limits = ServeLimits { max_connections: 64, ..self.serve_limits };
        let ops = tokio::spawn(crate::server::serve(self.ops_listener, self.ops_router, ops_limits, stop.clone()));
        let served = crate::server::serve(self.listener, self.router, self.serve_limits, stop.clone()).await;
        stop.cancel();
        match ops.await {
            Ok(Err(error)) => tracing::error!(%error, "ops listener failed"),
            Err(error) => tracing::error!(%error, "ops listener task failed"),
            Ok(Ok(())) => {}
        }
        if let Err(error) = sync.await {
            tracing::error!(%error, "event state sync task failed");
        }
        if let Err(error) = holes.await {
            tracing::error!(%error, "hole sweep task failed");
        }
        tracing::info!("ingest stopped");
        Ok(served?)
    }
}
