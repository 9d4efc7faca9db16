//! The test kit: what the integration tests of every crate share, written
//! once (a dev-dependency only; nothing here runs in production).
//!
//! - [`TestEnv`]: one test's slice of the real local stack (`stack/bin/stack
//!   up`): its own topic and group prefix, topics created with
//!   [`PARTITIONS`] partitions, the schemas registered, a fresh migrated
//!   database, and the settings of Kafka, the registry, PostgreSQL and Redis
//!   to hand to the services under test.
//! - [`wait_until`] / [`wait_for`]: wait on a condition with a deadline,
//!   never on a fixed sleep (one polling loop: `platform::wait`).
//! - Topic readers: [`read_log`] / [`read_events`] read a topic to the high
//!   watermarks taken when the read starts (`platform::kafka::LogReader`,
//!   committed records only); [`CommittedReader`] waits for the next N
//!   committed records; [`group_lag`] / [`caught_up`] tell whether a consumer
//!   group committed to the end.
//! - [`unused_port`], [`metrics_text`], [`metric`]: ports and the ops listener.
//! - [`sentinel`]: what the Sentinels of the Sentinel-managed Redis see
//!   (primary, replica, failover), for the failover tests and the lab.
//! - [`open_event`]: the meta of an event open now, for `write_event`.
//!
//! Modelled on zero2prod's `tests/api/helpers.rs` (one `spawn_app`: a fresh
//! database per test) and rust-rdkafka's `tests/utils.rs` (random topic and
//! group names per test).

mod env;
mod kafka;
mod net;
pub mod sentinel;

use std::future::Future;
use std::time::Duration;

pub use env::{kafka_admin, redis_admin, stack_kafka_admin, TestEnv, TestEnvBuilder, PARTITIONS};
pub use kafka::{caught_up, group_lag, read_events, read_log, CommittedReader, Lag, READ_TIMEOUT};
pub use net::{metric, metrics_text, unused_port};
pub use platform::wait::{poll_until, wait_until};

/// The meta of an event open since a minute, for an hour, with `for_sale`
/// units and one question (`satisfaction`): what a test or a bench writes
/// with `platform::event_keys::write_event` beside its eligible members.
pub fn open_event(event_id: &str, for_sale: i64) -> platform::event_keys::EventMeta {
    let now = schemas::now_millis();
    platform::event_keys::EventMeta {
        event_id: event_id.to_string(),
        open_at_ms: now - 60_000,
        close_at_ms: now + 3_600_000,
        for_sale,
        line_depth: platform::event_keys::EventMeta::default_line_depth(for_sale),
        questions: vec!["satisfaction".into()],
        status: platform::event_keys::EventStatus::Open,
    }
}

/// Waits until `check` holds; panics naming `what` after `timeout`. For the
/// waits a test cannot go on without (a `wait_until` whose result a test
/// inspects itself returns `false` instead).
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(wait_until(timeout, check).await, "timed out after {timeout:?} waiting for {what}");
}

/// Logs of the code under test, only when asked (`TEST_LOG=1`): the log layer
/// writes to stderr and bypasses the test harness' capture.
pub fn init_logs(service: &'static str) {
    if std::env::var_os("TEST_LOG").is_some() {
        platform::telemetry::init(service, &Default::default());
    }
}
