//! Redis forgets, the log remembers: the lost second of `appendfsync
//! everysec`, made deterministic. The event's Redis keys are DUMPed, a batch
//! of winners is decided, paid and committed to Kafka, then the old keys are
//! RESTOREd (REPLACE) — exactly what a Redis crash after the stock stage's
//! transaction committed leaves behind. The invariants must still hold.

use std::collections::HashMap;

use audit::Accepted;
use firstcome_cli::commands::{rebuild, reconcile};
use platform::event_keys::EventKeys;

use crate::helpers::{operator_settings, EventSnapshot, TestEnv};
use crate::pipeline_harness::{drain, open_event, seed_crowd, submit, Pipeline, Topology};

struct LostSecond {
    env: TestEnv,
    pipeline: Pipeline,
    event_id: String,
    crowd: Vec<String>,
    accepted: Vec<Accepted>,
    redis: platform::redis::Connection,
}

/// Five units: two winners before the snapshot, `lost` winners in the lost
/// batch (paid and committed), then Redis goes back to the snapshot.
async fn lose_the_last_batch(lost: usize) -> LostSecond {
    let env = TestEnv::new().await;
    let seeded = seed_crowd(&env, 12, 0).await;
    let event_id = open_event(&env, &seeded, 5, 0).await;
    let crowd = seeded.eligible;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");

    let mut accepted = Vec::new();
    let first = submit(&pipeline, &event_id, &crowd[0..2], 0.0).await;
    assert_eq!(first.count(202), 2, "{:?}", first.by_status);
    accepted.extend(first.accepted.clone());
    drain(&env, &pipeline, &event_id, &accepted).await;

    let snapshot = EventSnapshot::take(&mut redis, &event_id).await;

    let batch = submit(&pipeline, &event_id, &crowd[2..2 + lost], 0.0).await;
    assert_eq!(batch.count(202), lost, "{:?}", batch.by_status);
    accepted.extend(batch.accepted.clone());
    let before = drain(&env, &pipeline, &event_id, &accepted).await;
    assert!(before.all_hold(), "{:#?}", before.failing());
    assert_eq!(before.tally.sent, 2 + lost as i64, "{:?}", before.tally);

    snapshot.restore(&mut redis).await;
    LostSecond { env, pipeline, event_id, crowd, accepted, redis }
}

#[tokio::test]
async fn a_restored_redis_pays_nobody_twice_and_never_past_the_stock() {
    // Four of five units held, two of them forgotten: Redis believes three
    // are left, so ingest admits everyone who posts now.
    let LostSecond { env, pipeline, event_id, crowd, mut accepted, mut redis } = lose_the_last_batch(2).await;

    // While the loss exists, reconcile reports it.
    let while_lost = reconcile::run(&operator_settings(&env), &event_id, Some(&pipeline.provider_url), false)
        .await
        .expect("reconcile");
    assert!(!while_lost.report.all_hold(), "reconcile must report the lost second: {:?}", while_lost.report.tally);

    // A repeat member of the lost batch (Redis forgot their mark) and three
    // new members post.
    // The repeat member posts alone first: once the newcomers are in flight,
    // the last unit may go and a late newcomer hear 410 before the repeat is
    // admitted.
    let repeat = crowd[2].clone();
    let newcomers = crowd[5..8].to_vec();
    let after = submit(&pipeline, &event_id, std::slice::from_ref(&repeat), 0.0).await;
    assert_eq!(after.count(202), 1, "Redis forgot the repeat member's mark: {:?}", after.by_status);
    accepted.extend(after.accepted.clone());
    let late = submit(&pipeline, &event_id, &newcomers, 0.0).await;
    // The stock stage knows one unit is left: once a newcomer holds it the
    // event is sold out, and a newcomer still in flight hears 410.
    assert_eq!(late.count(202) + late.count(410), 3, "{:?}", late.by_status);
    assert!(late.count(202) >= 1, "{:?}", late.by_status);
    accepted.extend(late.accepted.clone());

    let report = drain(&env, &pipeline, &event_id, &accepted).await;
    pipeline.stop().await;
    assert!(report.all_hold(), "invariants after the lost second: {:#?}", report.failing());
    let t = &report.tally;
    assert_eq!(t.provider_gifts, 5, "never past the stock: {t:?}");
    assert_eq!(t.sent, 5, "{t:?}");

    assert_eq!(
        t.entries as usize,
        accepted.len(),
        "every 202 entry is recorded, the repeat member's second one too: {t:?}"
    );

    // Every gift went to a distinct member; the repeat member has one.
    let stores = audit::Stores::connect(&env.admin_database(), &env.redis_admin()).await.expect("stores");
    let db = stores.db().await.expect("db");
    let rows = db
        .query(
            "SELECT user_id, count(*) FROM gift_dispatches WHERE event_id = $1 AND status = 'SENT' GROUP BY user_id",
            &[&event_id],
        )
        .await
        .expect("dispatches");
    let per_member: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(per_member.values().all(|&n| n == 1), "{per_member:?}");
    assert_eq!(per_member.get(&repeat), Some(&1));
    let paid_newcomers = newcomers.iter().filter(|n| per_member.contains_key(*n)).count();
    assert_eq!(paid_newcomers, 1, "one unit was left for the three newcomers: {per_member:?}");
    let repeat_entry = after.accepted.iter().find(|a| a.member == repeat).expect("repeat accepted");
    let outcome: String = db
        .query_one("SELECT outcome FROM event_entries WHERE entry_id = $1::text::uuid", &[&repeat_entry.entry_id])
        .await
        .expect("repeat entry recorded")
        .get(0);
    assert_eq!(outcome, "ALREADY_WON", "the stock stage re-checked the repeat member against the log");

    // Redis was repaired from the log: it agrees with the ledger again.
    let keys = EventKeys::new(&event_id);
    let stock: i64 = redis::cmd("GET").arg(&keys.stock).query_async(&mut redis).await.expect("stock");
    assert_eq!(stock, 0, "five of five units held");
}

