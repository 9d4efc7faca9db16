//! The `recording` consumer group (docs/DESIGN.md, flow step 3).
//!
//! It reads `survey-submitted`, `stock-decided` and `gift-dispatched` and
//! projects them into PostgreSQL: one `event_entries` row per entry, the
//! `stock_movements` behind the ledger, and the `stock_ledger` counters.
//!
//! Records of one entry arrive on three topics, so in any order, and at least
//! once. Every write is therefore order-independent and idempotent: rows are
//! created by whichever record comes first, columns only fill holes, and the
//! ledger counts movements that were actually inserted. One batch is one
//! database transaction, committed before the consumer loop commits the
//! batch's offsets.
//!
//! - [`settings`]: what the service reads at start.
//! - [`facts`]: records decoded and checked, then merged per entry.
//! - [`store`]: the batch's SQL, a handful of statements per batch.
//! - [`handler`]: the [`platform::kafka::BatchHandler`] tying them together.
//! - [`startup`]: [`Application`]: build, then run until stopped.
//! - [`rebuild`]: the same handler replaying Kafka into fresh tables, and
//!   their comparison with the live ones (`firstcome rebuild projections`).

pub mod facts;
pub mod handler;
mod internal_events;
pub mod rebuild;
pub mod settings;
pub mod startup;
pub mod store;

pub use handler::Recorder;
/// Every metric the recorder describes at start (`platform::metrics`).
pub use internal_events::METRICS;
pub use settings::Settings;
pub use startup::{Application, Error};

/// The consumer group's name, before the topic prefix (`KafkaSettings::group`);
/// the topology's table names it, so the dashboard and the lag checks agree.
pub const GROUP: &str = schemas::topology::group::RECORDING;
