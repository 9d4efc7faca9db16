//! Redis connections with explicit timeouts.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::settings::RedisSettings;

/// Opens a multiplexed, self-reconnecting connection.
pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(settings.url.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config).await
}

/// A client for dedicated connections (pub/sub).
pub fn client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    redis::Client::open(settings.url.as_str())
}
