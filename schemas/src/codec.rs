//! The registry-aware codec: typed events <-> Confluent wire format.
//!
//! Encoding looks the schema from `schemas/avro/` up under the topic's value
//! subject and writes the registry's id for that exact schema in front of
//! the bytes. It never registers: `firstcome schemas register` does, once per
//! deployment, under the subject's compatibility rule (see
//! [`crate::registry`]), so a service holding a schema nobody registered
//! fails at start ([`Codec::require_registered`]) instead of putting it in
//! the registry by writing a record.
//! Decoding looks the writer's schema up by the id in the bytes, reads the
//! datum with it, then resolves it onto our own schema of the type (Avro
//! schema resolution, writer → reader): a record written with an older or a
//! newer version of the schema reads as the registry's compatibility rule
//! promised — a field we know and the writer did not gets its Avro default,
//! a field the writer added is dropped, a promoted type is widened.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::get_supplied_schema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::SuppliedSchema;

use crate::connection::RegistryConnection;
use crate::events::{all_schemas, Event};
use crate::topics::Topics;

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid record of the expected type: dead-letter them.
    #[error("poison record: {0}")]
    Poison(String),
    /// The registry could not be reached or answered with a transient error: retry.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused the schema (e.g. an incompatible change): a deployment error.
    #[error("schema rejected by the registry: {0}")]
    Rejected(String),
    /// A schema in `schemas/avro/` does not parse: a build error.
    #[error("invalid local schema {name}: {reason}")]
    InvalidSchema { name: &'static str, reason: String },
    /// Our schema is not among the subject's versions: nobody registered it
    /// (a deployment step skipped, or a registry of another environment).
    #[error(
        "schema {name} is not registered under subject {subject} at the registry {registry}: \
         register it with `firstcome schemas register` (services only look schemas up)"
    )]
    NotRegistered { subject: String, name: &'static str, registry: String },
}

impl CodecError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::Unavailable(_))
    }
}

/// Builds the registry client settings of a registry without credentials.
pub fn registry_settings(url: &str, timeout: Duration) -> Result<SrSettings, CodecError> {
    RegistryConnection::new(url, timeout).sr_settings()
}

/// The schema in the deterministic form sent to the registry.
///
/// Registering from one form matters: Apicurio stores formatting differences
/// as new content, so every caller goes through this function.
pub fn supplied_schema(name: &'static str, schema_text: &str) -> Result<SuppliedSchema, CodecError> {
    let schema =
        Schema::parse_str(schema_text).map_err(|e| CodecError::InvalidSchema { name, reason: e.to_string() })?;
    Ok(get_supplied_schema(&schema))
}

/// What encoding and decoding one event type needs, built once per process
/// from its local schema: the parsed schema in the form sent to the
/// registry, a datum writer over it (its named types resolved), and the
/// schema with its named types as the reader schema of decoding.
///
/// Parsing and canonicalising a schema costs far more than encoding a record
/// (regex matching in `apache_avro`'s parser): doing it per record was about a
/// tenth of ingest's CPU under load. The writer schema of an event type is its
/// local schema, whatever the registry: the registry only gives it an id.
struct LocalSchema {
    supplied: SuppliedSchema,
    writer: GenericDatumWriter<'static>,
    reader: &'static Schema,
    reader_names: NamesRef<'static>,
}

/// One [`LocalSchema`] per event type, for the life of the process: the
/// schema text is a constant of the type, so there are as many as there are
/// event types (four) and leaking them is bounded.
fn local_schema<E: Event>() -> Result<&'static LocalSchema, CodecError> {
    static BUILT: OnceLock<Mutex<HashMap<TypeId, &'static LocalSchema>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(local) = built.get(&TypeId::of::<E>()) {
        return Ok(local);
    }
    let invalid = |reason: String| CodecError::InvalidSchema { name: E::NAME, reason };
    let schema: &'static Schema =
        Box::leak(Box::new(Schema::parse_str(E::SCHEMA).map_err(|e| invalid(e.to_string()))?));
    let writer = GenericDatumWriter::builder(schema).build().map_err(|e| invalid(e.to_string()))?;
    let reader_names = ResolvedSchema::try_from(schema).map_err(|e| invalid(e.to_string()))?.get_names().clone();
    let local: &'static LocalSchema = Box::leak(Box::new(LocalSchema {
        supplied: get_supplied_schema(schema),
        writer,
        reader: schema,
        reader_names,
    }));
    built.insert(TypeId::of::<E>(), local);
    Ok(local)
}

