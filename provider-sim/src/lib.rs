//! A local sandbox of the third-party gifticon provider.
//!
//! The only stand-in of the project (docs/DESIGN.md, "Real services"): we cannot
//! call the real provider here, so this service plays it with the behaviour
//! that matters to the sender — idempotency keys, latency, transient
//! failures, responses lost after the gift was issued, permanently refused
//! phones and rate limits. The contract is in `CONTRACT.md`.
//!
//! Its state is in memory on purpose: it is a third party's state, not ours.

pub mod faults;
pub mod settings;

mod chance;
mod rate_limit;
mod routes;
mod startup;
mod store;

pub use faults::Faults;
pub use routes::API_KEY_HEADER;
pub use settings::Settings;
pub use startup::{Application, Error};
pub use store::{Gift, GiftRequest};
