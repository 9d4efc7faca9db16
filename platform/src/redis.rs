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
//! new primary. Every [`WATCH_EVERY`] the connection also asks the Sentinels
//! whether the primary moved (a failover they ran leaves the old primary
//! writable for seconds; writes that land there are lost, and the stock
//! stage recovers them from the Kafka log). Lua scripts survive the move: `invoke_async` sends EVALSHA
//! and loads the script on `NOSCRIPT` (a new primary that never saw it).
//!
//! [`Connection::check_eviction_policy`]: an event's keys carry a TTL (its
//! closing time), and a server whose `maxmemory-policy` can evict drops such
//! keys under memory pressure (`volatile-lru`, a common managed default,
//! evicts exactly those). Services that keep state in Redis refuse to start
//! on such a server, and `/healthz` reports the policy (`crate::ops`).

pub mod fence;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::sentinel::SentinelNodeConnectionInfo;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, TlsCertificates, Value,
};
use secrecy::ExposeSecret;

use crate::settings::{RedisSettings, TlsMode};

/// Rediscovery is attempted at most this often (a failover takes a second
/// or more; every failing call must not ask the Sentinels).
const REDISCOVER_EVERY: Duration = Duration::from_millis(100);

/// How often a connection asks the Sentinels whether the primary moved. A
/// failover the Sentinels make (`SENTINEL FAILOVER`, or a primary they
/// consider down but that still answers) leaves the old primary accepting
/// writes until the Sentinels reconfigure it, up to ~10 s later; clients
/// that only react to errors would keep writing there, and those writes are
/// lost when it resynchronises. Asking twice a second bounds that window.
const WATCH_EVERY: Duration = Duration::from_millis(500);

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
        moves: tokio::sync::watch::channel(0).0,
        config_refused: AtomicBool::new(false),
    });
    let (manager, address) = shared.open(None).await?;
    *shared.lock() = Some(Current { generation: 0, manager: manager.clone(), address });
    if shared.sentinel.is_some() {
        watch(Arc::downgrade(&shared));
    }
    Ok(Connection { shared, generation: 0, current: manager })
}

/// Follows the Sentinels' view of the primary while any clone of the
/// connection lives.
fn watch(shared: std::sync::Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let Some(shared) = shared.upgrade() else { return };
            shared.follow_sentinels().await;
        }
    });
}

/// A client for dedicated connections (pub/sub): each connection goes to
/// the primary the Sentinels name at that moment.
pub fn client(settings: &RedisSettings) -> RedisResult<PubSubClient> {
    let addresses = settings.sentinel_addresses();
    let target = if addresses.is_empty() {
        Target::Direct(Box::new(direct_client(settings)?))
    } else {
        Target::Sentinel(Arc::new(tokio::sync::Mutex::new(sentinel_client(settings, &addresses)?)))
    };
    Ok(PubSubClient { target })
}

/// The configured URL with the settings' ACL user and password where the URL names none.
fn direct_info(settings: &RedisSettings) -> RedisResult<ConnectionInfo> {
    let info = settings.url.as_str().into_connection_info()?;
    let redis = with_credentials(info.redis_settings().clone(), settings);
    Ok(info.set_redis_settings(redis))
}

/// The client of the configured URL, in TLS when `redis.tls.mode =
/// verify-full` (a `redis://` URL is dialled as `rediss://`), the server's
/// certificate verified against `redis.tls.ca_file` or the system's roots.
fn direct_client(settings: &RedisSettings) -> RedisResult<redis::Client> {
    let info = direct_info(settings)?;
    if settings.tls.mode == TlsMode::Disable {
        return redis::Client::open(info);
    }
    let info = match info.addr().clone() {
        ConnectionAddr::Tcp(host, port) => {
            info.set_addr(ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None })
        }
        ConnectionAddr::TcpTls { insecure: true, .. } => {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "redis.tls.mode = verify-full and a URL asking for #insecure",
            )))
        }
        _ => info,
    };
    // The crate reads the PEM itself (and trusts only it when given one).
    let root_cert = settings.tls.ca_file.as_ref().map(std::fs::read).transpose()?;
    redis::Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert })
}

