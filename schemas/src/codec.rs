//! The registry-aware codec: typed events <-> Confluent wire format.
//!
//! Encoding supplies the schema from `schemas/avro/` under the topic's value
//! subject, so the registry decides whether it is allowed (its compatibility
//! rule) and the bytes always carry the registry's id for that exact schema.
//! Decoding looks the writer's schema up by the id in the bytes, reads the
//! datum with it, then resolves it onto our own schema of the type (Avro
//! schema resolution, writer → reader): a record written with an older or a
//! newer version of the schema reads as the registry's compatibility rule
//! promised — a field we know and the writer did not gets its Avro default,
//! a field the writer added is dropped, a promoted type is widened.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use apache_avro::schema::{NamesRef, ResolvedSchema};
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::get_supplied_schema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SubjectNameStrategy, SuppliedSchema};

use crate::events::Event;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
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
}

impl CodecError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::Unavailable(_))
    }
}

/// Builds the registry client settings used by the codec and the admin calls.
pub fn registry_settings(url: &str, timeout: Duration) -> Result<SrSettings, CodecError> {
    SrSettings::new_builder(url.to_string())
        .set_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| CodecError::Unavailable(e.to_string()))
}

/// The schema in the deterministic form sent to the registry.
///
/// Registering from one form matters: Apicurio stores formatting differences
/// as new content, so every caller goes through this function.
pub fn supplied_schema(name: &'static str, schema_text: &str) -> Result<SuppliedSchema, CodecError> {
    let schema = Schema::parse_str(schema_text)
        .map_err(|e| CodecError::InvalidSchema { name, reason: e.to_string() })?;
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
    encoder: Arc<AvroEncoder>,
    decoder: Arc<AvroDecoder>,
    /// The registry's id of each (topic, event type)'s schema, once known: a
    /// record is then encoded without any registry client call.
    ids: Arc<RwLock<HashMap<(String, TypeId), u32>>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

/// The most one decoded value may allocate. Our records are a few KiB
/// (ingest refuses bodies over 16 KiB); apache_avro's default (512 MiB) would
/// let any producer's record that claims a huge string length reserve that
/// much before failing. Set once per process, before the first decode.
pub const MAX_DECODE_ALLOCATION_BYTES: usize = 1024 * 1024;

impl Codec {
    pub fn new(registry_url: &str, timeout: Duration) -> Result<Self, CodecError> {
        apache_avro::util::max_allocation_bytes(MAX_DECODE_ALLOCATION_BYTES);
        let settings = registry_settings(registry_url, timeout)?;
        Ok(Self {
            encoder: Arc::new(AvroEncoder::new(settings.clone())),
            decoder: Arc::new(AvroDecoder::new(settings)),
            ids: Arc::default(),
        })
    }

    /// Encodes `event` for `topic` in the Confluent wire format: magic byte 0,
    /// the schema's registry id (4 bytes, big endian), the Avro datum.
    ///
    /// The first record of a type on a topic registers (or looks up) the
    /// local schema under the topic's value subject; the id is kept, so later
    /// records cost only the datum encoding. Only a success is kept: after a
    /// registry failure the next record asks again.
    pub async fn encode<E: Event>(&self, topic: &str, event: &E) -> Result<Vec<u8>, CodecError> {
        let local = local_schema::<E>()?;
        let id = self.schema_id::<E>(topic, local).await?;
        let mut bytes = Vec::with_capacity(256);
        bytes.push(0u8);
        bytes.extend_from_slice(&id.to_be_bytes());
        local
            .writer
            .write_ser(&mut bytes, event)
            .map_err(|e| CodecError::Poison(format!("{} does not fit its schema: {e}", E::NAME)))?;
        Ok(bytes)
    }

    /// The registry id of `E`'s schema under `topic`'s value subject.
    async fn schema_id<E: Event>(&self, topic: &str, local: &LocalSchema) -> Result<u32, CodecError> {
        let key = (topic.to_string(), TypeId::of::<E>());
        if let Some(id) = self.ids.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(*id);
        }
        let strategy =
            SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, local.supplied.clone());
        let subject = strategy.get_subject().map_err(|e| classify(e, true))?;
        let schema = self.encoder.get_schema_and_id(&subject, strategy).await.map_err(|e| {
            // Errors stick in the encoder's cache; clear them so a later call
            // (after the registry is back or the rule changed) can succeed.
            self.encoder.remove_errors_from_cache();
            classify(e, true)
        })?;
        self.ids.write().unwrap_or_else(|p| p.into_inner()).insert(key, schema.id);
        Ok(schema.id)
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
            classify(e, false)
        })?;
        let resolved = decoded
            .value
            .resolve_with_names(local.reader, &local.reader_names)
            .map_err(|e| CodecError::Poison(format!("the writer's schema does not resolve to {}: {e}", E::NAME)))?;
        apache_avro::from_value::<E>(&resolved).map_err(|e| {
            CodecError::Poison(format!("value is not a {}: {e}", E::NAME))
        })
    }
}

/// Sorts registry client errors into what the caller does next.
fn classify(error: SRCError, encoding: bool) -> CodecError {
    let text = error.to_string();
    if error.retriable {
        CodecError::Unavailable(text)
    } else if encoding {
        CodecError::Rejected(text)
    } else if is_transport_failure(&text) {
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
        for (name, text) in [
            (SurveySubmitted::NAME, SurveySubmitted::SCHEMA),
            (StockDecision::NAME, StockDecision::SCHEMA),
        ] {
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
