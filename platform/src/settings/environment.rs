//! Where a service runs, and the secrets refused outside local.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{DatabaseSettings, KafkaSettings, RedisSettings, SettingsError};

/// Where a service runs: `local` (the stack of `stack/bin/stack`, the
/// default) or `production` (`FIRSTCOME_ENVIRONMENT=production`). Outside
/// local, every service refuses to start on a secret anyone can read in this
/// repository ([`Environment::check_token_secret`],
/// [`Environment::check_database_url`]); a service's settings name the
/// sections that hold one once (`ServiceSettings::credentials`) and
/// `ServiceSettings::check_credentials` checks them all.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Local,
    Production,
}

/// The member-token secret of the local stack (committed here, so public).
pub const DEV_TOKEN_SECRET: &str = "firstcome-local-dev-secret";
/// The shortest token secret accepted outside local (HS256 wants ≥ 256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// The local stack's passwords (`stack/`): the database owner, the member
/// replica's reader, and every `Principal`'s local password. Refused
/// outside local wherever a password is set (database, Redis, Kafka).
pub const STACK_PASSWORDS: &[&str] = &[
    "firstcome",
    "firstcome_reader",
    "postgres",
    "firstcome_registry",
    "firstcome_ingest",
    "firstcome_stock",
    "firstcome_recorder",
    "firstcome_sender",
    "firstcome_admin",
];

