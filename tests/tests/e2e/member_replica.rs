//! The shop's member database as production runs it: firstcome reads
//! members, phones and purchases only on a streaming hot standby, and the
//! shop (`members seed`, here the tests) writes the primary.
//!
//! The outage and replay-pause tests use the second standby,
//! `member-standby2` (127.0.0.1:5435), which only they stop or pause (one at
//! a time), so the default standby other tests read stays up. They stop and
//! start it with the stack script, as an operator would.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use firstcome_lab::pipeline::{create_event, new_event};
use secrecy::SecretString;

use crate::helpers::{wait_until, TestEnv};
use crate::pipeline_harness::{drain, open_event, seed_crowd, submit, Pipeline, Topology};

/// The standby only these tests stop or pause.
const STANDBY2_URL: &str = "postgres://firstcome_reader:firstcome_reader@127.0.0.1:5435/shop";
/// The same standby as a superuser (to pause and resume its replay).
const STANDBY2_ADMIN_URL: &str = "postgres://firstcome:firstcome@127.0.0.1:5435/shop";

/// One test at a time stops or pauses `member-standby2`.
static STANDBY2: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `stack/bin/stack <args>`; panics with its output when it fails.
pub async fn stack(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stack/bin/stack");
    let output =
        tokio::process::Command::new("bash").arg(&script).args(args).output().await.expect("stack script runs");
    assert!(
        output.status.success(),
        "stack {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test environment whose services read the member database on `member-standby2`.
async fn env_on_standby2() -> TestEnv {
    stack(&["up", "member-standby2"]).await;
    // A test that failed half-way may have left its replay paused.
    standby2_admin()
        .await
        .get()
        .await
        .expect("standby2")
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resumed");
    let mut env = TestEnv::new().await;
    env.replica.url = SecretString::from(STANDBY2_URL);
    env
}

/// A pool on `member-standby2` as a superuser.
async fn standby2_admin() -> deadpool_postgres::Pool {
    platform::member_db::replica_pool(&platform::settings::ReplicaSettings {
        url: SecretString::from(STANDBY2_ADMIN_URL),
        ..Default::default()
    })
    .expect("pool")
}

async fn count(pool: &deadpool_postgres::Pool, sql: &str, event_id: &str) -> i64 {
    pool.get().await.expect("db").query_one(sql, &[&event_id]).await.expect("count").get(0)
}

#[tokio::test]
async fn a_phone_changed_on_the_primary_is_used_once_the_standby_replayed_it() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 3, 0).await;
    let member = crowd.eligible[0].clone();
    let new_phone = "010-9876-5432";
    // The shop changes it on the primary; the standby replays it.
    env.seed_member(&member, new_phone).await;
    env.members_replayed().await;

    // The pipeline's own database has no member rows at all: a phone can only come from the replica.
    let own = platform::db::pool(&env.admin_database()).expect("pool");
    let absent: bool =
        own.get().await.unwrap().query_one("SELECT to_regclass('members') IS NULL", &[]).await.unwrap().get(0);
    assert!(absent, "members live in the member database only");

    let event_id = open_event(&env, &crowd, 3, 0).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let rush = submit(&pipeline, &event_id, &crowd.eligible, 0.0).await;
    assert_eq!(rush.count(202), 3, "{:?}", rush.by_status);
    let report = drain(&env, &pipeline, &event_id, &rush.accepted).await;
    let gifts = audit::provider_gifts(&reqwest::Client::new(), &pipeline.provider_url).await.expect("gifts");
    pipeline.stop().await;
    assert!(report.all_hold(), "invariants: {:#?}", report.failing());
    assert_eq!(report.tally.sent, 3);
    let entry = &rush.accepted.iter().find(|a| a.member == member).expect("accepted").entry_id;
    let gift = gifts.iter().find(|g| &g.idempotency_key == entry).expect("the member's gift");
    assert_eq!(gift.phone, new_phone, "the gift went to the phone the standby replayed");
}

