//! The whole pipeline in this process on one test's slice of the real stack:
//! the lab's (`firstcome_lab::pipeline`), where a failure to set up is the
//! test's failure.

use std::time::Duration;

use audit::{Accepted, InvariantReport};
use firstcome_lab::pipeline;
use firstcome_lab::rush::RushReport;

#[allow(unused_imports)]
pub use firstcome_lab::pipeline::{ingest_settings, Crowd, Pipeline, Topology};

use crate::helpers::TestEnv;

/// How long [`drain`] waits for the pipeline.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

/// Seeds `eligible` + `ineligible` members with a product of their own.
pub async fn seed_crowd(env: &TestEnv, eligible: usize, ineligible: usize) -> Crowd {
    pipeline::seed_crowd(env, eligible, ineligible).await.expect("crowd seeded")
}

/// Creates an open event; returns its id.
pub async fn open_event(env: &TestEnv, crowd: &Crowd, total: i32, safety: i32) -> String {
    pipeline::open_event(env, crowd, total, safety).await.expect("event created")
}

/// Each member submits once (the rush generator, loopback only).
pub async fn submit(pipeline: &Pipeline, event_id: &str, members: &[String], duplicate_ratio: f64) -> RushReport {
    pipeline::submit(pipeline, event_id, members, duplicate_ratio).await.expect("rush ran")
}

/// Waits until the pipeline is done with `accepted` (see
/// `InvariantReport::drained`); returns the final invariant report.
pub async fn drain(env: &TestEnv, pipeline: &Pipeline, event_id: &str, accepted: &[Accepted]) -> InvariantReport {
    pipeline::drain(env, pipeline, event_id, accepted, DRAIN_TIMEOUT).await.unwrap_or_else(|e| panic!("{e:#}"))
}
