//! What ingest knows about reward events, kept in memory so the flood of the
//! opening minute (and everything after sell-out) is answered without Redis.
//!
//! - [`cache`]: the events by id, loaded from Redis on first sight.
//! - [`sync`]: keeps the cache current: a pub/sub subscription on
//!   `platform::event_keys::STATE_CHANNEL` (sub-second), and a periodic
//!   re-read of every known event (the safety net for missed messages).

pub mod cache;
pub mod sync;

pub use cache::{EventCache, Gate};
pub use sync::StateSync;
