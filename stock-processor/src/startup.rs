//! Building and running the stage: its settings, Redis scripts and stale
//! guard, and its handler, run by platform's consumer service (the loop of
//! group `stock`, transactional, with the ops server and one shutdown).

use platform::kafka::{Delivery, Order};
use platform::ops::Health;
use platform::service::{ConsumerService, ServiceError, Subscription};
use platform::settings::SettingsError;
use schemas::CodecError;
use tokio_util::sync::CancellationToken;

use crate::handler::StockHandler;
use crate::marks::MarkReader;
use crate::rebuild::Rebuilder;
use crate::restore::{RestoreError, Restorer};
use crate::settings::Settings;
use crate::store::{StockStore, StoreError};

/// Why the stage could not start, or its ops server failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("failed to build the registry codec: {0}")]
    Codec(#[from] CodecError),
    #[error("failed to connect to redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    EvictionPolicy(#[from] platform::redis::EvictionPolicyError),
    #[error("failed to load the stock scripts: {0}")]
    Scripts(#[from] StoreError),
    #[error("failed to set up the restore of lost events: {0}")]
    Restore(#[from] RestoreError),
    #[error("failed to create a kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// The stock processor, built and ready to run.
pub struct Application {
    settings: Settings,
    service: ConsumerService<StockHandler>,
    /// Checks every event against the log after a Redis failover.
    failover: crate::failover::FailoverCheck,
}

impl Application {
    /// Connects to Redis (refused unless its `maxmemory-policy` is
    /// `noeviction`; scripts loaded), the registry and Kafka (transactional
    /// producer initialised, group joined), and binds the ops listener.
    /// PostgreSQL and the member replica are connected to on first use (a
    /// lost event's restore), so neither is needed to start.
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        crate::events::describe_metrics();
        // Its own user and principal (least privilege).
        let settings = settings.with_local_credentials();
        // Services never register a schema: one missing stops the service here.
        let codec = settings.registry.required_codec(&settings.kafka.topics()).await?;
        let conn = platform::redis::connect(&settings.redis).await?;
        // The stock state must outlive memory pressure: refuse a Redis that evicts.
        conn.check_eviction_policy().await?;
        let store = StockStore::new(conn.clone());
        store.load().await?;
        let health = Health::new()
            .with_redis(conn.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone());
        let marks = MarkReader::new(&settings.kafka, &settings.group())?;
        let rebuilder = Rebuilder::new(&settings.kafka, &settings.group(), codec.clone(), conn.clone())?;
        let failover =
            crate::failover::FailoverCheck::new(&settings.kafka, &settings.group(), codec.clone(), conn.clone())?;
        // Lazy pools: PostgreSQL and the replica are needed only when Redis loses an event.
        let restorer = Restorer::connect(&settings.database, &settings.replica)?;
        let handler = StockHandler::new(store, codec, settings.kafka.topics(), settings.group())
            .with_stale_guard(marks, rebuilder)
            .with_restorer(restorer)
            .with_fence(settings.fence());
        let subscription = Subscription {
            kafka: settings.consumer_kafka(),
            group_name: crate::GROUP,
            delivery: Delivery::Transactional { transactional_id: settings.transactional_id() },
            // First come, first served across partitions too (a backlog).
            order: Order::Timestamp { max_idle: settings.order_max_idle() },
        };
        let service = ConsumerService::build(subscription, handler, &settings.http, health).await?;
        tracing::info!(
            group = %settings.group(),
            transactional_id = %settings.transactional_id(),
            group_instance_id = ?settings.consumer_kafka().group_instance_id,
            replica_acks = settings.replica_acks,
            ops_port = service.ops_port(),
            "stock processor built"
        );
        Ok(Self { settings, service, failover })
    }

    /// The port `/healthz` and `/metrics` are served on (useful with port 0).
    pub fn ops_port(&self) -> u16 {
        self.service.ops_port()
    }

    pub fn transactional_id(&self) -> String {
        self.settings.transactional_id()
    }

    /// Consumes until `shutdown` is cancelled; the batch in work is committed
    /// first (or abandoned uncommitted past the drain deadline). A loop that
    /// cannot go on (fenced or failed producer) is rebuilt
    /// (`platform::service`).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let failover = tokio::spawn(self.failover.run(shutdown.clone()));
        let result = self.service.run(shutdown).await;
        failover.abort();
        Ok(result?)
    }
}
