//! Building and running the service: the pool (migrated if asked), the
//! codec and the handler of group `recording`, run by platform's consumer
//! service (the loop, the ops server, one shutdown).

use deadpool_postgres::Pool;
use platform::kafka::{Delivery, Order};
use platform::ops::Health;
use platform::service::{ConsumerService, ServiceError, Subscription};
use platform::settings::SettingsError;
use tokio_util::sync::CancellationToken;

use crate::handler::Recorder;
use crate::settings::Settings;
use crate::store::Store;
use crate::GROUP;

/// Why the recorder could not start, or its ops server failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("database: {0}")]
    Database(#[from] platform::db::DbError),
    #[error("schema registry client: {0}")]
    Registry(#[from] schemas::CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A built recorder, ready to run.
pub struct Application {
    service: ConsumerService<Recorder>,
    pool: Pool,
}

impl Application {
    /// Connects everything and joins the group. Topics must exist (auto-create
    /// is off; `firstcome topics create` or the tests make them).
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        crate::internal_events::describe_metrics();
        // Its own role, user and principal (least privilege); never the owner's.
        let settings = settings.with_local_credentials();
        let pool = platform::db::pool(&settings.database)?;
        let codec = settings.registry.codec()?;
        let group = settings.kafka.group(GROUP);
        let recorder = Recorder::new(Store::live(pool.clone()), codec, settings.kafka.topics(), group);
        let health = Health::new()
            .with_postgres(pool.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone());
        let subscription = Subscription {
            kafka: settings.kafka.clone(),
            group_name: GROUP,
            delivery: Delivery::AtLeastOnce,
            order: Order::Arrival,
        };
        let service = ConsumerService::build(subscription, recorder, &settings.http, health).await?;
        Ok(Self { service, pool })
    }

    /// The port `/healthz` and `/metrics` are served on.
    pub fn ops_port(&self) -> u16 {
        self.service.ops_port()
    }

    /// The consumer group id (with the topic prefix).
    pub fn group(&self) -> String {
        self.service.group()
    }

    /// The database pool the projection is written with.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Consumes until `shutdown` is cancelled; the batch in work is committed
    /// (database, then offsets) before it returns, or abandoned uncommitted
    /// past the drain deadline. A loop that cannot go on is rebuilt
    /// (`platform::service`).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        tracing::info!(group = %self.group(), ops_port = self.ops_port(), "recorder running");
        Ok(self.service.run(shutdown).await?)
    }
}
