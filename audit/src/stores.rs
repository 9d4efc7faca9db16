//! The stores the checks read, connected once (drain loops poll them), and
//! the reads every check shares: the provider's gift list and Redis' hashes
//! and sets read in pages.

use std::time::Duration;

use serde::Deserialize;

use platform::settings::{DatabaseSettings, RedisSettings};

use crate::error::{postgres_address, redis_address, AuditError};

#[derive(Clone)]
pub struct Stores {
    pub pool: deadpool_postgres::Pool,
    pub redis: platform::redis::Connection,
    pub(crate) http: reqwest::Client,
    database: DatabaseSettings,
    redis_address: String,
}

impl Stores {
    /// Opens the Redis connection now; PostgreSQL is pooled and connects on
    /// first use ([`db`](Self::db)).
    pub async fn connect(database: &DatabaseSettings, redis: &RedisSettings) -> Result<Self, AuditError> {
        let pool = platform::db::pool(database).map_err(|e| AuditError::postgres(database, e))?;
        let connection = platform::redis::connect(redis).await.map_err(|e| AuditError::redis(redis, e))?;
        let http =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().map_err(AuditError::Http)?;
        Ok(Self { pool, redis: connection, http, database: database.clone(), redis_address: redis_address(redis) })
    }

    /// A pooled PostgreSQL connection; the error names the server.
    pub async fn db(&self) -> Result<deadpool_postgres::Object, AuditError> {
        self.pool.get().await.map_err(|e| AuditError::postgres(&self.database, e))
    }

    /// Where PostgreSQL is, for messages.
    pub fn postgres_address(&self) -> String {
        postgres_address(&self.database)
    }

    /// Maps a Redis error met on this connection.
    pub(crate) fn redis_error(&self, error: redis::RedisError) -> AuditError {
        AuditError::redis_call(&self.redis_address, error)
    }
}

/// A gift as the provider lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderGift {
    pub idempotency_key: String,
    pub phone: String,
    pub issued_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Deserialize)]
struct GiftList {
    gifts: Vec<ProviderGift>,
}

/// Every gift the provider issued.
pub async fn provider_gifts(http: &reqwest::Client, provider_url: &str) -> Result<Vec<ProviderGift>, AuditError> {
    let url = format!("{}/v1/gifts", provider_url.trim_end_matches('/'));
    let fail = |e| AuditError::provider(&url, e);
    let response = http.get(&url).send().await.map_err(fail)?.error_for_status().map_err(fail)?;
    let list: GiftList = response.json().await.map_err(fail)?;
    Ok(list.gifts)
}

/// How many fields an HSCAN/SSCAN page asks for: an event's hashes can hold
/// one field per member, so they are read in pages, never in one reply.
const SCAN_PAGE: usize = 1_000;

/// Every field and value of a hash.
pub(crate) async fn hash_entries(stores: &Stores, key: &str) -> Result<Vec<(String, String)>, AuditError> {
    let flat = scan(stores, "HSCAN", key).await?;
    Ok(flat.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect())
}

/// Every value of a hash.
pub(crate) async fn hash_values(stores: &Stores, key: &str) -> Result<Vec<String>, AuditError> {
    Ok(hash_entries(stores, key).await?.into_iter().map(|(_, value)| value).collect())
}

/// Every member of a set.
pub(crate) async fn set_members(stores: &Stores, key: &str) -> Result<Vec<String>, AuditError> {
    scan(stores, "SSCAN", key).await
}

/// The flat replies of a whole HSCAN/SSCAN iteration.
async fn scan(stores: &Stores, command: &str, key: &str) -> Result<Vec<String>, AuditError> {
    let mut redis = stores.redis.clone();
    let mut cursor = String::from("0");
    let mut out = Vec::new();
    loop {
        let (next, page): (String, Vec<String>) = redis::cmd(command)
            .arg(key)
            .arg(&cursor)
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .query_async(&mut redis)
            .await
            .map_err(|e| stores.redis_error(e))?;
        out.extend(page);
        if next == "0" {
            return Ok(out);
        }
        cursor = next;
    }
}
