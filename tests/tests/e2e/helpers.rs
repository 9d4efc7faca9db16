//! The test environment (`testkit::TestEnv`: isolated topics, database and
//! member schema per test) and what the end-to-end tests derive from it.

use firstcome_cli::CliSettings;

pub use testkit::{wait_until, TestEnv};

/// The polling loop under the name some tests still use (`testkit::wait_until`).
#[allow(unused_imports)]
pub use testkit::wait_until as eventually;

/// The CLI's settings on a test's slice of the stack.
pub trait CliEnv {
    fn cli(&self) -> CliSettings;
}

impl CliEnv for TestEnv {
    fn cli(&self) -> CliSettings {
        CliSettings {
            kafka: self.kafka.clone(),
            registry: self.registry.clone(),
            database: self.database.clone(),
            replica: self.replica.clone(),
            member_primary: self.member_primary.clone(),
            redis: self.redis.clone(),
            ..Default::default()
        }
    }
}