/// Whether `host` (a listener's `host` setting) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Environment {
    pub fn is_local(self) -> bool {
        self == Environment::Local
    }

    /// Local is the default, and it accepts the public development secrets:
    /// a service nobody configured must not listen where others reach it.
    /// So in local an HTTP listener binds a loopback address only, unless
    /// the environment was named on purpose (`explicit`: set in the
    /// settings file or `FIRSTCOME_ENVIRONMENT`), as the container demo does.
    pub fn check_listener(self, explicit: bool, name: &str, host: &str) -> Result<(), SettingsError> {
        if !self.is_local() || explicit || is_loopback_host(host) {
            return Ok(());
        }
        Err(SettingsError::Invalid(format!(
            "{name}.host = {host:?} is not a loopback address, and the environment is local by default, which \
             accepts the public development secrets: bind 127.0.0.1, or set FIRSTCOME_ENVIRONMENT \
             (production for a deployment; local only to expose the development stack on purpose)"
        )))
    }

    /// Outside local: not the development secret, at least [`MIN_SECRET_BYTES`].
    pub fn check_token_secret(self, name: &str, secret: &SecretString) -> Result<(), SettingsError> {
        if self.is_local() {
            return Ok(());
        }
        let secret = secret.expose_secret();
        if secret == DEV_TOKEN_SECRET {
            return Err(SettingsError::Invalid(format!("{name} is the development secret (environment = production)")));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SettingsError::Invalid(format!(
                "{name} is shorter than {MIN_SECRET_BYTES} bytes (environment = production)"
            )));
        }
        Ok(())
    }

    /// Outside local: `password` (of a Redis or Kafka user, or a database
    /// role given apart from its URL), when set, is not one of the stack's.
    pub fn check_password(self, name: &str, password: Option<&SecretString>) -> Result<(), SettingsError> {
        match password {
            Some(password) if !self.is_local() && STACK_PASSWORDS.contains(&password.expose_secret()) => {
                Err(SettingsError::Invalid(format!(
                    "{name} is the local stack's default password (environment = production)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// [`check_database_url`](Self::check_database_url) and
    /// [`check_password`](Self::check_password) of a [`DatabaseSettings`].
    /// Outside local a role must also be named: no service falls back on
    /// the stack's (which [`DatabaseSettings::for_principal`] fills in locally only).
    pub fn check_database(self, name: &str, database: &DatabaseSettings) -> Result<(), SettingsError> {
        if !self.is_local() && !database.has_user() {
            return Err(SettingsError::Invalid(format!(
                "{name}.url names no role and {name}.user is not set (environment = production)"
            )));
        }
        self.check_database_url(&format!("{name}.url"), &database.url)?;
        self.check_password(&format!("{name}.password"), database.password.as_ref())?;
        database.tls.check(self, name)
    }

    /// Outside local: the Redis password (URL or field) is not one of the stack's.
    pub fn check_redis(self, name: &str, redis: &RedisSettings) -> Result<(), SettingsError> {
        self.check_database_url(&format!("{name}.url"), &SecretString::from(redis.url.clone()))?;
        self.check_password(&format!("{name}.password"), redis.password.as_ref())?;
        redis.check_tls(self)
    }

    /// Outside local: the SASL password (field or `kafka.extra`) is not one of the stack's.
    /// Outside local the brokers are not reached in `plaintext` either (no
    /// login, no encryption): SASL at least, SASL_SSL in a deployment.
    pub fn check_kafka(self, name: &str, kafka: &KafkaSettings) -> Result<(), SettingsError> {
        // What librdkafka ends up with: `extra` wins; without a user the
        // login properties are not set at all, which is librdkafka's default,
        // plaintext (KafkaSettings::security_properties).
        let extra = kafka.extra.get("security.protocol").or_else(|| kafka.extra.get("security_protocol"));
        let login = kafka.username.is_some() || kafka.extra.contains_key("sasl.username");
        let protocol = match extra {
            Some(protocol) => protocol.as_str(),
            None if login => kafka.security_protocol.as_str(),
            None => "plaintext",
        };
        if !self.is_local() && protocol.eq_ignore_ascii_case("plaintext") {
            return Err(SettingsError::Invalid(format!(
                "{name}: security protocol plaintext (no login, no encryption) outside local: set \
                 {name}.username and {name}.security_protocol = sasl_ssl (docs/operations.md, TLS)"
            )));
        }
        self.check_password(&format!("{name}.password"), kafka.password.as_ref())?;
        let password = kafka.extra.get("sasl.password").map(|p| SecretString::from(p.clone()));
        self.check_password(&format!("{name}.extra.sasl.password"), password.as_ref())
    }

    /// Outside local: the database URL carries a password, not one of the stack's.
    pub fn check_database_url(self, name: &str, url: &SecretString) -> Result<(), SettingsError> {
        if self.is_local() {
            return Ok(());
        }
        let url = url.expose_secret();
        let password = url
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(rest))
            .and_then(|authority| authority.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password);
        match password {
            Some(password) if !password.is_empty() && !STACK_PASSWORDS.contains(&password) => Ok(()),
            Some(password) if !password.is_empty() => Err(SettingsError::Invalid(format!(
                "{name} uses the local stack's default password (environment = production)"
            ))),
            // A password from PGPASSWORD/.pgpass or a client certificate is fine;
            // a keyword-style URL is checked for the same defaults.
            _ if STACK_PASSWORDS.iter().any(|p| url.contains(&format!("password={p}"))) => Err(SettingsError::Invalid(
                format!("{name} uses the local stack's default password (environment = production)"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{MemberPrimarySettings, Principal, ReplicaSettings};

    #[test]
    fn local_accepts_the_stack_secrets() {
        let local = Environment::default();
        assert_eq!(local, Environment::Local);
        assert!(local.check_token_secret("auth.token_secret", &SecretString::from(DEV_TOKEN_SECRET)).is_ok());
        assert!(local.check_database_url("database.url", &DatabaseSettings::default().url).is_ok());
    }

    #[test]
    fn production_refuses_the_development_or_a_short_token_secret() {
        let prod = Environment::Production;
        let dev = prod.check_token_secret("auth.token_secret", &SecretString::from(DEV_TOKEN_SECRET));
        assert!(dev.unwrap_err().to_string().contains("development secret"));
        let short = prod.check_token_secret("auth.token_secret", &SecretString::from("x".repeat(31)));
        assert!(short.unwrap_err().to_string().contains("shorter than 32"));
        assert!(prod.check_token_secret("auth.token_secret", &SecretString::from("k".repeat(32))).is_ok());
    }

    #[test]
    fn production_refuses_the_stack_database_passwords() {
        let prod = Environment::Production;
        for url in [
            SecretString::from("postgres://firstcome:firstcome@127.0.0.1:5432/firstcome"),
            SecretString::from("postgres://firstcome_ingest:firstcome_ingest@db:5432/firstcome"),
            ReplicaSettings::default().url,
            MemberPrimarySettings::default().url,
            SecretString::from("postgres://app:postgres@db.internal:5432/firstcome?sslmode=require"),
            SecretString::from("host=db user=app password=firstcome"),
        ] {
            let refused = prod.check_database_url("database.url", &url);
            assert!(refused.is_err(), "{}", url.expose_secret());
            assert!(!refused.unwrap_err().to_string().contains("firstcome@"), "the error names no URL");
        }
        for url in ["postgres://app:Zq9-long-random@db.internal:5432/firstcome", "postgres://app@db.internal/firstcome"]
        {
            assert!(prod.check_database_url("database.url", &SecretString::from(url)).is_ok(), "{url}");
        }
    }

    #[test]
    fn production_refuses_kafka_in_plaintext() {
        let prod = Environment::Production;
        let anonymous = KafkaSettings::default();
        assert!(Environment::Local.check_kafka("kafka", &anonymous).is_ok());
        let refused = prod.check_kafka("kafka", &anonymous).unwrap_err().to_string();
        assert!(refused.contains("plaintext"), "no user: librdkafka's default, plaintext: {refused}");
        let login = KafkaSettings { username: Some("stock".into()), ..Default::default() };
        assert!(prod.check_kafka("kafka", &login).is_ok(), "SASL at least");
        let plaintext = KafkaSettings { security_protocol: "PLAINTEXT".into(), ..login.clone() };
        assert!(prod.check_kafka("kafka", &plaintext).is_err());
        let mut extra = login;
        extra.extra.insert("security.protocol".into(), "plaintext".into());
        assert!(prod.check_kafka("kafka", &extra).is_err(), "kafka.extra wins");
        extra.extra.insert("security.protocol".into(), "sasl_ssl".into());
        assert!(prod.check_kafka("kafka", &extra).is_ok());
    }

    #[test]
    fn production_refuses_plaintext_to_the_database_and_redis() {
        let prod = Environment::Production;
        let mut database = DatabaseSettings {
            url: SecretString::from("postgres://app:Zq9-long-random@db.internal:5432/firstcome"),
            ..Default::default()
        };
        let refused = prod.check_database("database", &database).unwrap_err().to_string();
        assert!(refused.contains("database.tls.mode"), "{refused}");
        database.tls = crate::settings::TlsSettings::verify_full("/etc/ssl/db-ca.pem");
        assert!(prod.check_database("database", &database).is_ok());
        let redis = RedisSettings { url: "redis://app:Zq9-long-random@cache:6379".into(), ..Default::default() };
        assert!(prod.check_redis("redis", &redis).unwrap_err().to_string().contains("redis.tls.mode"));
        assert!(Environment::Local.check_redis("redis", &redis).is_ok());
    }

    #[test]
    fn the_environment_is_read_in_lowercase() {
        #[derive(Deserialize)]
        struct S {
            environment: Environment,
        }
        let s: S = serde_json::from_str(r#"{"environment": "production"}"#).unwrap();
        assert_eq!(s.environment, Environment::Production);
        assert!(serde_json::from_str::<S>(r#"{"environment": "staging"}"#).is_err());
    }

    #[test]
    fn production_refuses_the_stack_passwords_of_redis_and_kafka() {
        let prod = Environment::Production;
        let redis = RedisSettings::default().for_principal(Environment::Local, Principal::INGEST);
        assert!(prod.check_redis("redis", &redis).is_err());
        let in_url =
            RedisSettings { url: "redis://ingest:firstcome_ingest@10.0.0.5:6379".into(), ..Default::default() };
        assert!(prod.check_redis("redis", &in_url).is_err());
        let kafka = KafkaSettings::default().for_principal(Environment::Local, Principal::STOCK);
        assert!(prod.check_kafka("kafka", &kafka).is_err());
        let own = KafkaSettings {
            username: Some("stock".into()),
            password: Some("Zq9-long-random".into()),
            ..Default::default()
        };
        assert!(prod.check_kafka("kafka", &own).is_ok());
        assert!(Environment::Local.check_kafka("kafka", &kafka).is_ok());
    }
}
