//! The published contract of firstcome.
//!
//! Other teams (a mobile backend, a partner app) may produce `SurveySubmitted`
//! straight to Kafka, so this crate is what they depend on: the Avro schemas
//! (kept as `.avsc` files in `schemas/avro/`, the one source the registry sees),
//! typed Rust values for them, the topic and subject names, and a codec that
//! speaks the Confluent wire format through the schema registry.
//!
//! It depends on nothing else of ours: `platform` and the services build on it.

pub mod codec;
pub mod connection;
pub mod events;
pub mod identity;
pub mod registry;
pub mod topics;
pub mod topology;

pub use codec::{Codec, CodecError};
pub use connection::{BasicAuth, RegistryConnection};
pub use events::{
    ClientInfo, DispatchStatus, Event, GiftDispatch, Outcome, StockDecision, StockRelease, SurveyAnswer,
    SurveySubmitted,
};
pub use identity::{check_id, check_identity, EntryIdentity};
pub use registry::RegistryAdmin;
pub use topics::Topics;

/// Milliseconds since the Unix epoch, the unit of every timestamp in the events.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
