//! The operator's commands end to end against the real local stack: event
//! create, reconcile (and its repair), rebuild (Redis, and the projections),
//! dead letters (show, check, replay); each test on its own slice of the
//! stack, with the whole pipeline in this process where a command needs a
//! real run behind it (the lab's, `firstcome_lab::pipeline`).

// The end-to-end tests' harness and helpers (`tests/`), shared rather than
// copied: the same slice, fixtures and waits as every end-to-end test.
#[allow(dead_code)]
#[path = "../../../tests/tests/e2e/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../../../tests/tests/e2e/pipeline_harness.rs"]
mod pipeline_harness;

mod dlq;
mod event_create;
mod forgetful_redis;
mod projections;
mod reconcile;
