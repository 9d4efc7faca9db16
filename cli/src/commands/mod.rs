//! One module per command group.

pub mod db;
pub mod event;
pub mod members;
pub mod schemas;
pub mod topics;
