//! A consumer service as one piece: the ops listener (`/healthz`,
//! `/metrics`), the consumer loop of one group running the service's
//! handler, shutdown passed in, and one policy after a fatal loop error.
//!
//! stock-processor, recorder and sender each build their handler and their
//! health probes, then hand them to [`ConsumerService::build`]; what else
//! they run (the sender's outbox relay) they run beside
//! [`ConsumerService::run`].
//!
//! The group's input topics come from the topology table
//! ([`schemas::topology::inputs_in`]), the one place that says which group
//! consumes which topic.
//!
//! After a fatal loop error (a fenced or fatally failed transactional
//! producer, a Kafka client error), every service does the same: the loop
//! is closed, nothing of the batch in work was committed, and after
//! [`REBUILD_PAUSE`] a new loop (a new consumer and producer; for the
//! transactional stage a new producer epoch) resumes from the committed
//! offsets. Each rebuild is logged and counted
//! (`firstcome_consumer_loop_rebuilds_total{group}`). The service ends when
//! `shutdown` is cancelled, or with [`ServiceError::Stopped`] when the
//! broker refused an output for good (a new loop would be refused again:
//! an operator must act, see `ConsumerError::Refused`).

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::kafka::consumer::events::{LoopFailed, LoopRebuildFailed};
use crate::kafka::{BatchHandler, ConsumerError, ConsumerLoop, Delivery, Order};
use crate::ops::Health;
use crate::settings::{BindError, HttpSettings, KafkaSettings};

/// Pause before a consumer loop that could not go on is rebuilt.
pub const REBUILD_PAUSE: Duration = Duration::from_secs(1);

/// Why a consumer service could not start, or its ops server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("consumer group {0} reads no topic in schemas::topology")]
    NoInputs(String),
    #[error("failed to start the consumer loop of group {group}")]
    Consumer {
        group: String,
        #[source]
        source: ConsumerError,
    },
    #[error("failed to bind the ops listener")]
    Bind(#[from] BindError),
    #[error("the ops server failed")]
    Ops(#[source] std::io::Error),
    /// The consumer loop stopped on an error no new loop gets past (the
    /// broker refused an output for good): the service stops with it.
    #[error("the consumer loop of group {group} stopped")]
    Stopped {
        group: String,
        #[source]
        source: ConsumerError,
    },
}

/// What a service consumes and how it commits.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The consumer's Kafka settings (a service may tighten them, e.g. the
    /// sender's smaller batches).
    pub kafka: KafkaSettings,
    /// The group's name without the deployment prefix (`schemas::topology::group`).
    pub group_name: &'static str,
    pub delivery: Delivery,
    /// The order the handler sees records in across partitions.
    pub order: Order,
}

impl Subscription {
    /// The group id, behind the deployment's topic prefix.
    pub fn group(&self) -> String {
        self.kafka.group(self.group_name)
    }

    /// The group's input topics, from the topology table, with the prefix.
    pub fn topics(&self) -> Vec<String> {
        schemas::topology::inputs_in(&self.kafka.topics(), self.group_name)
    }

    /// Joins the group. Creating a transactional producer blocks
    /// (`init_transactions`), so it runs off the async workers.
    async fn join(&self) -> Result<ConsumerLoop, ServiceError> {
        let group = self.group();
        let topics = self.topics();
        if topics.is_empty() {
            return Err(ServiceError::NoInputs(group));
        }
        let (kafka, delivery, order, name) = (self.kafka.clone(), self.delivery.clone(), self.order, group.clone());
        let built = tokio::task::spawn_blocking(move || {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            ConsumerLoop::new(&kafka, &name, &topics, delivery, order)
        })
        .await
        .unwrap_or_else(|panic| Err(ConsumerError::Fatal(format!("consumer setup panicked: {panic}"))));
        built.map_err(|source| ServiceError::Consumer { group, source })
    }
}

/// A consumer service, built and ready to run.
pub struct ConsumerService<H> {
    subscription: Subscription,
    /// The service's logic for one batch; it outlives every rebuilt loop.
    handler: H,
    /// The first loop, joined at build so a service that cannot reach Kafka
    /// fails to start; later loops are rebuilt by [`ConsumerService::run`].
    consumer: Option<ConsumerLoop>,
    /// Serves `/healthz` (the service's own probes) and `/metrics`.
    ops_listener: TcpListener,
    ops_port: u16,
    health: Health,
}

impl<H: BatchHandler> ConsumerService<H> {
    /// Joins the group on its input topics and binds the ops listener
    /// (`http` with port 0 picks a free port: tests read [`Self::ops_port`]).
    pub async fn build(
        subscription: Subscription,
        handler: H,
        http: &HttpSettings,
        health: Health,
    ) -> Result<Self, ServiceError> {
        let consumer = subscription.join().await?;
        let (ops_listener, ops_port) = http.bind().await?;
        // Its group's series at zero before the first batch (`/metrics` shows them at once).
        crate::metrics::describe(crate::metrics::PRODUCER);
        crate::metrics::consumer_group(&subscription.group());
        Ok(Self { subscription, handler, consumer: Some(consumer), ops_listener, ops_port, health })
    }

    /// The port `/healthz` and `/metrics` are served on.
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// The consumer group id (with the deployment prefix).
    pub fn group(&self) -> String {
        self.subscription.group()
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Consumes until `shutdown` is cancelled; the batch in work is
    /// finished or abandoned within the drain deadline first. A loop that
    /// cannot go on is rebuilt after [`REBUILD_PAUSE`] (see the module
    /// doc). The ops server stops with the consumer.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let Self { subscription, handler, mut consumer, ops_listener, health, .. } = self;
        let group = subscription.group();
        let ops_shutdown = shutdown.child_token();
        let ops = tokio::spawn(crate::ops::serve(ops_listener, health, ops_shutdown.clone()));

        let mut stopped = None;
        while !shutdown.is_cancelled() {
            let current = match consumer.take() {
                Some(current) => current,
                None => match subscription.join().await {
                    Ok(rebuilt) => rebuilt,
                    Err(error) => {
                        LoopRebuildFailed { group: &group, error: &error }.emit();
                        pause(&shutdown).await;
                        continue;
                    }
                },
            };
            match current.run(&handler, shutdown.clone()).await {
                Ok(()) => break,
                Err(error) if !error.is_rebuildable() => {
                    tracing::error!(%group, error = %crate::error::ErrorChain(&error), "consumer loop stopped for good");
                    stopped = Some(ServiceError::Stopped { group: group.clone(), source: error });
                    break;
                }
                Err(error) => {
                    // Nothing of the batch in work was committed (a failed
                    // transaction was aborted); the new loop resumes from
                    // the committed offsets.
                    LoopFailed { group: &group, error: &error, pause: REBUILD_PAUSE }.emit();
                    pause(&shutdown).await;
                }
            }
        }

        ops_shutdown.cancel();
        let ops = match ops.await {
            Ok(result) => result.map_err(ServiceError::Ops),
            Err(error) => {
                tracing::error!(%group, %error, "ops server task failed");
                Ok(())
            }
        };
        match stopped {
            Some(error) => Err(error),
            None => ops,
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(REBUILD_PAUSE) => {}
    }
}
