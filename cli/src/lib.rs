//! `firstcome`, the operator's command: the database schema, topics and
//! consumer groups, schemas, members, events, tokens, reconcile, rebuild,
//! dead letters and parked gifts.
//!
//! Every command is a library function, so the end-to-end tests and the lab
//! (`firstcome-lab`) call the same code an operator runs; the invariants are
//! the `audit` crate's. The command line itself — `--format text|json`, the
//! exit status ([`exit`]), the stores probed before a command runs
//! ([`reach`]) — is [`app`].

pub mod app;
pub mod audit_trail;
pub mod commands;
pub mod exit;
pub mod output;
pub mod reach;
pub mod settings;

pub use settings::CliSettings;