#[tokio::test]
async fn rebuild_redis_restores_the_lost_batch_from_the_log() {
    let LostSecond { env, pipeline, event_id, accepted, mut redis, .. } = lose_the_last_batch(3).await;
    let keys = EventKeys::new(&event_id);
    let winners: i64 = redis::cmd("HLEN").arg(&keys.winners).query_async(&mut redis).await.expect("winners");
    assert_eq!(winners, 2, "the snapshot held two winners");

    let report = rebuild::redis::rebuild(&operator_settings(&env), &event_id).await.expect("rebuild");
    assert_eq!(report.winners_after, 5, "{report:?}");
    assert_eq!(report.stock_after, 0, "{report:?}");

    let stores = audit::Stores::connect(&env.admin_database(), &env.redis_admin()).await.expect("stores");
    let checked = audit::check(&stores, &event_id, &accepted, Some(&pipeline.provider_url)).await.expect("check");
    pipeline.stop().await;
    assert!(checked.all_hold(), "after the rebuild, before any new entry: {:#?}", checked.failing());
    let status: Option<String> =
        redis::cmd("HGET").arg(&keys.meta).arg("status").query_async(&mut redis).await.expect("status");
    // Every unit is held, yet the line still admits (5 tickets of 5 + 100):
    // sold out means the tickets reached the units plus the line's depth.
    assert_eq!(status.as_deref(), Some("open"));
    let issued: i64 = redis::cmd("GET").arg(&keys.ticket).query_async(&mut redis).await.expect("ticket");
    assert_eq!(issued, 5, "the ticket counter came back from the log");
    // The first-entry marks are back: a winner of the lost batch gets 409.
    let entered: HashMap<String, String> =
        redis::cmd("HGETALL").arg(&keys.entered).query_async(&mut redis).await.expect("entered");
    assert_eq!(entered.len(), 5, "{entered:?}");
}

/// `firstcome rebuild redis` on an event Redis lost whole: meta and
/// eligibility come back from PostgreSQL (`stock_processor::restore`, the
/// stage's own), the counter from the log. An event PostgreSQL does not
/// know is refused, nothing written.
#[tokio::test]
async fn rebuild_redis_restores_an_event_lost_whole_and_refuses_an_unknown_one() {
    let env = TestEnv::new().await;
    let seeded = seed_crowd(&env, 3, 0).await;
    let event_id = open_event(&env, &seeded, 2, 0).await;
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let keys = EventKeys::new(&event_id);
    let eligible_before: Vec<String> =
        redis::cmd("SMEMBERS").arg(&keys.eligible).query_async(&mut redis).await.expect("eligible");
    let () = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut redis).await.expect("DEL");

    let report = rebuild::redis::rebuild(&operator_settings(&env), &event_id).await.expect("rebuilt");
    assert_eq!(report.stock_after, 2, "{report:?}");
    let mut eligible: Vec<String> =
        redis::cmd("SMEMBERS").arg(&keys.eligible).query_async(&mut redis).await.expect("eligible");
    let mut expected = eligible_before.clone();
    eligible.sort();
    expected.sort();
    assert_eq!(eligible, expected, "the eligible set, as event create loaded it");
    let meta = platform::event_keys::EventMeta::load(&mut redis, &event_id).await.expect("meta").expect("meta back");
    assert_eq!(meta.for_sale, 2);

    let unknown = format!("ev-{}", uuid::Uuid::new_v4());
    let refused = rebuild::redis::rebuild(&operator_settings(&env), &unknown).await.expect_err("unknown event");
    assert!(refused.to_string().contains("no event"), "{refused:#}");
    let written: i64 =
        redis::cmd("EXISTS").arg(&EventKeys::new(&unknown).all()[..]).query_async(&mut redis).await.expect("EXISTS");
    assert_eq!(written, 0);
}
