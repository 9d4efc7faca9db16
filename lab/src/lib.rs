//! The lab: what runs firstcome on the local stack for measurement and
//! proof rather than for an event — the opening-rush load generator
//! (`rush`), the chaos suite (`chaos`), the demo (`demo`), the clean-up of
//! what test runs leave (`cleanup`), and the services started as processes
//! (`services`) with their settings built in one place from typed settings
//! (`service_settings`), or in this process on a test's slice of the stack
//! (`pipeline`: the end-to-end tests' and the operator command's tests');
//! and the opening-rush drill's rush (`drill`), every service a process.
//! The invariants it checks are the `audit` crate's; the operator's commands
//! it uses (event create, members seed, rebuild) are `firstcome`'s.

pub mod chaos;
pub mod cleanup;
pub mod demo;
pub mod drill;
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

/// A lab command that writes what no deployment's stores should hold (test
/// data deleted by name pattern, invented members) runs on the local stack only.
#[derive(Debug, thiserror::Error)]
#[error("{command} runs on the local stack only (environment is {environment:?}): {why}")]
pub struct NotLocal {
    pub command: &'static str,
    pub environment: platform::settings::Environment,
    pub why: &'static str,
}

/// [`NotLocal`] unless `settings` are the local stack's.
pub fn refuse_outside_local(settings: &Settings, command: &'static str, why: &'static str) -> Result<(), NotLocal> {
    match settings.environment {
        platform::settings::Environment::Local => Ok(()),
        environment => Err(NotLocal { command, environment, why }),
    }
}
