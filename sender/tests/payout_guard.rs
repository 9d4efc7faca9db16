//! The payout guard against the real stack: WON records forged straight into
//! `stock-decided` (what a forgetful Redis, a replay or a hostile producer
//! would send) pay no one twice and never past the stock. Every refusal is
//! visible: a `payout_refusals` row, the record in `stock-decided.dlq`, the
//! metric; and the legitimate gifts are still sent.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{ids, RunningSender, Sim, TestEnv};
use provider_sim::Faults;
use schemas::{DispatchStatus, GiftDispatch, StockRelease};
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(60);

/// Whether `/metrics` shows a refusal counted with `reason`.
fn counts_refusal(metrics: &str, reason: &str) -> bool {
    metrics.lines().any(|line| {
        line.starts_with("firstcome_sender_payout_refusals_total")
            && line.contains(&format!("reason=\"{reason}\""))
            && line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 1.0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_entry_of_a_member_already_paid_is_refused_and_never_sent() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 21).await;
    env.seed_member("m1", "010-6000-0001").await;
    env.seed_member("m2", "010-6000-0002").await;
    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;

    let first = env.won_in(&env.event_id, "m1", 1);
    env.publish(&first).await;
    wait_for("m1's first gift sent", WAIT, || async { env.dispatch_rows().await.len() == 1 }).await;

    // A forged WON: another entry id for m1 (as a Redis that forgot m1 would decide).
    let second = env.won_in(&env.event_id, "m1", 2);
    let other = env.won_in(&env.event_id, "m2", 3);
    env.publish(&second).await;
    env.publish(&other).await;
    wait_for("m2 sent, m1's second refused, the batch committed", WAIT, || async {
        env.dispatch_rows().await.len() == 3 && env.caught_up().await
    })
    .await;

    // Zero extra gifts at the provider; the legitimate ones sent.
    let gifts = sim.gifts().await;
    assert_eq!(
        ids(gifts.iter().map(|g| g.idempotency_key.as_str())),
        ids([first.entry_id.as_str(), other.entry_id.as_str()])
    );
    let rows = env.dispatch_rows().await;
    for row in &rows {
        let expected = if row.entry_id == second.entry_id { "REFUSED" } else { "SENT" };
        assert_eq!(row.status, expected, "{rows:?}");
    }
    // The member is told: a REFUSED dispatch is announced for the refused WON.
    let told = env
        .read_events(&env.topics.gift_dispatched, WAIT, |e: &[GiftDispatch]| {
            e.iter().any(|d| d.status == DispatchStatus::Refused)
        })
        .await;
    let refused: Vec<_> = told.iter().filter(|d| d.status == DispatchStatus::Refused).collect();
    assert_eq!(refused.len(), 1, "{told:?}");
    assert_eq!(
        (refused[0].entry_id.as_str(), refused[0].reason.as_deref()),
        (second.entry_id.as_str(), Some("member_already_paid"))
    );

    // The refusal is visible: recorded, dead-lettered, counted.
    let refusals = env.refusals().await;
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[&second.entry_id], "member_already_paid");
    let dead = env.dead_decisions(1, WAIT).await;
    assert_eq!(dead, vec![second.clone()]);
    assert!(counts_refusal(&sender.metrics().await, "member_already_paid"));

    // The guard: one claim per member, sent; the refused WON holds no unit.
    let claims = env.claims().await;
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[&first.entry_id].2, "sent");
    assert!(!claims.contains_key(&second.entry_id));
    assert_eq!(env.payout_claimed(&env.event_id).await, 2);
    // Not compensated: no unit returned for the refused WON.
    let released = env.published::<StockRelease>(&env.topics.stock_released).await;
    assert!(released.is_empty(), "{released:?}");

    // A redelivered refused WON stays refused: not sent, not dead-lettered again.
    env.publish(&second).await;
    wait_for("the redelivery consumed", WAIT, || env.caught_up()).await;
    assert_eq!(sim.gifts().await.len(), 2);
    assert_eq!(env.refusals().await.len(), 1);

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_wons_than_units_for_sale_pay_only_the_units_for_sale() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 22).await;
    // 5 units, 2 kept back: 3 for sale. Five WONs of distinct members.
    let event = env.create_event(5, 2, 4_500).await;
    let mut won = Vec::new();
    for i in 0..5 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-6100-{i:04}")).await;
        won.push(env.won_in(&event, &member, i + 1));
    }
    for decision in &won {
        env.publish(decision).await;
    }
    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;
    wait_for("3 sent, 2 refused, committed", WAIT, || async {
        env.dispatch_rows().await.len() == 5 && env.refusals().await.len() == 2 && env.caught_up().await
    })
    .await;

    let gifts = sim.gifts().await;
    assert_eq!(gifts.len(), 3, "never past the units for sale");
    let rows = env.dispatch_rows().await;
    let sent: HashSet<String> = rows.iter().filter(|r| r.status == "SENT").map(|r| r.entry_id.clone()).collect();
    let told: HashSet<String> = rows.iter().filter(|r| r.status == "REFUSED").map(|r| r.entry_id.clone()).collect();
    assert_eq!(ids(gifts.iter().map(|g| g.idempotency_key.as_str())), sent);

    let refusals = env.refusals().await;
    assert!(refusals.values().all(|r| r == "stock_exhausted"), "{refusals:?}");
    assert!(sent.iter().all(|e| !refusals.contains_key(e)));
    assert_eq!(told, refusals.keys().cloned().collect(), "every refused WON answered REFUSED");
    let dead = env.dead_decisions(2, WAIT).await;
    assert_eq!(ids(dead.iter().map(|d| d.entry_id.as_str())), refusals.keys().cloned().collect());
    assert!(counts_refusal(&sender.metrics().await, "stock_exhausted"));
    assert_eq!(env.payout_claimed(&event).await, 3);
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_of_an_unknown_event_is_refused_and_never_sent() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 23).await;
    env.seed_member("m1", "010-6200-0001").await;
    env.seed_member("m2", "010-6200-0002").await;
    let forged = env.won_in("ev-nowhere", "m1", 1);
    let legit = env.won_in(&env.event_id, "m2", 1);
    env.publish(&forged).await;
    env.publish(&legit).await;
    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;
    wait_for("legit sent, forged refused, committed", WAIT, || async {
        env.dispatch_rows().await.len() == 1 && env.refusals().await.len() == 1 && env.caught_up().await
    })
    .await;

    let gifts = sim.gifts().await;
    assert_eq!(ids(gifts.iter().map(|g| g.idempotency_key.as_str())), ids([legit.entry_id.as_str()]));
    assert_eq!(env.refusals().await[&forged.entry_id], "unknown_event");
    assert_eq!(env.dead_decisions(1, WAIT).await, vec![forged.clone()]);
    assert!(counts_refusal(&sender.metrics().await, "unknown_event"));
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_won_is_sent_once_on_its_own_claim() {
    let env = TestEnv::new().await;
    // The provider is down at first: the batch is retried, and each run finds the same claim.
    let sim = Sim::start(Faults { transient_failure_rate: 1.0, ..Faults::default() }, 24).await;
    env.seed_member("m1", "010-6300-0001").await;
    let won = env.won_in(&env.event_id, "m1", 1);
    env.publish(&won).await;
    let mut settings = env.sender_settings(&sim.url);
    settings.provider.max_attempts = 2;
    let sender = RunningSender::start(settings).await;

    wait_for("the batch retried twice on its claim", WAIT, || async { sender.batch_retries().await >= 2.0 }).await;
    assert_eq!(env.claims().await.len(), 1, "one claim, whatever the retries");
    assert_eq!(env.payout_claimed(&env.event_id).await, 1);
    // Delivered again meanwhile (a replay): the same entry id.
    env.publish(&won).await;

    let cleared = reqwest::Client::new()
        .put(format!("{}/admin/faults", sim.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success());
    wait_for("sent and committed", WAIT, || async { env.dispatch_rows().await.len() == 1 && env.caught_up().await })
        .await;

    assert_eq!(sim.gifts().await.len(), 1, "one gift");
    let claims = env.claims().await;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[&won.entry_id].2, "sent");
    assert_eq!(env.payout_claimed(&env.event_id).await, 1);
    assert!(env.refusals().await.is_empty(), "its own claim is never a refusal");

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gift_releases_its_claim_for_the_next_winner_of_the_unit() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults { refused_phones: vec!["010-6400-0001".into()], ..Faults::default() }, 25).await;
    // One unit for sale.
    let event = env.create_event(1, 0, 4_500).await;
    for i in 1..=3 {
        env.seed_member(&format!("m{i}"), &format!("010-6400-{i:04}")).await;
    }
    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;

    // m1's phone is refused: FAILED, unit returned, claim released.
    let first = env.won_in(&event, "m1", 1);
    env.publish(&first).await;
    wait_for("m1 failed", WAIT, || async { env.dispatch_rows().await.len() == 1 }).await;
    assert_eq!(env.claims().await[&first.entry_id].2, "released");
    assert_eq!(env.payout_claimed(&event).await, 0, "the unit is back");
    let released: Vec<StockRelease> =
        env.read_events(&env.topics.stock_released, WAIT, |e: &[StockRelease]| !e.is_empty()).await;
    assert_eq!(ids(released.iter().map(|r| r.entry_id.as_str())), ids([first.entry_id.as_str()]));

    // The returned unit won by m2 (the next in line) claims and is sent.
    let next = env.won_in(&event, "m2", 1);
    env.publish(&next).await;
    wait_for("m2 sent", WAIT, || async { env.dispatch_rows().await.len() == 2 }).await;
    assert_eq!(env.payout_claimed(&event).await, 1);

    // A released member is never paid again, and the unit is spent.
    let again = env.won_in(&event, "m1", 1);
    let late = env.won_in(&event, "m3", 1);
    env.publish(&again).await;
    env.publish(&late).await;
    wait_for("both refused and committed", WAIT, || async { env.refusals().await.len() == 2 && env.caught_up().await })
        .await;
    let refusals = env.refusals().await;
    assert_eq!(refusals[&again.entry_id], "member_already_paid");
    assert_eq!(refusals[&late.entry_id], "stock_exhausted");
    let gifts = sim.gifts().await;
    assert_eq!(ids(gifts.iter().map(|g| g.idempotency_key.as_str())), ids([next.entry_id.as_str()]));
    // m1's FAILED, m2's SENT, and the two refusals answered REFUSED.
    let rows = env.dispatch_rows().await;
    let refused: HashSet<String> = rows.iter().filter(|r| r.status == "REFUSED").map(|r| r.entry_id.clone()).collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(refused, ids([again.entry_id.as_str(), late.entry_id.as_str()]));

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_racing_from_many_instances_never_pass_the_stock_nor_pay_a_member_twice() {
    use sender::payout_guard::{Claim, PayoutGuard, RefusalReason};
    use sender::store::WonEntry;

    let env = TestEnv::new().await;
    let event = env.create_event(7, 2, 4_500).await;
    // Ten members with two entries each, claimed at once from 20 tasks (as
    // instances that each believe they own the record would).
    let entries: Vec<WonEntry> = (0..20)
        .map(|i| WonEntry {
            event_id: event.clone(),
            entry_id: uuid::Uuid::new_v4(),
            user_id: format!("m{}", i % 10),
            unit_no: i + 1,
        })
        .collect();
    let tasks: Vec<_> = entries
        .iter()
        .cloned()
        .map(|entry| {
            let guard = PayoutGuard::new(env.pool.clone());
            tokio::spawn(async move { (entry.clone(), guard.claim(&entry).await.expect("claim answered")) })
        })
        .collect();
    let mut granted = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (entry, Claim::Granted { fresh: true }) => granted.push(entry),
            (entry, Claim::Refused(reason)) => refused.push((entry, reason)),
            (_, other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(granted.len(), 5, "exactly the units for sale");
    let members: HashSet<&str> = granted.iter().map(|e| e.user_id.as_str()).collect();
    assert_eq!(members.len(), 5, "one claim per member");
    assert_eq!(env.payout_claimed(&event).await, 5);
    assert_eq!(env.claims().await.len(), 5);
    assert_eq!(env.refusals().await.len(), 15);
    assert!(refused.iter().all(|(_, r)| matches!(r, RefusalReason::StockExhausted | RefusalReason::MemberAlreadyPaid)));
    // (Which reason a member's second entry gets depends on the race: both
    // are refusals, and neither holds a unit.)

    // Asked again, each finds its own answer: granted claims are reused, refusals stay.
    let guard = PayoutGuard::new(env.pool.clone());
    for entry in &granted {
        assert_eq!(guard.claim(entry).await.unwrap(), Claim::Granted { fresh: false });
    }
    for (entry, reason) in &refused {
        assert_eq!(guard.claim(entry).await.unwrap(), Claim::AlreadyRefused(*reason));
    }
    assert_eq!(env.payout_claimed(&event).await, 5);
}
