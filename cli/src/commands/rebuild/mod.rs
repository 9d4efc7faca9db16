//! `firstcome rebuild`: Kafka is the log of record; the stores that derive
//! from it can be rebuilt from it.
//!
//! - [`redis`]: one event's stock state (counter, winners, decisions, returned
//!   units, waitlist, first-entry marks) from the three stock topics.
//! - [`projections`]: the PostgreSQL projections (entries, outcomes, ledger,
//!   dispatch outcomes) into fresh tables, to compare with the live ones.

pub mod projections;
pub mod redis;
