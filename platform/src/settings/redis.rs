//! Redis, alone or behind Sentinels.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::database::{url_user, TlsSettings};
use super::{Environment, Principal, SettingsError};

/// Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// The one Redis to use when no Sentinels are configured.
    pub url: String,
    /// `host:port` of Redis Sentinels, comma-separated. When set, `url` is
    /// ignored: the primary of [`master_name`](Self::master_name) is asked
    /// from the Sentinels, and asked again after a connection fails or the
    /// server answers READONLY (a failover).
    pub sentinels: String,
    /// The Sentinels' name for the monitored primary.
    pub master_name: String,
    /// The ACL user when the URL names none (with Sentinels: on the data
    /// nodes they name). On the local stack a service left without one logs
    /// in as its own ([`for_principal`](Self::for_principal)).
    pub username: Option<String>,
    #[serde(serialize_with = "super::secret::expose_option")]
    pub password: Option<SecretString>,
    pub connect_timeout_ms: u64,
    /// A timed-out call may still have run on the server: callers keep retries idempotent.
    pub response_timeout_ms: u64,
    /// TLS to the data nodes (`verify-full`: a `redis://` URL is dialled as
    /// `rediss://`); plaintext only on the local stack. With Sentinels, TLS
    /// reaches Sentinels and data nodes alike, against the system's roots
    /// only (`ca_file` is refused there: the redis crate's Sentinel client
    /// takes one trust store per builder, not ours).
    pub tls: TlsSettings,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            sentinels: String::new(),
            master_name: "firstcome".into(),
            username: None,
            password: None,
            connect_timeout_ms: 1_000,
            response_timeout_ms: 2_000,
            tls: TlsSettings::default(),
        }
    }
}

impl RedisSettings {
    /// These settings as `principal` on the local stack: its ACL user and
    /// local password when none is configured (in the URL or the fields).
    pub fn for_principal(&self, environment: Environment, principal: Principal) -> Self {
        let mut settings = self.clone();
        if environment.is_local() && settings.username.is_none() && url_user(&settings.url).is_none() {
            settings.username = Some(principal.name().into());
            settings.password = Some(SecretString::from(principal.local_password()));
        }
        settings
    }

    /// Whether the connection is TLS: `tls.mode = verify-full`, or a
    /// `rediss://` URL (which the redis crate verifies in full unless the
    /// URL asks for `#insecure`, refused here).
    pub fn is_tls(&self) -> bool {
        self.tls.mode == super::TlsMode::VerifyFull
            || (self.sentinel_addresses().is_empty()
                && self.url.starts_with("rediss://")
                && !self.url.contains("#insecure"))
    }

    /// Outside local the connection is TLS ([`TlsSettings::check`]).
    pub fn check_tls(&self, environment: Environment) -> Result<(), SettingsError> {
        if self.is_tls() {
            return Ok(());
        }
        self.tls.check(environment, "redis")
    }

    /// The Sentinel addresses, when any are configured.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_a_comma_separated_list() {
        let redis = RedisSettings { sentinels: " 127.0.0.1:26380, 127.0.0.1:26381 ,".into(), ..Default::default() };
        assert_eq!(redis.sentinel_addresses(), ["127.0.0.1:26380", "127.0.0.1:26381"]);
        assert!(RedisSettings::default().sentinel_addresses().is_empty());
    }

    #[test]
    fn plaintext_redis_is_refused_outside_local_only() {
        let plain = RedisSettings { url: "redis://cache.internal:6379".into(), ..Default::default() };
        assert!(plain.check_tls(Environment::Local).is_ok());
        let refused = plain.check_tls(Environment::Production).unwrap_err().to_string();
        assert!(refused.contains("redis.tls.mode"), "{refused}");
        let rediss = RedisSettings { url: "rediss://cache.internal:6380".into(), ..Default::default() };
        assert!(rediss.check_tls(Environment::Production).is_ok(), "a rediss:// URL is TLS");
        let insecure = RedisSettings { url: "rediss://cache.internal:6380/#insecure".into(), ..Default::default() };
        assert!(insecure.check_tls(Environment::Production).is_err(), "unverified TLS is not TLS");
        let verified = RedisSettings { tls: TlsSettings::verify_full("/ca.pem"), ..plain };
        assert!(verified.check_tls(Environment::Production).is_ok());
    }

    #[test]
    fn each_service_is_its_own_acl_user_on_the_local_stack() {
        let redis = RedisSettings::default().for_principal(Environment::Local, Principal::STOCK);
        assert_eq!(redis.username.as_deref(), Some("stock"));
        let in_url = RedisSettings { url: "redis://app:pw@cache:6379".into(), ..Default::default() };
        assert_eq!(in_url.for_principal(Environment::Local, Principal::STOCK).username, None, "the URL's user is kept");
    }
}
