//! PostgreSQL: firstcome's own database and the shop's member database.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Environment, Principal, SettingsError};

/// How a client protects its connection to PostgreSQL or Redis.
///
/// There is no `require` (encrypted but unverified): a certificate nobody
/// checks is what a man in the middle presents, so outside local the choice
/// is between verified TLS and a refusal to start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plaintext: the local stack's default; refused outside local.
    #[default]
    Disable,
    /// TLS (rustls); the server's certificate must chain to
    /// [`TlsSettings::ca_file`] (or the system's roots) and name the host
    /// the client dialled.
    VerifyFull,
}

/// `database.tls`, `replica.tls`, `member_primary.tls`, `redis.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    pub mode: TlsMode,
    /// PEM file of the CA certificate(s) to trust; unset: the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Verified TLS against the CA(s) in `ca_file`.
    pub fn verify_full(ca_file: impl Into<PathBuf>) -> Self {
        Self { mode: TlsMode::VerifyFull, ca_file: Some(ca_file.into()) }
    }

    /// Outside local the connection is TLS: a password or a member's phone
    /// number in plaintext crosses every network hop between the service and
    /// the store. `name`: the settings section (`database`, `redis`…).
    pub fn check(&self, environment: Environment, name: &str) -> Result<(), SettingsError> {
        if environment.is_local() || self.mode == TlsMode::VerifyFull {
            return Ok(());
        }
        Err(SettingsError::Invalid(format!(
            "{name}.tls.mode = disable (plaintext) outside local: set {name}.tls.mode = \"verify-full\" and \
             {name}.tls.ca_file (docs/operations.md, TLS)"
        )))
    }
}

/// PostgreSQL. Services never migrate: `firstcome db migrate` does, as the
/// database owner ([`Principal::ADMIN`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `postgres://[user[:password]@]host:port/database`. Credentials in the
    /// URL win over [`user`](Self::user) / [`password`](Self::password).
    #[serde(serialize_with = "super::secret::expose")]
    pub url: SecretString,
    /// The role to log in as when the URL names none; on the local stack a
    /// service left without one logs in as its own
    /// ([`for_principal`](Self::for_principal)).
    pub user: Option<String>,
    #[serde(serialize_with = "super::secret::expose_option")]
    pub password: Option<SecretString>,
    pub max_connections: usize,
    /// Wait for a pooled connection / create one / check one, each at most this long.
    pub timeout_ms: u64,
    /// Server-side limit for one statement and one lock wait.
    pub statement_timeout_ms: u64,
    /// TLS to the server; plaintext only on the local stack.
    pub tls: TlsSettings,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://127.0.0.1:5432/firstcome"),
            user: None,
            password: None,
            max_connections: 16,
            timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            tls: TlsSettings::default(),
        }
    }
}

impl DatabaseSettings {
    /// Whether the URL or [`user`](Self::user) names a role.
    pub fn has_user(&self) -> bool {
        self.user.is_some() || url_user(self.url.expose_secret()).is_some()
    }

    /// The same server and database, no role named (a `user:password@` in the
    /// URL and the user and password fields are dropped).
    pub fn without_credentials(&self) -> Self {
        let url = self.url.expose_secret();
        let url = match url.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let host = rest[..end].rsplit_once('@').map(|(_, host)| host).unwrap_or(&rest[..end]);
                format!("{scheme}://{host}{}", &rest[end..])
            }
            None => url.to_string(),
        };
        Self { url: SecretString::from(url), user: None, password: None, ..self.clone() }
    }

    /// These settings as `principal` on the local stack: its role and local
    /// password when none is configured. Outside local they are returned as
    /// they are (a deployment names its roles).
    pub fn for_principal(&self, environment: Environment, principal: Principal) -> Self {
        let mut settings = self.clone();
        if environment.is_local() && !settings.has_user() {
            settings.user = Some(principal.database_role());
            settings.password = Some(SecretString::from(principal.local_database_password()));
        }
        settings
    }

    /// The same server with another database name (tests use one per run).
    pub fn with_database(&self, name: &str) -> Self {
        let url = self.url.expose_secret();
        let base = url.rsplit_once('/').map(|(base, _)| base).unwrap_or(url);
        Self { url: SecretString::from(format!("{base}/{name}")), ..self.clone() }
    }
}

/// The user of a `scheme://user[:password]@host…` URL, if it names one.
pub(super) fn url_user(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    (!user.is_empty()).then_some(user)
}

