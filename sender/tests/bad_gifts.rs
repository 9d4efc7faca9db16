//! One bad gift never holds the others: a phone the provider would refuse as
//! malformed fails on its own (unit returned), and a request the provider
//! rejects is dead-lettered on its own, while the rest of the batch is sent
//! and committed.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{ids, RunningSender, Sim, TestEnv};
use provider_sim::Faults;
use schemas::{DispatchStatus, GiftDispatch, StockRelease};
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_of_unicode_whitespace_fails_alone_and_the_others_are_sent() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 31).await;
    let mut good = Vec::new();
    for i in 0..4 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-7000-{i:04}")).await;
        good.push(env.won_in(&env.event_id, &member, i + 1));
    }
    // PostgreSQL's btrim keeps EM SPACEs; the provider's trim does not (400).
    env.seed_member("blank", "\u{2003}\u{2003}").await;
    let bad = env.won_in(&env.event_id, "blank", 5);
    for decision in good.iter().chain(std::iter::once(&bad)) {
        env.publish(decision).await;
    }

    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;
    wait_for("every gift resolved and the batch committed", WAIT, || async {
        env.dispatch_rows().await.len() == 5 && env.caught_up().await
    })
    .await;

    // The others are sent.
    let gifts = sim.gifts().await;
    assert_eq!(ids(gifts.iter().map(|g| g.idempotency_key.as_str())), ids(good.iter().map(|d| d.entry_id.as_str())));
    let rows: HashMap<String, _> = env.dispatch_rows().await.into_iter().map(|r| (r.entry_id.clone(), r)).collect();
    assert!(good.iter().all(|d| rows[&d.entry_id].status == "SENT"), "{rows:?}");

    // The bad one: a definite FAILED invalid_phone, no provider call, its unit returned.
    let row = &rows[&bad.entry_id];
    assert_eq!((row.status.as_str(), row.reason.as_deref(), row.attempts), ("FAILED", Some("invalid_phone"), 0));
    let released: Vec<StockRelease> =
        env.read_events(&env.topics.stock_released, WAIT, |e: &[StockRelease]| !e.is_empty()).await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!((released[0].entry_id.as_str(), released[0].unit_no), (bad.entry_id.as_str(), 5));
    let dispatched: Vec<GiftDispatch> =
        env.read_events(&env.topics.gift_dispatched, WAIT, |e: &[GiftDispatch]| e.len() >= 5).await;
    assert!(dispatched.iter().any(|d| d.entry_id == bad.entry_id && d.status == DispatchStatus::Failed));
    assert_eq!(env.claims().await[&bad.entry_id].2, "released");
    assert_eq!(env.payout_claimed(&env.event_id).await, 4);

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_provider_rejects_is_dead_lettered_alone_and_keeps_its_claim() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 32).await;
    // An event whose gift has face value 0: the provider answers 400 invalid_request.
    let broken = env.create_event(10, 0, 0).await;
    let mut good = Vec::new();
    for i in 0..3 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-7100-{i:04}")).await;
        good.push(env.won_in(&env.event_id, &member, i + 1));
    }
    env.seed_member("m9", "010-7100-0009").await;
    let rejected = env.won_in(&broken, "m9", 1);
    env.publish(&rejected).await;
    for decision in &good {
        env.publish(decision).await;
    }

    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;
    wait_for("the good gifts sent and the batch committed", WAIT, || async {
        env.dispatch_rows().await.len() == 3 && env.caught_up().await
    })
    .await;

    let gifts = sim.gifts().await;
    assert_eq!(ids(gifts.iter().map(|g| g.idempotency_key.as_str())), ids(good.iter().map(|d| d.entry_id.as_str())));
    // Dead-lettered for an operator; never FAILED, never compensated.
    assert_eq!(env.dead_decisions(1, WAIT).await, vec![rejected.clone()]);
    assert!(env.dispatch_rows().await.iter().all(|r| r.entry_id != rejected.entry_id));
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());
    // Its claim stays, so neither it (replayed) nor another entry of m9 is paid twice.
    assert_eq!(env.claims().await[&rejected.entry_id].2, "claimed");
    assert_eq!(env.payout_claimed(&broken).await, 1);

    sender.stop().await;
    sim.stop().await;
}
