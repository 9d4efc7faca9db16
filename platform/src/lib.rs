//! What every firstcome service repeats, written once.
//!
//! - [`settings`]: typed, layered configuration (defaults → file → env).
//! - [`telemetry`]: tracing set up once per process.
//! - [`kafka`]: the producer, the batch consumer loop (at-least-once or
//!   transactional), record headers and dead-lettering, topic admin.
//! - [`db`], [`redis`]: pools with explicit timeouts; migrations; Redis
//!   through Sentinel, following failovers.
//! - [`member_db`]: the shop's member database, read on its streaming replica.
//! - [`ops`]: `/healthz` (checks real dependencies) and `/metrics`.
//! - [`service`]: a consumer service (ops listener, consumer loop, shutdown,
//!   the loop rebuilt after a fatal error) for stock, recording and dispatch.
//! - [`error`]: an error with its cause chain, for logs.
//! - [`redact`]: URLs without credentials, masked phones, no tokens, for logs.
//! - [`scripts`]: every Redis script (`platform/lua/*.lua`), whichever crate runs it.
//! - [`retry`]: a call retried with doubling waits until it answers or the service stops.
//! - [`shutdown`]: SIGTERM/SIGINT into a cancellation token.
//! - [`wait`]: waiting on a condition with a deadline (CLI and tests).

pub mod db;
pub mod error;
pub mod event_keys;
pub mod kafka;
pub mod member_db;
pub mod metrics;
pub mod ops;
pub mod ports;
pub mod redact;
pub mod redis;
pub mod retry;
pub mod scripts;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;
pub mod wait;

pub use tokio_util::sync::CancellationToken;