fn with_credentials(mut redis: RedisConnectionInfo, settings: &RedisSettings) -> RedisConnectionInfo {
    if redis.username().is_none() {
        if let Some(username) = &settings.username {
            redis = redis.set_username(username);
        }
    }
    if redis.password().is_none() {
        if let Some(password) = &settings.password {
            redis = redis.set_password(password.expose_secret());
        }
    }
    redis
}

/// The Sentinels answer without credentials (they hold no data); the data
/// nodes they name are reached as the settings' ACL user.
fn sentinel_client(settings: &RedisSettings, addresses: &[String]) -> RedisResult<SentinelClient> {
    let tls = settings.tls.mode == TlsMode::VerifyFull;
    if tls && settings.tls.ca_file.is_some() {
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "redis.tls.ca_file with Sentinels: only the system's roots are supported there",
        )));
    }
    let scheme = if tls { "rediss" } else { "redis" };
    let urls: Vec<String> = addresses.iter().map(|a| format!("{scheme}://{a}")).collect();
    let mut node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(with_credentials(RedisConnectionInfo::default(), settings));
    if tls {
        node = node.set_tls_mode(redis::TlsMode::Secure);
    }
    SentinelClient::build(urls, settings.master_name.clone(), Some(node), SentinelServerType::Master)
}

/// Opens pub/sub connections, following failovers.
#[derive(Clone)]
pub struct PubSubClient {
    target: Target,
}