/// The shop's member database as firstcome reads it: a streaming replica
/// (hot standby), never the shop's primary. Members, phones and purchases
/// are read only through this (`replica.url`); the pipeline's own tables
/// stay in [`DatabaseSettings`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaSettings {
    /// `postgres://user:password@host:port/database` of a standby.
    #[serde(serialize_with = "super::secret::expose")]
    pub url: SecretString,
    /// The schema holding `members` and `purchases` (empty: the server's
    /// default search_path). Tests use one schema each.
    pub schema: String,
    pub max_connections: usize,
    /// Wait for a pooled connection / create one / check one, each at most this long.
    pub timeout_ms: u64,
    pub statement_timeout_ms: u64,
    /// As [`DatabaseSettings::tls`].
    pub tls: TlsSettings,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://firstcome_reader:firstcome_reader@127.0.0.1:5434/shop"),
            schema: String::new(),
            max_connections: 8,
            timeout_ms: 2_000,
            statement_timeout_ms: 10_000,
            tls: TlsSettings::default(),
        }
    }
}

/// The shop's member database primary. Only `firstcome members seed` (which
/// plays the shop in demos and tests) and test set-up write there; no
/// service connects to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberPrimarySettings {
    #[serde(serialize_with = "super::secret::expose")]
    pub url: SecretString,
    /// As [`ReplicaSettings::schema`]; both must name the same schema.
    pub schema: String,
    pub max_connections: usize,
    pub timeout_ms: u64,
    pub statement_timeout_ms: u64,
    /// As [`DatabaseSettings::tls`].
    pub tls: TlsSettings,
}

impl Default for MemberPrimarySettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://firstcome:firstcome@127.0.0.1:5433/shop"),
            schema: String::new(),
            max_connections: 4,
            timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            tls: TlsSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_database_defaults_to_the_local_standby_and_primary() {
        assert!(ReplicaSettings::default().url.expose_secret().contains(":5434/shop"));
        assert!(MemberPrimarySettings::default().url.expose_secret().contains(":5433/shop"));
    }

    #[test]
    fn each_service_is_its_own_role_on_the_local_stack_only() {
        let local = DatabaseSettings::default().for_principal(Environment::Local, Principal::INGEST);
        assert_eq!(local.user.as_deref(), Some("firstcome_ingest"));
        assert_eq!(local.password.as_ref().map(|p| p.expose_secret()), Some("firstcome_ingest"));
        assert_eq!(
            DatabaseSettings::default().for_principal(Environment::Local, Principal::ADMIN).user.as_deref(),
            Some("firstcome")
        );
        let production = DatabaseSettings::default().for_principal(Environment::Production, Principal::INGEST);
        assert_eq!(production.user, None, "outside local nothing is filled in");
        // Credentials a deployment configured are kept.
        let named =
            DatabaseSettings { url: SecretString::from("postgres://app:pw@db/firstcome"), ..Default::default() };
        assert_eq!(named.for_principal(Environment::Local, Principal::INGEST).user, None);
    }

    #[test]
    fn credentials_are_dropped_from_a_url() {
        let db = DatabaseSettings {
            url: SecretString::from("postgres://a:b@h:1/d?x=y"),
            user: Some("u".into()),
            ..Default::default()
        };
        let bare = db.without_credentials();
        assert_eq!(bare.url.expose_secret(), "postgres://h:1/d?x=y");
        assert_eq!(bare.user, None);
    }

    #[test]
    fn plaintext_is_refused_outside_local_only() {
        let plain = TlsSettings::default();
        assert_eq!(plain.mode, TlsMode::Disable, "the local stack listens in plaintext on loopback");
        assert!(plain.check(Environment::Local, "database").is_ok());
        let refused = plain.check(Environment::Production, "database").unwrap_err().to_string();
        assert!(refused.contains("database.tls.mode"), "{refused}");
        assert!(TlsSettings::verify_full("/etc/ssl/db-ca.pem").check(Environment::Production, "database").is_ok());
    }

    #[test]
    fn the_tls_mode_is_read_in_kebab_case() {
        let tls: TlsSettings = serde_json::from_str(r#"{"mode": "verify-full", "ca_file": "/ca.pem"}"#).unwrap();
        assert_eq!(tls, TlsSettings::verify_full("/ca.pem"));
        assert!(serde_json::from_str::<TlsSettings>(r#"{"mode": "require"}"#).is_err(), "no unverified TLS");
    }

    #[test]
    fn another_database_keeps_the_server() {
        let db = DatabaseSettings::default().with_database("t_123");
        assert_eq!(db.url.expose_secret(), "postgres://127.0.0.1:5432/t_123");
    }
}
