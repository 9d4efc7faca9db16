//! The `dispatch` consumer group (docs/DESIGN.md flow step 4).
//!
//! For every WON decision on `stock-decided`: payout claimed in PostgreSQL
//! (refused WONs are never sent, they are dead-lettered) → phone from the member replica →
//! gift provider call with idempotency key = entry id, bounded retries →
//! dispatch row + outbox row(s) in one transaction → the outbox relay
//! publishes `gift-dispatched` (and, for a definite failure, `stock-released`:
//! the unit goes back to stock).
//!
//! Never past the stock and never twice per member rests on the payout
//! guard, which holds whatever Redis remembers or whoever produced the record.
//! Exactly one gift per won entry rests on three things: the provider's
//! idempotency key (a retried call never issues twice), the dispatch row
//! (a redelivered decision is skipped once its outcome is recorded), and
//! never compensating an uncertain outcome (a timed-out call is resolved by
//! looking the key up, or the batch is retried later — never released), and
//! never taking an answer for ours unless it is (key, status, product and
//! amount matched). A gift whose answers settle nothing is parked, its
//! claim kept, and retried on its own (docs/provider.md).
//!
//! Modules, by role:
//! - [`settings`]: what can be configured, validated at start.
//! - [`provider`]: the HTTP client of the provider contract, classifying answers.
//! - [`dispatch`]: the retry state machine for one gift (pure of storage).
//! - [`handler`]: the batch handler (decode, WON only, claim, bounded concurrency).
//! - [`settle`]: one claimed gift asked of the provider and its outcome recorded.
//! - [`parked`]: the retrier of gifts whose provider answers settle nothing.
//! - [`entries`]: the entry every WON must match in the entries table before its claim.
//! - [`payout_guard`]: the PostgreSQL claim every WON needs before it is sent.
//! - [`phone`]: whether a member's phone can be sent to (the provider's rule).
//! - [`store`]: the dispatch ledger and outbox writes, the replica reads.
//! - [`outbox`]: the relay from the outbox table to Kafka.
//! - [`events`]: the operational events (one `emit()` logs and counts).
//! - [`backoff`], [`rate_limit`]: retry timing and the rate toward the provider.

pub mod backoff;
pub mod dispatch;
pub mod entries;
pub mod events;
pub mod handler;
pub mod outbox;
pub mod parked;
pub mod payout_guard;
pub mod phone;
pub mod provider;
pub mod rate_limit;
pub mod settings;
pub mod settle;
pub mod store;

mod startup;

pub use settings::Settings;
pub use startup::{Application, Error, GROUP};
