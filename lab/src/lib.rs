//! The lab: what runs firstcome on the local stack for measurement and
//! proof rather than for an event — the opening-rush load generator
//! (`rush`), the chaos suite (`chaos`), the demo (`demo`), the clean-up of
//! what test runs leave (`cleanup`), and the services started as processes
//! (`services`) with their settings built in one place from typed settings
//! (`service_settings`), or in this process on a test's slice of the stack
//! (`pipeline`: the end-to-end tests' and the operator command's tests').
//! The invariants it checks are the `audit` crate's; the operator's commands
//! it uses (event create, members seed, rebuild) are `firstcome`'s.

pub mod chaos;
pub mod cleanup;
pub mod demo;
pub mod output;
pub mod pipeline;
pub mod rush;
pub mod service_settings;
pub mod services;

/// The lab's settings: the operator's (`firstcome`'s), with the same
/// sections and `FIRSTCOME_*` variables as the services, so one `stack env`
/// serves the services, the operator and the lab.
pub type Settings = firstcome_cli::CliSettings;

/// A run that worked and found an invariant broken (exit status 1, as
/// `firstcome reconcile`'s), apart from one that could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);
