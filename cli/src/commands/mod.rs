//! One module per command group.

pub mod chaos;
pub mod cleanup;
pub mod db;
pub mod dlq;
pub mod event;
pub mod gifts;
pub mod invariants;
pub mod members;
pub mod reconcile;
pub mod rebuild;
pub mod rush;
pub mod schemas;
pub mod topics;
pub mod demo;
pub mod services;