/// Encodes and decodes events through the schema registry. Cheap to clone.
#[derive(Clone)]
pub struct Codec {
    decoder: Arc<AvroDecoder>,
    connection: Arc<RegistryConnection>,
    http: reqwest::Client,
    /// The registry's id of each (topic, event type)'s schema, once known: a
    /// record is then encoded without any registry call. Records that miss
    /// at once (an opening rush on a fresh process) share one look-up
    /// rather than each opening a connection to the registry; a failure is
    /// not kept, so the next record asks again.
    ids: moka::future::Cache<(String, &'static str), u32>,
    /// Look-ups made, for the tests that assert a stampede makes one.
    look_ups: Arc<AtomicU64>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("registry", &self.connection.url).finish_non_exhaustive()
    }
}

/// The most one decoded value may allocate. Our records are a few KiB
/// (ingest refuses bodies over 16 KiB); apache_avro's default (512 MiB) would
/// let any producer's record that claims a huge string length reserve that
/// much before failing. Set once per process, before the first decode.
pub const MAX_DECODE_ALLOCATION_BYTES: usize = 1024 * 1024;

impl Codec {
    /// A codec of a registry without credentials.
    pub fn new(registry_url: &str, timeout: Duration) -> Result<Self, CodecError> {
        Self::connect(&RegistryConnection::new(registry_url, timeout))
    }

