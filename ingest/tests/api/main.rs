//! The ingest API against the real local stack (Kafka, registry, Redis,
//! PostgreSQL). Each test has its own topics, database, event and port
//! (`helpers`, on `testkit`). One test binary; a module per area.

mod admission;
mod auth;
mod dashboard;
mod entries;
mod events;
mod fairness;
mod helpers;
mod holes;
mod limits;
mod ops;
mod produce_refused;
mod refusals;
mod status;
mod waiting_room;
