//! Building and running the sender: the consumer loop with its handler, the
//! outbox relay and the ops server, stopped together.

use std::sync::Arc;

use deadpool_postgres::Pool;
use platform::kafka::{ConsumerError, ConsumerLoop, Delivery, EventProducer};
use platform::ops::{self, Health};
use platform::settings::SettingsError;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::handler::DispatchHandler;
use crate::outbox::Relay;
use crate::provider::{ClientBuildError, ProviderClient};
use crate::settings::Settings;
use crate::store::Store;

/// The consumer group name (prefixed by `KafkaSettings::group`).
pub const GROUP: &str = "dispatch";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error(transparent)]
    Codec(#[from] schemas::CodecError),
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    #[error(transparent)]
    Provider(#[from] ClientBuildError),
    #[error("ops port: {0}")]
    Bind(#[from] platform::settings::BindError),
}

pub struct Application {
    settings: Settings,
    pool: Pool,
    replica: Pool,
    producer: EventProducer,
    provider: ProviderClient,
    consumer: ConsumerLoop,
    ops_listener: TcpListener,
    ops_port: u16,
    health: Health,
}

impl Application {
    /// Connects everything and binds the ops port; consumes nothing yet.
    /// The topics must exist (auto-create is off).
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        // Install the metrics recorder before the first metric.
        let _ = platform::metrics::handle();
        let pool = platform::db::pool(&settings.database)?;
        if settings.database.migrate_on_start {
            platform::db::migrate(&pool).await?;
        }
        let replica = platform::member_db::replica_pool(&settings.replica)?;
        let codec = settings.registry.codec()?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let producer = EventProducer::new(&settings.kafka, codec, &format!("sender-relay-{instance}"))?;
        let provider = ProviderClient::new(&settings.provider)?;
        let group = settings.kafka.group(GROUP);
        let topics = settings.kafka.topics();
        // Batches bounded so the worst case ends well inside max.poll.interval.ms (validated above).
        let consumer_kafka = settings.consumer_kafka();
        let consumer = ConsumerLoop::new(&consumer_kafka, &group, &[topics.stock_decided.as_str()], Delivery::AtLeastOnce)?;
        let health = Health::new()
            .with_postgres(pool.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone());
        let (ops_listener, ops_port) = settings.http.bind().await?;
        tracing::info!(
            %group,
            ops_port,
            provider = %settings.provider.base_url,
            batch_max_records = consumer_kafka.batch_max_records,
            worst_batch_s = settings.worst_batch().as_secs(),
            max_poll_interval_s = settings.kafka.max_poll_interval_ms / 1_000,
            "sender built"
        );
        Ok(Self { settings, pool, replica, producer, provider, consumer, ops_listener, ops_port, health })
    }

    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// Runs until `shutdown` is cancelled (or the consumer loop fails):
    /// the batch in work is finished or abandoned uncommitted, then the
    /// relay makes a last pass, then the ops server stops.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let stopping = shutdown.child_token();
        let relay_stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());

        let ops_task = tokio::spawn(ops::serve(self.ops_listener, self.health, stopping.clone()));
        let relay = Relay::new(self.pool.clone(), self.producer.clone(), self.settings.relay.clone(), wake.clone());
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));

        let store = Arc::new(Store::new(self.pool.clone(), self.replica.clone(), self.settings.gift.clone()));
        let dispatcher = Arc::new(Dispatcher::new(self.provider, &self.settings.provider, stopping.clone()));
        let handler = DispatchHandler::new(
            self.settings.kafka.group(GROUP),
            self.producer,
            store,
            dispatcher,
            self.settings.provider.concurrency,
            wake,
        );
        let result = self.consumer.run(&handler, stopping.clone()).await;
        if let Err(error) = &result {
            tracing::error!(%error, "the consumer loop failed; stopping");
        }
        stopping.cancel();
        relay_stop.cancel();
        if let Err(error) = relay_task.await {
            tracing::error!(%error, "the outbox relay task failed");
        }
        match ops_task.await {
            Ok(Err(error)) => tracing::error!(%error, "the ops server failed"),
            Err(error) => tracing::error!(%error, "the ops server task failed"),
            Ok(Ok(())) => {}
        }
        result.map_err(Error::from)
    }
}
