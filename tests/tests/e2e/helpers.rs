//! The test environment (`testkit::TestEnv`: isolated topics, database and
//! member schema per test) and what the end-to-end tests derive from it.

// Each test binary that includes this file uses some of it.
#[allow(unused_imports)]
pub use testkit::{wait_until, TestEnv};

/// The polling loop under the name some tests still use (`testkit::wait_until`).
#[allow(unused_imports)]
pub use testkit::wait_until as eventually;

/// The operator's settings on a test's slice of the stack (the lab's).
#[allow(unused_imports)]
pub use firstcome_lab::pipeline::operator_settings;

/// Every key of an event with its value and expiry, as DUMP sees it: what a
/// forgetful Redis goes back to (a crash under `appendfsync everysec`, a
/// failover to a replica that was behind).
pub struct EventSnapshot(Vec<(String, Option<DumpedKey>)>);

/// A key's DUMP payload and its remaining time to live (ms).
type DumpedKey = (Vec<u8>, i64);

impl EventSnapshot {
    pub async fn take(conn: &mut platform::redis::Connection, event_id: &str) -> Self {
        let mut taken = Vec::new();
        for key in platform::event_keys::EventKeys::new(event_id).all() {
            let value: Option<Vec<u8>> = redis::cmd("DUMP").arg(key).query_async(conn).await.expect("DUMP");
            let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await.expect("PTTL");
            taken.push((key.to_string(), value.map(|v| (v, ttl.max(0)))));
        }
        Self(taken)
    }

    /// Puts every key back as it was (RESTORE … REPLACE); keys that did not
    /// exist are deleted.
    pub async fn restore(&self, conn: &mut platform::redis::Connection) {
        for (key, value) in &self.0 {
            match value {
                Some((bytes, ttl)) => {
                    let _: () = redis::cmd("RESTORE")
                        .arg(key)
                        .arg(*ttl)
                        .arg(bytes.as_slice())
                        .arg("REPLACE")
                        .query_async(conn)
                        .await
                        .expect("RESTORE");
                }
                None => {
                    let _: () = redis::cmd("DEL").arg(key).query_async(conn).await.expect("DEL");
                }
            }
        }
    }
}
