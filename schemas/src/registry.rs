//! Schema governance against the registry's Confluent-compatible API:
//! register the local schemas under BACKWARD_TRANSITIVE compatibility, and
//! check a local change against what is registered.
//!
//! Only `firstcome schemas register` (the bootstrap, `scripts/lib.sh`)
//! registers; the services look their schemas up ([`crate::Codec`]).

use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{is_compatible_schema, post_schema, SrSettings};

use crate::codec::{supplied_schema, CodecError};
use crate::connection::RegistryConnection;
use crate::events::all_schemas;
use crate::topics::Topics;

/// The compatibility rule every firstcome subject carries. Transitive: a
/// record of any version ever registered must read in the newest code, not
/// only one of the version before it (the topics keep records for weeks,
/// and a rebuild reads all of them); BACKWARD alone would let v3 drop a
/// default v2 added for v1's records.
pub const COMPATIBILITY: &str = "BACKWARD_TRANSITIVE";

/// One subject after registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub id: u32,
}

/// One subject's compatibility verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub subject: String,
    /// `None` when the subject does not exist yet (anything is allowed).
    pub compatible: Option<bool>,
}

/// Admin client for the registry (register, rules, checks).
pub struct RegistryAdmin {
    connection: RegistryConnection,
    settings: SrSettings,
    http: reqwest::Client,
}

impl RegistryAdmin {
    /// An admin client of a registry without credentials.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CodecError> {
        Self::connect(&RegistryConnection::new(url, timeout))
    }

    pub fn connect(connection: &RegistryConnection) -> Result<Self, CodecError> {
        Ok(Self { connection: connection.clone(), settings: connection.sr_settings()?, http: connection.http()? })
    }

    /// Sets the subject's compatibility rule, then registers `schema_text`
    /// under it (a no-op when that exact schema is already there). The rule
    /// first: a subject's first version posted before it would be checked
    /// by the registry's global default (none on Apicurio), and a failure
    /// between the two calls would leave a subject without any rule.
    pub async fn register(
        &self,
        subject: &str,
        name: &'static str,
        schema_text: &str,
    ) -> Result<Registered, CodecError> {
        let supplied = supplied_schema(name, schema_text)?;
        self.set_compatibility(subject, COMPATIBILITY).await?;
        let registered =
            post_schema(&self.settings, subject.to_string(), supplied).await.map_err(|e| match e.retriable {
                true => CodecError::Unavailable(e.to_string()),
                false => CodecError::Rejected(e.to_string()),
            })?;
        Ok(Registered { subject: subject.to_string(), id: registered.id })
    }

    /// Registers every event schema under its topic's value subject.
    pub async fn register_all(&self, topics: &Topics) -> Result<Vec<Registered>, CodecError> {
        let mut out = Vec::new();
        for (topic, name, text) in all_schemas(topics) {
            out.push(self.register(&Topics::value_subject(topic), name, text).await?);
        }
        Ok(out)
    }

    /// Sets a subject's compatibility level (Apicurio turns it into a rule).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), CodecError> {
        let response = self
            .connection
            .request(&self.http, reqwest::Method::PUT, &format!("/config/{subject}"))
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .map_err(|e| CodecError::Unavailable(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(CodecError::Rejected(format!("setting {level} on {subject}: {status} {body}")));
        }
        Ok(())
    }

    /// Whether `schema_text` may be registered next under `subject`.
    pub async fn check(&self, subject: &str, name: &'static str, schema_text: &str) -> Result<Verdict, CodecError> {
        let supplied = supplied_schema(name, schema_text)?;
        if !self.subject_exists(subject).await? {
            return Ok(Verdict { subject: subject.to_string(), compatible: None });
        }
        let compatible =
            is_compatible_schema(&self.settings, subject.to_string(), supplied).await.map_err(|e| {
                match e.retriable {
                    true => CodecError::Unavailable(e.to_string()),
                    false => CodecError::Rejected(e.to_string()),
                }
            })?;
        Ok(Verdict { subject: subject.to_string(), compatible: Some(compatible) })
    }

    /// Checks every local schema against its registered subject.
    pub async fn check_all(&self, topics: &Topics) -> Result<Vec<Verdict>, CodecError> {
        let mut out = Vec::new();
        for (topic, name, text) in all_schemas(topics) {
            out.push(self.check(&Topics::value_subject(topic), name, text).await?);
        }
        Ok(out)
    }

    /// The subject's own compatibility rule, `None` when it has none.
    pub async fn compatibility(&self, subject: &str) -> Result<Option<String>, CodecError> {
        #[derive(serde::Deserialize)]
        struct Config {
            #[serde(rename = "compatibilityLevel")]
            level: Option<String>,
        }
        let response = self
            .connection
            .request(&self.http, reqwest::Method::GET, &format!("/config/{subject}"))
            .send()
            .await
            .map_err(|e| CodecError::Unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 => Ok(response.json::<Config>().await.map_err(|e| CodecError::Unavailable(e.to_string()))?.level),
            404 => Ok(None),
            status => Err(CodecError::Unavailable(format!("GET config of {subject}: {status}"))),
        }
    }

    async fn subject_exists(&self, subject: &str) -> Result<bool, CodecError> {
        let response = self
            .connection
            .request(&self.http, reqwest::Method::GET, &format!("/subjects/{subject}/versions"))
            .send()
            .await
            .map_err(|e| CodecError::Unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(CodecError::Unavailable(format!("GET versions of {subject}: {status}"))),
        }
    }
}