    pub fn connect(connection: &RegistryConnection) -> Result<Self, CodecError> {
        apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION_BYTES);
        Ok(Self {
            decoder: Arc::new(AvroDecoder::new(connection.sr_settings()?)),
            connection: Arc::new(connection.clone()),
            http: connection.http()?,
            ids: moka::future::Cache::new(64),
            look_ups: Arc::default(),
        })
    }

    /// Looks every firstcome schema up under its topic's value subject and
    /// keeps the ids: a service calls it at start, so a schema nobody
    /// registered stops it there ([`CodecError::NotRegistered`], naming the
    /// subject and the registry) rather than at its first record.
    pub async fn require_registered(&self, topics: &Topics) -> Result<(), CodecError> {
        for (topic, name, text) in all_schemas(topics) {
            let supplied = supplied_schema(name, text)?;
            self.schema_id(topic, name, &supplied).await?;
        }
        Ok(())
    }

    /// Encodes `event` for `topic` in the Confluent wire format: magic byte 0,
    /// the schema's registry id (4 bytes, big endian), the Avro datum.
    ///
    /// The first record of a type on a topic looks the local schema up under
    /// the topic's value subject; the id is kept, so later records cost only
    /// the datum encoding. Only a success is kept: after a registry failure
    /// the next record asks again.
    pub async fn encode<E: Event>(&self, topic: &str, event: &E) -> Result<Vec<u8>, CodecError> {
        let local = local_schema::<E>()?;
        let id = self.schema_id(topic, E::NAME, &local.supplied).await?;
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0u8);
        bytes.extend_from_slice(&id.to_be_bytes());
        local
            .writer
            .write_ser(&mut bytes, event)
            .map_err(|e| CodecError::Poison(format!("{} does not fit its schema: {e}", E::NAME)))?;
        Ok(bytes)
    }

    /// The registry id of the schema `name` under `topic`'s value subject.
    async fn schema_id(&self, topic: &str, name: &'static str, supplied: &SuppliedSchema) -> Result<u32, CodecError> {
        let look_up = async {
            self.look_ups.fetch_add(1, Ordering::Relaxed);
            self.look_up(&Topics::value_subject(topic), name, supplied).await
        };
        self.ids.try_get_with((topic.to_string(), name), look_up).await.map_err(|shared| (*shared).clone())
    }

    /// How many times this codec (and its clones) asked the registry for a
    /// schema's id.
    pub fn registry_look_ups(&self) -> u64 {
        self.look_ups.load(Ordering::Relaxed)
    }

    /// `POST /subjects/{subject}`: the id of this exact schema if the subject
    /// holds it. Unlike `POST /subjects/{subject}/versions` it never
    /// registers, whatever the caller's permissions.
    async fn look_up(&self, subject: &str, name: &'static str, supplied: &SuppliedSchema) -> Result<u32, CodecError> {
        #[derive(serde::Deserialize)]
        struct Found {
            id: u32,
        }
        let unavailable = |e: reqwest::Error| CodecError::Unavailable(format!("looking {subject} up: {e}"));
        let response = self
            .connection
            .request(&self.http, reqwest::Method::POST, &format!("/subjects/{subject}"))
            .json(&serde_json::json!({ "schema": supplied.schema }))
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json::<Found>().await.map_err(unavailable)?.id);
        }
        let body = response.text().await.unwrap_or_default();
        match status.as_u16() {
            // 40401 (no such subject) and 40403 (the subject lacks this schema).
            404 => Err(CodecError::NotRegistered {
                subject: subject.to_string(),
                name,
                registry: self.connection.url.clone(),
            }),
            408 | 429 | 500..=599 => Err(CodecError::Unavailable(format!("looking {subject} up: {status} {body}"))),
            // 401/403: the credentials; 422: the schema; an operator's to fix.
            _ => Err(CodecError::Rejected(format!("looking {subject} up at {}: {status} {body}", self.connection.url))),
        }
    }

    /// Decodes a record value written in the Confluent wire format: read
    /// with the writer's schema (the id in the bytes), resolved onto `E`'s
    /// schema as the reader's. A record whose writer's schema cannot be
    /// resolved onto ours (a field we need that it lacks and that has no
    /// default) is poison: the registry's rule should have refused it.
    pub async fn decode<E: Event>(&self, payload: Option<&[u8]>) -> Result<E, CodecError> {
        let local = local_schema::<E>()?;
        let bytes = payload.ok_or_else(|| CodecError::Poison("record has no value".into()))?;
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|e| {
            self.decoder.remove_errors_from_cache();
            classify(e)
        })?;
        let resolved = decoded
            .value
            .resolve_with_names(local.reader, &local.reader_names)
            .map_err(|e| CodecError::Poison(format!("the writer's schema does not resolve to {}: {e}", E::NAME)))?;
        apache_avro::from_value::<E>(&resolved)
            .map_err(|e| CodecError::Poison(format!("value is not a {}: {e}", E::NAME)))
    }
}

/// Sorts the decoder's registry client errors into what the caller does next.
fn classify(error: SRCError) -> CodecError {
    let text = error.to_string();
    if error.retriable || is_transport_failure(&text) {
        // The client marks some transport failures as final; a registry that is
        // down is not a bad record, so never dead-letter on it.
        CodecError::Unavailable(text)
    } else {
        CodecError::Poison(text)
    }
}

/// Whether a non-retriable client error was the transport, not the record.
fn is_transport_failure(text: &str) -> bool {
    const MARKERS: [&str; 5] = ["sending request", "connect", "timed out", "failed with status 5", "dns"];
    let lower = text.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{StockDecision, SurveySubmitted};

    #[test]
    fn every_local_schema_parses_into_its_supplied_form() {
        for (name, text) in
            [(SurveySubmitted::NAME, SurveySubmitted::SCHEMA), (StockDecision::NAME, StockDecision::SCHEMA)]
        {
            let supplied = supplied_schema(name, text).expect("parses");
            assert_eq!(supplied.name.as_deref(), Some(name));
        }
    }

    #[test]
    fn the_supplied_form_is_deterministic() {
        let a = supplied_schema(SurveySubmitted::NAME, SurveySubmitted::SCHEMA).unwrap();
        let b = supplied_schema(SurveySubmitted::NAME, SurveySubmitted::SCHEMA).unwrap();
        assert_eq!(a.schema, b.schema);
    }
}
