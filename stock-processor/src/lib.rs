//! `stock-processor`: consumer group `stock` (docs/DESIGN.md, flow step 2).
//!
//! For each `SurveySubmitted` it decides, atomically in Redis, whether the
//! entry takes one of the N units (WON), the member already holds one
//! (ALREADY_WON), none is left (SOLD_OUT), the member may not enter
//! (INELIGIBLE) or the event is closed (CLOSED), and emits a `StockDecision`.
//! `StockRelease` records return a unit to stock (compensation by `dispatch`).
//! Outputs and input offsets commit in one Kafka transaction; the Redis side
//! is idempotent per entry id, so an aborted batch re-runs to the same answers.
//!
//! - [`settings`]: what the service reads at start.
//! - [`store`]: the Lua scripts and their typed calls.
//! - [`marks`]: applied marks, committed with the offsets, read back to catch
//!   a Redis that lost writes (and [`rebuild`], which repairs it from the log).
//! - [`restore`]: an event Redis lost whole, its static keys written again
//!   from PostgreSQL and the member replica (then rebuilt from the log).
//! - [`handler`]: the batch handler run by platform's consumer loop.
//! - [`startup`]: `Application::build` / `run_until_stopped`.

/// The consumer group's name, behind the deployment's topic prefix (the
/// topology's table names it, so the dashboard and the lag checks agree).
pub const GROUP: &str = schemas::topology::group::STOCK;

pub mod events;
pub mod failover;
pub mod handler;
pub mod marks;
pub mod rebuild;
pub mod restore;
pub mod settings;
pub mod startup;
pub mod store;

pub use handler::StockHandler;
pub use settings::Settings;
pub use startup::{Application, Error};
pub use store::{Decided, Decision, EntryRef, Marks, Promotion, Released, StockStore, StoreError, LATE_DECISION_GRACE};
