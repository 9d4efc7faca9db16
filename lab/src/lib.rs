//! The lab: what runs firstcome on the local stack for measurement and
//! proof rather than for an event — the opening-rush load generator
//! (`rush`), the chaos suite (`chaos`), the demo (`demo`), the clean-up of
//! what test runs leave (`cleanup`), and the services started as processes
//! (`services`) with their settings built in one place from typed settings
//! (`service_settings`). The invariants it checks
//! are the `audit` crate's; the operator's commands it uses (event create,
//! members seed, rebuild) are `firstcome`'s.

pub mod chaos;
pub mod cleanup;
pub mod demo;
pub mod output;
pub mod rush;
pub mod service_settings;
pub mod services;

/// A run that worked and found an invariant broken (exit status 1, as
/// `firstcome reconcile`'s), apart from one that could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);
