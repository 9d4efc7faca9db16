//! Building and running the sender: its handler, run by platform's
//! consumer service (the loop of group `dispatch`, the ops server, one
//! shutdown), and beside it the outbox relay and the retrier of parked gifts.

use std::sync::Arc;
use std::time::Duration;

use platform::kafka::{Delivery, EventProducer, Order};
use platform::ops::Health;
use platform::service::{ConsumerService, ServiceError, Subscription};
use platform::settings::SettingsError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::entries::{EntryWitness, RecorderProgress};
use crate::handler::DispatchHandler;
use crate::outbox::Relay;
use crate::parked::ParkedRetrier;
use crate::provider::{ClientBuildError, ProviderClient};
use crate::settings::Settings;
use crate::settle::Settler;
use crate::store::Store;

/// The consumer group name (prefixed by `KafkaSettings::group`).
pub const GROUP: &str = schemas::topology::group::DISPATCH;

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
    Service(#[from] ServiceError),
    #[error(transparent)]
    Provider(#[from] ClientBuildError),
}

pub struct Application {
    service: ConsumerService<DispatchHandler>,
    /// Publishes what the dispatch transactions wrote to the outbox.
    relay: Relay,
    /// Settles the parked gifts on their own schedule.
    parked: ParkedRetrier,
    /// Cancelled on shutdown: the dispatcher's backoffs end early and an
    /// unfinished gift is left for the replay.
    dispatch_stop: CancellationToken,
}

impl Application {
    /// Connects everything, joins the group and binds the ops port.
    /// The topics must exist (auto-create is off).
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        crate::events::describe_metrics();
        // Its own role, user and principal (least privilege); never the owner's.
        let settings = settings.with_local_credentials();
        // Install the metrics recorder before the first metric.
        let _ = platform::metrics::handle();
        let pool = platform::db::pool(&settings.database)?;
        let replica = platform::member_db::replica_pool(&settings.replica)?;
        // Services never register a schema: one missing stops the service here.
        let codec = settings.registry.required_codec(&settings.kafka.topics()).await?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let producer = EventProducer::new(&settings.kafka, codec, &format!("sender-relay-{instance}"))?;
        let provider = ProviderClient::new(&settings.provider)?;
        let group = settings.kafka.group(GROUP);
        let health = Health::new()
            .with_postgres(pool.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone());

        let witness = EntryWitness::new(
            pool.clone(),
            RecorderProgress::new(&settings.kafka),
            Duration::from_millis(settings.dispatch.entry_wait_ms),
            Duration::from_millis(settings.dispatch.entry_deadline_ms),
        );
        let wake = Arc::new(Notify::new());
        let relay = Relay::new(pool.clone(), producer.clone(), settings.relay.clone(), wake.clone());
        let dispatch_stop = CancellationToken::new();
        let store = Arc::new(Store::new(pool, replica, settings.gift.clone()));
        let dispatcher = Arc::new(Dispatcher::new(provider, &settings.provider, dispatch_stop.clone()));
        let codec = producer.codec().clone();
        let settler = Arc::new(Settler::new(producer, store, dispatcher, wake));
        let parked = ParkedRetrier::new(settler.clone(), settings.parked.clone(), settings.provider.worst_gift());
        let handler = DispatchHandler::new(
            group.clone(),
            codec,
            settler,
            settings.provider.concurrency,
            settings.parked.backoff(),
            witness,
        );

        // Batches bounded so the worst case ends well inside max.poll.interval.ms (validated above).
        let consumer_kafka = settings.consumer_kafka();
        let batch_max_records = consumer_kafka.batch_max_records;
        let subscription = Subscription {
            kafka: consumer_kafka,
            group_name: GROUP,
            delivery: Delivery::AtLeastOnce,
            order: Order::Arrival,
        };
        let service = ConsumerService::build(subscription, handler, &settings.http, health).await?;
        tracing::info!(
            %group,
            ops_port = service.ops_port(),
            provider = %settings.provider.base_url,
            batch_max_records,
            worst_batch_s = settings.worst_batch().as_secs(),
            max_poll_interval_s = settings.kafka.max_poll_interval_ms / 1_000,
            "sender built"
        );
        Ok(Self { service, relay, parked, dispatch_stop })
    }

    pub fn ops_port(&self) -> u16 {
        self.service.ops_port()
    }

    /// Runs until `shutdown` is cancelled: the batch in work is finished or
    /// abandoned uncommitted (drain deadline), then the relay makes a last
    /// pass. A consumer loop that cannot go on is rebuilt
    /// (`platform::service`); the relay runs throughout.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Self { service, relay, parked, dispatch_stop } = self;
        let relay_stop = CancellationToken::new();
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
        // Stopped with the dispatcher: a try cut short leaves its gift parked.
        let parked_task = tokio::spawn(parked.run(dispatch_stop.clone()));
        let forward = tokio::spawn({
            let (shutdown, dispatch_stop) = (shutdown.clone(), dispatch_stop.clone());
            async move {
                shutdown.cancelled().await;
                dispatch_stop.cancel();
            }
        });

        let result = service.run(shutdown).await;
        dispatch_stop.cancel();
        forward.abort();
        if let Err(error) = parked_task.await {
            tracing::error!(%error, "the parked-gift retrier task failed");
        }
        relay_stop.cancel();
        if let Err(error) = relay_task.await {
            tracing::error!(%error, "the outbox relay task failed");
        }
        Ok(result?)
    }
}
