//! Building and running the stage: the consumer loop of group `stock` and the
//! ops server, stopped by one cancellation token.

use std::sync::Arc;
use std::time::Duration;

use platform::kafka::{ConsumerError, ConsumerLoop, Delivery};
use platform::ops::Health;
use platform::settings::SettingsError;
use schemas::CodecError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handler::StockHandler;
use crate::marks::MarkReader;
use crate::rebuild::Rebuilder;
use crate::settings::Settings;
use crate::store::{StockStore, StoreError};

/// Pause before rebuilding a consumer loop that could not go on.
const REBUILD_PAUSE: Duration = Duration::from_secs(1);

/// Why the stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("failed to build the registry codec: {0}")]
    Codec(#[from] CodecError),
    #[error("failed to connect to redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("failed to load the stock scripts: {0}")]
    Scripts(#[from] StoreError),
    #[error("failed to create a kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("failed to start the consumer loop: {0}")]
    Consumer(#[from] ConsumerError),
    #[error("ops listener: {0}")]
    Bind(#[from] platform::settings::BindError),
    #[error("the ops server failed: {0}")]
    Ops(std::io::Error),
}

/// The stock processor, built and ready to run.
pub struct Application {
    settings: Settings,
    handler: Arc<StockHandler>,
    consumer: Option<ConsumerLoop>,
    ops_listener: TcpListener,
    ops_port: u16,
    health: Health,
    /// Checks every event against the log after a Redis failover.
    failover: crate::failover::FailoverCheck,
}

impl Application {
    /// Connects to Redis (scripts loaded), the registry and Kafka (transactional
    /// producer initialised, group joined), and binds the ops listener.
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        let codec = settings.registry.codec()?;
        let conn = platform::redis::connect(&settings.redis).await?;
        let store = StockStore::new(conn.clone());
        store.load().await?;
        let health = Health::new()
            .with_redis(conn.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone());
        let marks = MarkReader::new(&settings.kafka, &settings.group())?;
        let rebuilder = Rebuilder::new(&settings.kafka, &settings.group(), codec.clone(), conn.clone())?;
        let failover = crate::failover::FailoverCheck::new(&settings.kafka, &settings.group(), codec.clone(), conn.clone())?;
        let handler = Arc::new(
            StockHandler::new(store, codec, settings.kafka.topics(), settings.group()).with_stale_guard(marks, rebuilder),
        );
        let consumer = consumer_loop(&settings).await?;

        let (ops_listener, ops_port) = settings.http.bind().await?;
        tracing::info!(
            group = %settings.group(),
            transactional_id = %settings.transactional_id(),
            ops_port,
            "stock processor built"
        );
        Ok(Self { settings, handler, consumer: Some(consumer), ops_listener, ops_port, health, failover })
    }

    /// The port `/healthz` and `/metrics` are served on (useful with port 0).
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    pub fn transactional_id(&self) -> String {
        self.settings.transactional_id()
    }

    /// Consumes until `shutdown` is cancelled; the batch in work is committed
    /// first. A loop that cannot go on (fenced or failed producer) is rebuilt.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Self { settings, handler, mut consumer, ops_listener, health, failover, .. } = self;
        let ops = tokio::spawn(platform::ops::serve(ops_listener, health, shutdown.clone()));
        let failover = tokio::spawn(failover.run(shutdown.clone()));

        while !shutdown.is_cancelled() {
            let current = match consumer.take() {
                Some(current) => current,
                None => match consumer_loop(&settings).await {
                    Ok(rebuilt) => rebuilt,
                    Err(error) => {
                        tracing::error!(%error, "rebuilding the consumer loop failed");
                        pause(&shutdown).await;
                        continue;
                    }
                },
            };
            match current.run(handler.as_ref(), shutdown.clone()).await {
                Ok(()) => break,
                Err(error) => {
                    // Fenced or fatally failed producer: its transaction was
                    // aborted, nothing of the batch was committed; a new loop
                    // (new producer epoch) resumes from the committed offsets.
                    metrics::counter!("firstcome_stock_loop_rebuilds_total").increment(1);
                    tracing::error!(%error, "consumer loop stopped; rebuilding");
                    pause(&shutdown).await;
                }
            }
        }

        failover.abort();
        match ops.await {
            Ok(result) => result.map_err(Error::Ops),
            Err(error) => {
                tracing::error!(%error, "ops server task failed");
                Ok(())
            }
        }
    }
}

/// A transactional loop on the survey and release topics. Creating it blocks
/// (the producer's `init_transactions`), so it runs off the async workers.
async fn consumer_loop(settings: &Settings) -> Result<ConsumerLoop, Error> {
    let kafka = settings.kafka.clone();
    let group = settings.group();
    let transactional_id = settings.transactional_id();
    let built = tokio::task::spawn_blocking(move || {
        let topics = kafka.topics();
        ConsumerLoop::new(
            &kafka,
            &group,
            &[topics.survey_submitted.as_str(), topics.stock_released.as_str()],
            Delivery::Transactional { transactional_id },
        )
    })
    .await
    .map_err(|error| ConsumerError::Fatal(format!("consumer setup panicked: {error}")))?;
    Ok(built?)
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(REBUILD_PAUSE) => {}
    }
}
