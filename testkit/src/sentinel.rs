//! The Sentinel-managed Redis of `stack up redis-sentinel` (three
//! Sentinels, data nodes `redis-s1`/`redis-s2`), asked what the Sentinels
//! see: for the failover tests and the lab's chaos suite, which share them.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::RedisResult;

/// The Sentinels' ports.
pub const SENTINEL_PORTS: [u16; 3] = [26380, 26381, 26382];
/// The same as `FIRSTCOME_REDIS__SENTINELS` reads them.
pub const SENTINELS: &str = "127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382";
/// The Sentinels' name for the primary.
pub const MASTER_NAME: &str = "firstcome";
/// Data node `redis-sN` listens on 6379 + N.
pub const DATA_PORT_BASE: u16 = 6379;

/// A connection to the Sentinel on `port`.
pub async fn sentinel(port: u16) -> RedisResult<MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_multiplexed_async_connection().await
}

/// The primary's port as the first Sentinel that answers sees it.
pub async fn master_port() -> Option<u16> {
    for port in SENTINEL_PORTS {
        let Ok(mut conn) = sentinel(port).await else { continue };
        let addr: RedisResult<(String, u16)> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER_NAME).query_async(&mut conn).await;
        if let Ok((_, port)) = addr {
            return Some(port);
        }
    }
    None
}

/// The stack's unit of the current primary (`redis-s1`, `redis-s2`).
pub async fn primary_unit() -> Option<String> {
    master_port().await.map(|port| format!("redis-s{}", port - DATA_PORT_BASE))
}

/// `SENTINEL FAILOVER`: the replica is promoted, the primary demoted.
pub async fn failover() -> RedisResult<()> {
    let mut conn = sentinel(SENTINEL_PORTS[0]).await?;
    let _: String = redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME).query_async(&mut conn).await?;
    Ok(())
}

/// Whether every Sentinel knows a replica with its link to the primary up
/// (a failover needs one).
pub async fn replica_known() -> bool {
    for port in SENTINEL_PORTS {
        let Ok(mut conn) = sentinel(port).await else { return false };
        let replicas: Vec<HashMap<String, String>> =
            match redis::cmd("SENTINEL").arg("replicas").arg(MASTER_NAME).query_async(&mut conn).await {
                Ok(replicas) => replicas,
                Err(_) => return false,
            };
        let healthy = replicas.iter().any(|r| {
            r.get("flags").map(String::as_str) == Some("slave")
                && r.get("master-link-status").map(String::as_str) == Some("ok")
        });
        if !healthy {
            return false;
        }
    }
    true
}

/// Whether every Sentinel sees the primary up (no `s_down`/`o_down` flag:
/// the redis crate's Sentinel client refuses such a primary).
pub async fn primary_up() -> bool {
    for port in SENTINEL_PORTS {
        let Ok(mut conn) = sentinel(port).await else { return false };
        let master: HashMap<String, String> =
            match redis::cmd("SENTINEL").arg("master").arg(MASTER_NAME).query_async(&mut conn).await {
                Ok(master) => master,
                Err(_) => return false,
            };
        if master.get("flags").map(String::as_str) != Some("master") {
            return false;
        }
    }
    true
}

/// Waits until the Sentinels see a healthy primary and replica.
pub async fn wait_healthy(timeout: Duration) -> bool {
    platform::wait::wait_until(timeout, || async { primary_up().await && replica_known().await }).await
}
