//! Building and running the service: the pool (migrated if asked), the
//! codec, the consumer loop of group `recording`, and the ops server.

use deadpool_postgres::Pool;
use platform::kafka::{ConsumerError, ConsumerLoop, Delivery};
use platform::ops::Health;
use platform::settings::SettingsError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::handler::Recorder;
use crate::settings::Settings;
use crate::store::Store;
use crate::GROUP;

/// Why the recorder could not start, or stopped.
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
    #[error("consumer loop: {0}")]
    Consumer(#[from] ConsumerError),
    #[error("ops listener: {0}")]
    Bind(#[from] platform::settings::BindError),
}

/// A built recorder, ready to run.
pub struct Application {
    consumer: ConsumerLoop,
    recorder: Recorder,
    ops_listener: TcpListener,
    ops_port: u16,
    health: Health,
    pool: Pool,
    group: String,
}

impl Application {
    /// Connects everything and joins the group. Topics must exist (auto-create
    /// is off; `firstcome topics create` or the tests make them).
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        settings.validate()?;
        let pool = platform::db::pool(&settings.database)?;
        if settings.database.migrate_on_start {
            platform::db::migrate(&pool).await?;
        }
        let codec = settings.registry.codec()?;
        let group = settings.kafka.group(GROUP);
        let recorder = Recorder::new(Store::live(pool.clone()), codec, settings.kafka.topics(), group.clone());
        let consumer = ConsumerLoop::new(&settings.kafka, &group, &recorder.topics(), Delivery::AtLeastOnce)?;

        let health = Health::new()
            .with_postgres(pool.clone())
            .with_kafka(&settings.kafka)?
            .with_registry(settings.registry.url.clone());
        let (ops_listener, ops_port) = settings.http.bind().await?;
        Ok(Self { consumer, recorder, ops_listener, ops_port, health, pool, group })
    }

    /// The port `/healthz` and `/metrics` are served on.
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// The consumer group id (with the topic prefix).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The database pool the projection is written with.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Consumes until `shutdown` is cancelled; the batch in work is committed
    /// (database, then offsets) before it returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Self { consumer, recorder, ops_listener, health, group, .. } = self;
        tracing::info!(%group, ops_port = self.ops_port, "recorder running");

        // The ops server outlives nothing: it stops with the consumer, whatever ended it.
        let ops_shutdown = shutdown.child_token();
        let ops = tokio::spawn(platform::ops::serve(ops_listener, health, ops_shutdown.clone()));

        let result = consumer.run(&recorder, shutdown).await;
        ops_shutdown.cancel();
        match ops.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "ops server failed"),
            Err(error) => tracing::error!(%error, "ops server task panicked"),
        }
        if let Err(error) = &result {
            tracing::error!(%group, %error, "consumer loop stopped with an error");
        }
        result.map_err(Error::from)
    }
}
