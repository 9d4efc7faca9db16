//! Redis connections with explicit timeouts, directly or through Sentinel.
//!
//! [`connect`] gives a [`Connection`]: a cheap-to-clone, multiplexed,
//! self-reconnecting connection (redis' `ConnectionManager` inside) that
//! implements `redis::aio::ConnectionLike`, so commands, pipelines and
//! `Script::invoke_async` work on it unchanged.
//!
//! With `redis.sentinels` set, the primary of `redis.master_name` is asked
//! from the Sentinels (the redis crate's `sentinel` support, which checks the
//! answer's `ROLE`). A connection error, a timeout or a `READONLY` answer
//! (the node was demoted by a failover) makes the connection ask the
//! Sentinels again and move every clone to the new primary; the failed call
//! returns its error (it may have run: callers keep retries idempotent),
//! except a `READONLY` refusal, which ran nothing and is retried once on the
//! new primary. Lua scripts survive the move: `invoke_async` sends EVALSHA
//! and loads the script on `NOSCRIPT` (a new primary that never saw it).

use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use crate::settings::RedisSettings;

/// Rediscovery is attempted at most this often (a failover takes a second
/// or more; every failing call must not ask the Sentinels).
const REDISCOVER_EVERY: Duration = Duration::from_millis(100);

/// Opens a multiplexed, self-reconnecting connection to the Redis primary
/// (through the Sentinels when configured).
pub async fn connect(settings: &RedisSettings) -> RedisResult<Connection> {
    let sentinel = match settings.sentinel_addresses() {
        addresses if addresses.is_empty() => None,
        addresses => Some(tokio::sync::Mutex::new(sentinel_client(settings, &addresses)?)),
    };
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        sentinel,
        state: SyncMutex::new(None),
        rediscovery: tokio::sync::Mutex::new(Instant::now() - REDISCOVER_EVERY),
    });
    let manager = shared.open().await?;
    *shared.lock() = Some((0, manager.clone()));
    Ok(Connection { shared, generation: 0, current: manager })
}

/// A client for dedicated connections (pub/sub): each connection goes to
/// the primary the Sentinels name at that moment.
pub fn client(settings: &RedisSettings) -> RedisResult<PubSubClient> {
    let addresses = settings.sentinel_addresses();
    let target = if addresses.is_empty() {
        Target::Direct(redis::Client::open(settings.url.as_str())?)
    } else {
        Target::Sentinel(Arc::new(tokio::sync::Mutex::new(sentinel_client(settings, &addresses)?)))
    };
    Ok(PubSubClient { target })
}

fn sentinel_client(settings: &RedisSettings, addresses: &[String]) -> RedisResult<SentinelClient> {
    let urls: Vec<String> = addresses.iter().map(|a| format!("redis://{a}")).collect();
    SentinelClient::build(urls, settings.master_name.clone(), None, SentinelServerType::Master)
}

/// Opens pub/sub connections, following failovers.
#[derive(Clone)]
pub struct PubSubClient {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Direct(redis::Client),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl PubSubClient {
    /// A pub/sub connection to the current primary.
    pub async fn get_async_pubsub(&self) -> RedisResult<PubSub> {
        let client = match &self.target {
            Target::Direct(client) => client.clone(),
            Target::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await?,
        };
        client.get_async_pubsub().await
    }
}

/// A connection to the Redis primary; clones share the underlying
/// connection and move to a new primary together.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    /// The generation of `current`: a clone that sees a newer one in
    /// `shared` switches before its next call.
    generation: u64,
    current: ConnectionManager,
}

struct Shared {
    settings: RedisSettings,
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    state: SyncMutex<Option<(u64, ConnectionManager)>>,
    /// Held while asking the Sentinels; the time of the last attempt.
    rediscovery: tokio::sync::Mutex<Instant>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, ConnectionManager)>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection manager on the primary (asked from the Sentinels).
    async fn open(&self) -> RedisResult<ConnectionManager> {
        let client = match &self.sentinel {
            None => redis::Client::open(self.settings.url.as_str())?,
            Some(sentinel) => sentinel.lock().await.async_get_client().await?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(self.settings.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(self.settings.response_timeout_ms)))
            .set_number_of_retries(2);
        ConnectionManager::new_with_config(client, config).await
    }

    /// Asks the Sentinels for the primary again after generation `seen`
    /// failed; a newer generation (another clone did it) is kept.
    async fn rediscover(&self, seen: u64) {
        if self.sentinel.is_none() {
            return;
        }
        let mut last = self.rediscovery.lock().await;
        if self.lock().as_ref().is_some_and(|(generation, _)| *generation != seen) {
            return;
        }
        let wait = REDISCOVER_EVERY.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *last = Instant::now();
        match self.open().await {
            Ok(manager) => {
                let mut state = self.lock();
                let generation = state.as_ref().map_or(0, |(g, _)| g + 1);
                *state = Some((generation, manager));
                tracing::warn!(generation, master = %self.settings.master_name, "Redis primary rediscovered through Sentinel");
                metrics::counter!("firstcome_redis_rediscoveries_total").increment(1);
            }
            Err(error) => {
                tracing::warn!(%error, master = %self.settings.master_name, "no Redis primary from Sentinel yet");
            }
        }
    }
}

/// Whether `error` may mean the node is no longer (reachable as) the primary.
fn points_elsewhere(error: &RedisError) -> bool {
    is_readonly(error)
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::MasterDown | ServerErrorKind::TryAgain))
}

/// A write refused by a replica (also inside MULTI, which then aborts):
/// nothing ran.
fn is_readonly(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::ExecAbort))
}

impl Connection {
    /// Switches to the newest connection the clones share.
    fn follow(&mut self) {
        if let Some((generation, manager)) = self.shared.lock().as_ref() {
            if *generation != self.generation {
                self.generation = *generation;
                self.current = manager.clone();
            }
        }
    }

    /// Whether this connection finds its primary through Sentinel.
    pub fn through_sentinel(&self) -> bool {
        self.shared.sentinel.is_some()
    }

    async fn after_error(&mut self, error: &RedisError) -> bool {
        if self.shared.sentinel.is_none() || !points_elsewhere(error) {
            return false;
        }
        self.shared.rediscover(self.generation).await;
        let before = self.generation;
        self.follow();
        is_readonly(error) && self.generation != before
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.follow();
            match self.current.req_packed_command(cmd).await {
                Err(error) if self.after_error(&error).await => self.current.req_packed_command(cmd).await,
                result => result,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.follow();
            match self.current.req_packed_commands(pipeline, offset, count).await {
                Err(error) if self.after_error(&error).await => {
                    self.current.req_packed_commands(pipeline, offset, count).await
                }
                result => result,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.current.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readonly_answer_points_elsewhere() {
        let readonly = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        assert!(is_readonly(&readonly) && points_elsewhere(&readonly));
        let type_error = RedisError::from((ErrorKind::UnexpectedReturnType, "no"));
        assert!(!points_elsewhere(&type_error));
    }
}