#[tokio::test]
async fn with_the_standby_stopped_a_won_is_retried_never_failed_and_sent_once_it_is_back() {
    let _one_at_a_time = STANDBY2.lock().await;
    let env = env_on_standby2().await;
    let crowd = seed_crowd(&env, 5, 0).await;
    let event_id = open_event(&env, &crowd, 5, 0).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let own = platform::db::pool(&env.admin_database()).expect("pool");

    stack(&["stop", "member-standby2"]).await;
    let rush = submit(&pipeline, &event_id, &crowd.eligible, 0.0).await;
    assert_eq!(rush.count(202), 5, "ingest does not need the member database: {:?}", rush.by_status);
    // The sender claims a payout, then cannot read the phone: it must retry the batch.
    // The five WONs may span more than one sender batch, and the first batch's
    // retries hold its partition, so only "at least one claim" is certain while
    // the standby is down. A wait on a condition, generous: on a busy two-core
    // machine a new group's first join and the stock stage's first batch can take a while.
    let claimed = wait_until(Duration::from_secs(150), || async {
        count(&own, "SELECT count(*) FROM payout_claims WHERE event_id = $1", &event_id).await >= 1
    })
    .await;
    let claims = count(&own, "SELECT count(*) FROM payout_claims WHERE event_id = $1", &event_id).await;
    let won =
        count(&own, "SELECT count(*) FROM event_entries WHERE event_id = $1 AND outcome = 'WON'", &event_id).await;
    // The outage lasts a few more seconds, through several retries of the batch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dispatched = count(&own, "SELECT count(*) FROM gift_dispatches WHERE event_id = $1", &event_id).await;
    let settled = count(
        &own,
        "SELECT count(*) FROM event_entries WHERE event_id = $1 AND status IN ('sent','failed')",
        &event_id,
    )
    .await;
    let released =
        count(&own, "SELECT count(*) FROM payout_claims WHERE event_id = $1 AND status <> 'claimed'", &event_id).await;
    stack(&["up", "member-standby2"]).await;

    assert!(claimed, "a WON reached the sender and was claimed: {claims} claims, {won} WONs recorded");
    assert_eq!(dispatched, 0, "no outcome recorded while the standby was down");
    assert_eq!(settled, 0, "no entry sent or failed while the standby was down");
    assert_eq!(released, 0, "no claim settled or released while the standby was down");

    let report = drain(&env, &pipeline, &event_id, &rush.accepted).await;
    pipeline.stop().await;
    assert!(report.all_hold(), "invariants: {:#?}", report.failing());
    let t = &report.tally;
    assert_eq!(t.sent, 5, "every WON sent once the standby was back: {t:?}");
    assert_eq!(t.failed, 0, "never FAILED: {t:?}");
    assert_eq!(t.ledger_returned, 0, "never compensated: {t:?}");
    assert_eq!(t.provider_gifts, 5, "one gift each: {t:?}");
}

#[tokio::test]
async fn event_creation_loads_eligibility_from_the_standby() {
    let _one_at_a_time = STANDBY2.lock().await;
    let env = env_on_standby2().await;
    let crowd = seed_crowd(&env, 4, 2).await;

    // Hold the standby's replay, then two more members buy the product on the primary.
    let admin_pool = standby2_admin().await;
    let admin = admin_pool.get().await.expect("standby2 as superuser");
    admin.batch_execute("SELECT pg_wal_replay_pause()").await.expect("replay paused");
    let late: Vec<String> = (0..2).map(|n| format!("late-{}-{n}", &env.prefix[2..10])).collect();
    let primary = platform::member_db::primary_pool(&env.member_primary).expect("primary");
    {
        let client = primary.get().await.expect("primary");
        for member in &late {
            client
                .execute("INSERT INTO members (member_id, name, phone) VALUES ($1, $1, '010-1111-2222')", &[member])
                .await
                .expect("member");
            client
                .execute("INSERT INTO purchases (member_id, product_id) VALUES ($1, $2)", &[member, &crowd.product])
                .await
                .expect("purchase");
        }
    }
    let before = create_event(&env, &new_event(&crowd, 10, 0)).await;

    admin.batch_execute("SELECT pg_wal_replay_resume()").await.expect("replay resumed");
    env.members_replayed().await;
    let after = create_event(&env, &new_event(&crowd, 10, 0)).await;

    assert_eq!(before.expect("event created while the standby lagged"), 4, "only what the standby had replayed");
    assert_eq!(after.expect("event created after the replay"), 6, "the two late buyers, once replayed");
    let replica = platform::member_db::replica_pool(&env.replica).expect("replica pool");
    let eligible: HashSet<String> = stock_processor::restore::eligible_members(&replica, &crowd.product)
        .await
        .expect("eligible")
        .into_iter()
        .collect();
    assert!(late.iter().all(|m| eligible.contains(m)));
    assert!(crowd.ineligible.iter().all(|m| !eligible.contains(m)));
}
