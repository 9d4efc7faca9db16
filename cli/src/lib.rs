//! The `firstcome` command: stack set-up, event administration, schemas,
//! topics, the opening-rush load generator, reconcile and the demo.
//!
//! Every command is a library function so the end-to-end tests and the demo
//! call the same code an operator runs.

pub mod commands;
pub mod settings;

pub use settings::CliSettings;