#[derive(Clone)]
enum Target {
    // Boxed: with TLS built in, a client is ~240 bytes against the Sentinel's 8.
    Direct(Box<redis::Client>),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl PubSubClient {
    /// A pub/sub connection to the current primary.
    pub async fn get_async_pubsub(&self) -> RedisResult<PubSub> {
        let client = match &self.target {
            Target::Direct(client) => client.as_ref().clone(),
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

struct Current {
    generation: u64,
    manager: ConnectionManager,
    /// `host:port` of the node.
    address: String,
}

struct Shared {
    settings: RedisSettings,
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    state: SyncMutex<Option<Current>>,
    /// Held while asking the Sentinels; the time of the last attempt.
    rediscovery: tokio::sync::Mutex<Instant>,
    /// The generation in use, announced to [`Connection::moves`] watchers.
    moves: tokio::sync::watch::Sender<u64>,
    /// The server refused `CONFIG GET` once (the services' ACL users may not
    /// run CONFIG; managed services rename it): later checks go straight to
    /// `INFO`, so `/healthz` does not fill the server's ACL log with denials.
    config_refused: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client of the primary: the configured one, or the one the
    /// Sentinels name now (they check its `ROLE`).
    async fn primary(&self) -> RedisResult<redis::Client> {
        match &self.sentinel {
            None => direct_client(&self.settings),
            Some(sentinel) => sentinel.lock().await.async_get_client().await,
        }
    }

    /// A connection manager on `client` (default: the primary) and its address.
    async fn open(&self, client: Option<redis::Client>) -> RedisResult<(ConnectionManager, String)> {
        let client = match client {
            Some(client) => client,
            None => self.primary().await?,
        };
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(self.settings.connect_timeout_ms)))
            .set_response_timeout(Some(Duration::from_millis(self.settings.response_timeout_ms)))
            .set_number_of_retries(2);
        Ok((ConnectionManager::new_with_config(client, config).await?, address))
    }

    /// Installs a new connection; every clone switches before its next call.
    fn install(&self, manager: ConnectionManager, address: String, why: &'static str) {
        let mut state = self.lock();
        let generation = state.as_ref().map_or(0, |c| c.generation + 1);
        tracing::warn!(generation, %address, master = %self.settings.master_name, why, "Redis primary (re)discovered through Sentinel");
        metrics::counter!("firstcome_redis_rediscoveries_total").increment(1);
        *state = Some(Current { generation, manager, address });
        drop(state);
        self.moves.send_replace(generation);
    }

    /// Moves to the primary the Sentinels name, when it is not the one in use.
    async fn follow_sentinels(&self) {
        let Ok(client) = self.primary().await else { return };
        let address = client.get_connection_info().addr().to_string();
        if self.lock().as_ref().is_some_and(|c| c.address == address) {
            return;
        }
        let _one_at_a_time = self.rediscovery.lock().await;
        if self.lock().as_ref().is_some_and(|c| c.address == address) {
            return;
        }
        match self.open(Some(client)).await {
            Ok((manager, address)) => self.install(manager, address, "the Sentinels name another primary"),
            Err(error) => tracing::warn!(%error, %address, "the new Redis primary does not answer yet"),
        }
    }

    /// Asks the Sentinels for the primary again after generation `seen`
    /// failed at `failed_at`. Concurrent failures share one attempt: an
    /// attempt that began after this failure (or a newer generation) is
    /// taken as the answer. Attempts are at least [`REDISCOVER_EVERY`] apart.
    async fn rediscover(&self, seen: u64, failed_at: Instant) {
        if self.sentinel.is_none() {
            return;
        }
        let mut last = self.rediscovery.lock().await;
        if *last >= failed_at || self.lock().as_ref().is_some_and(|c| c.generation != seen) {
            return;
        }
        let wait = REDISCOVER_EVERY.saturating_sub(last.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *last = Instant::now();
        match self.open(None).await {
            Ok((manager, address)) => self.install(manager, address, "a call failed"),
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
        if let Some(current) = self.shared.lock().as_ref() {
            if current.generation != self.generation {
                self.generation = current.generation;
                self.current = current.manager.clone();
            }
        }
    }

    /// Announces every move to another primary (the generation number): a
    /// failover may have lost the writes the old primary had not passed on,
    /// so a stage that keeps state in Redis checks it against its log.
    pub fn moves(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.moves.subscribe()
    }

    /// Whether this connection finds its primary through Sentinel.
    pub fn through_sentinel(&self) -> bool {
        self.shared.sentinel.is_some()
    }

    async fn after_error(&mut self, error: &RedisError, failed_at: Instant) -> bool {
        if self.shared.sentinel.is_none() || !points_elsewhere(error) {
            return false;
        }
        self.shared.rediscover(self.generation, failed_at).await;
        let before = self.generation;
        self.follow();
        is_readonly(error) && self.generation != before
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.follow();
            let sent_at = Instant::now();
            match self.current.req_packed_command(cmd).await {
                Err(error) if self.after_error(&error, sent_at).await => self.current.req_packed_command(cmd).await,
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
            let sent_at = Instant::now();
            match self.current.req_packed_commands(pipeline, offset, count).await {
                Err(error) if self.after_error(&error, sent_at).await => {
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

/// The one `maxmemory-policy` under which Redis never evicts a key.
pub const NO_EVICTION: &str = "noeviction";

/// The server's `maxmemory-policy`, as far as it can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// `noeviction`: a full server refuses writes, it never drops a key.
    NoEviction,
    /// Any other policy: keys can be evicted under memory pressure.
    Evicts(String),
    /// Neither `CONFIG GET` nor `INFO memory` told (why, for the operator).
    Unknown(String),
}

/// A server whose policy can evict an event's keys: the service refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Redis runs with maxmemory-policy `{policy}`, which can evict keys under memory pressure, \
     an event's keys among them (they carry a TTL): set `maxmemory-policy noeviction` \
     (redis.conf, CONFIG SET, or the managed service's parameter group)"
)]
pub struct EvictionPolicyError {
    pub policy: String,
}

impl EvictionPolicy {
    fn of(policy: &str) -> Self {
        match policy.trim() {
            NO_EVICTION => EvictionPolicy::NoEviction,
            other => EvictionPolicy::Evicts(other.to_string()),
        }
    }

    /// `Err` for a policy that can evict; `Ok` otherwise (an unknown one
    /// too: it is warned about, not refused).
    pub fn refuse_evicting(self) -> Result<Self, EvictionPolicyError> {
        match self {
            EvictionPolicy::Evicts(policy) => Err(EvictionPolicyError { policy }),
            other => Ok(other),
        }
    }
}

/// `maxmemory_policy` of an `INFO memory` answer.
fn policy_in_info(info: &str) -> Option<&str> {
    info.lines().find_map(|line| line.trim_end().strip_prefix("maxmemory_policy:"))
}

impl Connection {
    /// The primary's `maxmemory-policy`: `CONFIG GET`, else (refused, as
    /// for the services' own ACL users, or renamed) `INFO memory`.
    pub async fn eviction_policy(&self) -> EvictionPolicy {
        let mut conn = self.clone();
        let mut refused = None;
        if !self.shared.config_refused.load(Ordering::Relaxed) {
            let config: RedisResult<Vec<String>> =
                redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(&mut conn).await;
            match config {
                // `[name, value]` (a map in RESP3, flattened the same way).
                Ok(pair) if pair.len() == 2 => return EvictionPolicy::of(&pair[1]),
                Ok(other) => refused = Some(format!("CONFIG GET answered {other:?}")),
                Err(error) => {
                    // The server's answer (NOPERM, unknown command), not a lost connection.
                    if matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension) {
                        self.shared.config_refused.store(true, Ordering::Relaxed);
                    }
                    refused = Some(format!("CONFIG GET: {error}"));
                }
            }
        }
        let info: RedisResult<String> = redis::cmd("INFO").arg("memory").query_async(&mut conn).await;
        match info {
            Ok(info) => match policy_in_info(&info) {
                Some(policy) => EvictionPolicy::of(policy),
                None => EvictionPolicy::Unknown(unread(refused, "INFO memory has no maxmemory_policy")),
            },
            Err(error) => EvictionPolicy::Unknown(unread(refused, &format!("INFO memory: {error}"))),
        }
    }

    /// At start: refuses a server that can evict an event's keys, warns
    /// when the policy cannot be read (the service starts; `/healthz` says
    /// so), and logs and counts the outcome.
    pub async fn check_eviction_policy(&self) -> Result<EvictionPolicy, EvictionPolicyError> {
        let policy = self.eviction_policy().await;
        EvictionPolicyChecked { policy: &policy }.emit();
        policy.refuse_evicting()
    }
}

fn unread(config: Option<String>, info: &str) -> String {
    let config = config.map(|c| format!("{c}; ")).unwrap_or_default();
    format!("maxmemory-policy not readable ({config}{info}); make sure the server runs `maxmemory-policy noeviction`")
}

/// The eviction policy checked at a service's start.
struct EvictionPolicyChecked<'a> {
    policy: &'a EvictionPolicy,
}

impl EvictionPolicyChecked<'_> {
    fn emit(&self) {
        let result = match self.policy {
            EvictionPolicy::NoEviction => {
                tracing::info!(policy = NO_EVICTION, "Redis never evicts keys");
                "noeviction"
            }
            EvictionPolicy::Evicts(policy) => {
                tracing::error!(%policy, "Redis can evict an event's keys: refusing to start (set maxmemory-policy noeviction)");
                "evicts"
            }
            EvictionPolicy::Unknown(why) => {
                tracing::warn!(%why, "Redis' maxmemory-policy is unknown: starting, but keys may be evicted");
                "unknown"
            }
        };
        metrics::counter!("firstcome_redis_eviction_policy_checks_total", "result" => result).increment(1);
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

    #[test]
    fn only_noeviction_keeps_every_key() {
        assert_eq!(EvictionPolicy::of("noeviction"), EvictionPolicy::NoEviction);
        for evicting in ["volatile-lru", "allkeys-lru", "volatile-ttl", "allkeys-random", "volatile-lfu"] {
            let refused = EvictionPolicy::of(evicting).refuse_evicting().expect_err(evicting);
            assert!(refused.to_string().contains(evicting) && refused.to_string().contains("noeviction"), "{refused}");
        }
        let unknown = EvictionPolicy::Unknown("no INFO".into());
        assert_eq!(unknown.clone().refuse_evicting(), Ok(unknown), "warned about, not refused");
    }

    #[test]
    fn the_policy_is_read_from_info_memory() {
        let info = "# Memory\r\nused_memory:1024\r\nmaxmemory:0\r\nmaxmemory_policy:volatile-lru\r\nallocator_frag_ratio:1.0\r\n";
        assert_eq!(policy_in_info(info), Some("volatile-lru"));
        assert_eq!(policy_in_info("# Memory\r\nused_memory:1024\r\n"), None);
    }
}
