//! One module per command group.

pub mod db;
pub mod dlq;
pub mod event;
pub mod gifts;
pub mod members;
pub mod reconcile;
pub mod rebuild;
pub mod schemas;
pub mod topics;
