//! One module per command group; each owns its command-line arguments
//! (`…Command` / `…Args`), says which stores it needs (`needs`), and
//! returns its [`Output`](crate::output::Output) for `--format` to render.

pub mod db;
pub mod dlq;
pub mod event;
pub mod gifts;
pub mod groups;
pub mod members;
pub mod rebuild;
pub mod receipt;
pub mod reconcile;
pub mod schemas;
pub mod token;
pub mod topics;
pub mod verify;
