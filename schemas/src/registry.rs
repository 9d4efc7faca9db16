//! Schema governance against the registry's Confluent-compatible API:
//! register the local schemas with BACKWARD compatibility, and check a
//! local change against what is registered.

use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{
    is_compatible_schema, post_schema, SrSettings,
};

use crate::codec::{registry_settings, supplied_schema, CodecError};
use crate::events::all_schemas;
use crate::topics::Topics;

/// The compatibility rule every firstcome subject carries.
pub const COMPATIBILITY: &str = "BACKWARD";

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
    url: String,
    settings: SrSettings,
    http: reqwest::Client,
}

impl RegistryAdmin {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, CodecError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| CodecError::Unavailable(e.to_string()))?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            settings: registry_settings(url, timeout)?,
            http,
        })
    }

    /// Registers `schema_text` under `subject` (a no-op when that exact schema
    /// is already there), then sets the subject's compatibility rule.
    pub async fn register(
        &self,
        subject: &str,
        name: &'static str,
        schema_text: &str,
    ) -> Result<Registered, CodecError> {
        let supplied = supplied_schema(name, schema_text)?;
        let registered = post_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map_err(|e| match e.retriable {
                true => CodecError::Unavailable(e.to_string()),
                false => CodecError::Rejected(e.to_string()),
            })?;
        self.set_compatibility(subject, COMPATIBILITY).await?;
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
            .http
            .put(format!("{}/config/{subject}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .map_err(|e| CodecError::Unavailable(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(CodecError::Rejected(format!(
                "setting {level} on {subject}: {status} {body}"
            )));
        }
        Ok(())
    }

    /// Whether `schema_text` may be registered next under `subject`.
    pub async fn check(
        &self,
        subject: &str,
        name: &'static str,
        schema_text: &str,
    ) -> Result<Verdict, CodecError> {
        let supplied = supplied_schema(name, schema_text)?;
        if !self.subject_exists(subject).await? {
            return Ok(Verdict { subject: subject.to_string(), compatible: None });
        }
        let compatible = is_compatible_schema(&self.settings, subject.to_string(), supplied)
            .await
            .map_err(|e| match e.retriable {
                true => CodecError::Unavailable(e.to_string()),
                false => CodecError::Rejected(e.to_string()),
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

    async fn subject_exists(&self, subject: &str) -> Result<bool, CodecError> {
        let response = self
            .http
            .get(format!("{}/subjects/{subject}/versions", self.url))
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
