//! The sender against the real stack (Kafka, registry, PostgreSQL) and the
//! provider simulator: one gift per won entry, under faults and redeliveries;
//! definite failures recorded and compensated; poison dead-lettered.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{ids, RunningSender, Sim, TestEnv, GIFT_AMOUNT, GIFT_PRODUCT};
use provider_sim::Faults;
use schemas::{DispatchStatus, GiftDispatch, Outcome, StockRelease};
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_won_entry_gets_exactly_one_gift_despite_faults_and_redeliveries() {
    let env = TestEnv::new().await;
    let faults = Faults {
        latency_ms: 2,
        jitter_ms: 10,
        transient_failure_rate: 0.3,
        timeout_after_issue_rate: 0.1,
        hang_ms: 1_000,
        ..Faults::default()
    };
    let sim = Sim::start(faults, 7).await;

    // 12 winners, 3 losers; 4 winners' decisions delivered twice.
    let mut won = Vec::new();
    for i in 0..12 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-1000-{i:04}")).await;
        won.push(env.decision(&member, Outcome::Won, Some(i + 1)));
    }
    let mut lost = Vec::new();
    for i in 12..15 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-1000-{i:04}")).await;
        lost.push(env.decision(&member, Outcome::SoldOut, None));
    }
    for decision in won.iter().chain(&lost).chain(&won[..4]) {
        env.publish(decision).await;
    }

    let mut settings = env.sender_settings(&sim.url);
    settings.provider.timeout_ms = 300;
    settings.provider.concurrency = 4;
    let sender = RunningSender::start(settings).await;

    let won_ids = ids(won.iter().map(|d| d.entry_id.as_str()));
    wait_for("a dispatch row per won entry", WAIT, || async { env.dispatch_rows().await.len() >= won.len() }).await;
    wait_for("the outbox drained", WAIT, || async { env.outbox_counts().await.1 == 0 }).await;

    // Ledger: one SENT row per won entry, nothing for the losers.
    let rows = env.dispatch_rows().await;
    assert_eq!(rows.len(), won.len());
    assert_eq!(ids(rows.iter().map(|r| r.entry_id.as_str())), won_ids);
    assert!(rows.iter().all(|r| r.status == "SENT" && r.reason.is_none() && r.attempts >= 1), "{rows:?}");
    let units: HashMap<&str, i32> = won.iter().map(|d| (d.entry_id.as_str(), d.unit_no.unwrap())).collect();
    assert!(rows.iter().all(|r| units[r.entry_id.as_str()] == r.unit_no));

    // Provider: exactly one gift per won entry, of the event's product.
    let gifts = sim.gifts().await;
    assert_eq!(gifts.len(), won.len(), "one gift per won entry, no more");
    assert_eq!(ids(gifts.iter().map(|g| g.idempotency_key.as_str())), won_ids);
    assert!(gifts.iter().all(|g| g.product == GIFT_PRODUCT && g.amount == GIFT_AMOUNT));
    let gift_of: HashMap<&str, &str> = gifts.iter().map(|g| (g.idempotency_key.as_str(), g.gift_id.as_str())).collect();
    assert!(rows.iter().all(|r| r.provider_ref.as_deref() == Some(gift_of[r.entry_id.as_str()])));

    // Kafka: a SENT GiftDispatch per won entry, carrying the provider's id.
    let dispatched: Vec<GiftDispatch> = env
        .read_events(&env.topics.gift_dispatched, WAIT, |e: &[GiftDispatch]| {
            ids(e.iter().map(|d| d.entry_id.as_str())).len() >= won.len()
        })
        .await;
    assert_eq!(ids(dispatched.iter().map(|d| d.entry_id.as_str())), won_ids);
    for d in &dispatched {
        assert_eq!(d.status, DispatchStatus::Sent);
        assert_eq!(d.provider_ref.as_deref(), Some(gift_of[d.entry_id.as_str()]));
        assert_eq!(d.event_id, env.event_id);
    }
    let released = env.published::<StockRelease>(&env.topics.stock_released).await;
    assert!(released.is_empty(), "nothing compensated: {released:?}");

    // Redelivery: every won decision again, after their outcomes are recorded.
    let (outbox_rows, _) = env.outbox_counts().await;
    let attempts_before: HashMap<String, i32> = rows.iter().map(|r| (r.entry_id.clone(), r.attempts)).collect();
    for decision in &won {
        env.publish(decision).await;
    }
    wait_for("the group consumed the redeliveries", WAIT, || env.caught_up()).await;
    assert_eq!(env.outbox_counts().await.0, outbox_rows, "no new outcome for a recorded entry");
    assert_eq!(sim.gifts().await.len(), won.len(), "no new gift");
    let attempts_after: HashMap<String, i32> =
        env.dispatch_rows().await.into_iter().map(|r| (r.entry_id, r.attempts)).collect();
    assert_eq!(attempts_after, attempts_before);

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_phones_fail_and_return_their_units_and_poison_is_dead_lettered() {
    let env = TestEnv::new().await;
    let refused = ["010-2000-0001", "010-2000-0003"];
    let sim =
        Sim::start(Faults { refused_phones: refused.iter().map(|p| p.to_string()).collect(), ..Faults::default() }, 9)
            .await;

    let mut won = Vec::new();
    for i in 0..6 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-2000-{i:04}")).await;
        won.push(env.decision(&member, Outcome::Won, Some(i + 1)));
    }
    // A winner the shop's replica does not know: no phone to send to.
    let ghost = env.decision("ghost", Outcome::Won, Some(7));
    env.publish_poison("m0", b"definitely not avro").await;
    for decision in won.iter().chain(std::iter::once(&ghost)) {
        env.publish(decision).await;
    }

    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;
    let all = won.len() + 1;
    wait_for("a dispatch row per won entry", WAIT, || async { env.dispatch_rows().await.len() >= all }).await;
    wait_for("the outbox drained", WAIT, || async { env.outbox_counts().await.1 == 0 }).await;

    let failed_ids = ids([won[1].entry_id.as_str(), won[3].entry_id.as_str(), ghost.entry_id.as_str()]);
    let rows = env.dispatch_rows().await;
    assert_eq!(rows.len(), all);
    for row in &rows {
        if row.entry_id == ghost.entry_id {
            assert_eq!((row.status.as_str(), row.reason.as_deref()), ("FAILED", Some("no_phone")));
            assert_eq!(row.attempts, 0, "no provider call without a phone");
        } else if failed_ids.contains(&row.entry_id) {
            assert_eq!((row.status.as_str(), row.reason.as_deref()), ("FAILED", Some("phone_refused")));
            assert!(row.provider_ref.is_none());
        } else {
            assert_eq!(row.status, "SENT");
        }
    }

    // No gift for a failed entry.
    let gifts = sim.gifts().await;
    let gifted = ids(gifts.iter().map(|g| g.idempotency_key.as_str()));
    assert_eq!(gifts.len(), won.len() - 2);
    assert!(gifted.is_disjoint(&failed_ids));

    // A StockRelease per failed entry, with its unit; FAILED GiftDispatch records.
    let released: Vec<StockRelease> = env
        .read_events(&env.topics.stock_released, WAIT, |e: &[StockRelease]| {
            ids(e.iter().map(|r| r.entry_id.as_str())).len() >= 3
        })
        .await;
    assert_eq!(ids(released.iter().map(|r| r.entry_id.as_str())), failed_ids);
    let units: HashMap<&str, i32> =
        won.iter().chain(std::iter::once(&ghost)).map(|d| (d.entry_id.as_str(), d.unit_no.unwrap())).collect();
    assert!(released.iter().all(|r| units[r.entry_id.as_str()] == r.unit_no), "{released:?}");

    let dispatched: Vec<GiftDispatch> = env
        .read_events(&env.topics.gift_dispatched, WAIT, |e: &[GiftDispatch]| {
            ids(e.iter().map(|d| d.entry_id.as_str())).len() >= all
        })
        .await;
    let failed_records: HashSet<String> =
        dispatched.iter().filter(|d| d.status == DispatchStatus::Failed).map(|d| d.entry_id.clone()).collect();
    assert_eq!(failed_records, failed_ids);

    // The poison record went to the dead-letter topic untouched.
    let dead = env.dead_letters(1, WAIT).await;
    assert_eq!(dead, vec![b"definitely not avro".to_vec()]);

    // Health reports the real dependencies.
    let health: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/healthz", sender.ops_port)).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    for dep in ["postgres", "kafka", "registry"] {
        assert_eq!(health["checks"][dep], "ok", "{health}");
    }

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_is_retried_never_compensated() {
    let env = TestEnv::new().await;
    // Every issue call fails with 503: nothing definite, ever, until the provider recovers.
    let sim = Sim::start(Faults { transient_failure_rate: 1.0, ..Faults::default() }, 11).await;
    let mut won = Vec::new();
    for i in 0..4 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-4000-{i:04}")).await;
        won.push(env.decision(&member, Outcome::Won, Some(i + 1)));
    }
    for decision in &won {
        env.publish(decision).await;
    }
    let mut settings = env.sender_settings(&sim.url);
    settings.provider.max_attempts = 2;
    let sender = RunningSender::start(settings).await;

    // While the provider is down: no outcome, no compensation, offsets not committed.
    wait_for("the batch retried twice", WAIT, || async { sender.batch_retries().await >= 2.0 }).await;
    assert!(env.dispatch_rows().await.is_empty(), "nothing recorded while the outcome is not definite");
    assert_eq!(env.outbox_counts().await.0, 0, "nothing released");
    assert!(!env.caught_up().await, "the batch is not committed");

    // The provider recovers: the same batch, retried, sends every gift once.
    let cleared = reqwest::Client::new()
        .put(format!("{}/admin/faults", sim.url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success());
    wait_for("every gift sent after recovery", WAIT, || async {
        let rows = env.dispatch_rows().await;
        rows.len() == won.len() && rows.iter().all(|r| r.status == "SENT")
    })
    .await;
    assert_eq!(sim.gifts().await.len(), won.len());
    wait_for("the group committed", WAIT, || env.caught_up()).await;
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());

    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_provider_url_fails_no_winner_and_compensates_nothing() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 13).await;
    let mut won = Vec::new();
    for i in 0..3 {
        let member = format!("m{i}");
        env.seed_member(&member, &format!("010-5000-{i:04}")).await;
        won.push(env.decision(&member, Outcome::Won, Some(i + 1)));
    }
    for decision in &won {
        env.publish(decision).await;
    }
    // Every provider call answers 404: our configuration is wrong, not the winners.
    let sender = RunningSender::start(env.sender_settings(&format!("{}/nope", sim.url))).await;

    wait_for("a client_error provider call", WAIT, || async {
        let text = sender.metrics().await;
        testkit::metric(&text, "firstcome_sender_provider_calls_total", &[("result", "client_error")]).is_some()
    })
    .await;
    wait_for("the batch retried twice", WAIT, || async { sender.batch_retries().await >= 2.0 }).await;

    assert!(env.dispatch_rows().await.is_empty(), "no FAILED (or any) row for a winner");
    assert_eq!(env.outbox_counts().await.0, 0, "no outcome, no StockRelease in the outbox");
    assert!(!env.caught_up().await, "the batch is not committed");
    assert!(sim.gifts().await.is_empty());
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());
    assert!(env.published::<GiftDispatch>(&env.topics.gift_dispatched).await.is_empty());

    sender.stop().await;
    sim.stop().await;
}
