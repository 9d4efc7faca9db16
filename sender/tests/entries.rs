//! Two keys to pay: a WON produced with the stock stage's own Kafka login
//! for a member who never entered is not paid. Entries reach the entries
//! table only from `survey-submitted` (ingest's topic), so the sender pays a
//! WON only when the recorder holds its entry for that member and event; it
//! waits for a lagging recorder, then refuses, counts and dead-letters.

mod common;

use std::time::Duration;

use common::{RunningSender, Sim, TestEnv};
use platform::kafka::{EventProducer, RecordContext};
use platform::settings::Principal;
use provider_sim::Faults;
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(60);

fn counted(metrics: &str, name: &str) -> bool {
    metrics.lines().any(|line| {
        line.starts_with(name) && line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 1.0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_forged_with_the_stock_login_for_a_member_who_never_entered_is_not_paid() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 31).await;
    env.seed_member("m1", "010-7000-0001").await;
    env.seed_member("m2", "010-7000-0002").await;
    let mut settings = env.sender_settings(&sim.url);
    settings.dispatch.entry_wait_ms = 200;
    settings.dispatch.entry_deadline_ms = 1_500;
    let sender = RunningSender::start(settings).await;

    // The stock stage's own credentials: the ACLs let it write stock-decided.
    let stock =
        EventProducer::new(&env.kit.kafka_as(Principal::STOCK), env.codec.clone(), "forger").expect("stock login");
    let forged = env.won_in(&env.event_id, "m2", 1);
    stock
        .publish(&forged, RecordContext::new_root("forged".to_string(), None))
        .await
        .expect("the stock login may produce it");
    // A real winner behind it, its entry recorded.
    let honest = env.won_in(&env.event_id, "m1", 2);
    env.publish(&honest).await;

    let dead = env.dead_decisions(1, WAIT).await;
    assert_eq!(dead[0].entry_id, forged.entry_id, "the forged WON is dead-lettered");
    wait_for("the honest gift sent", WAIT, || async { env.dispatch_rows().await.len() == 1 }).await;
    wait_for("caught up", WAIT, || env.caught_up()).await;
    let rows = env.dispatch_rows().await;
    assert_eq!(rows[0].entry_id, honest.entry_id);
    assert!(!env.claims().await.contains_key(&forged.entry_id), "no claim for the forged WON");
    assert_eq!(sim.gifts().await.len(), 1, "one gift issued, the honest one");
    let metrics = sender.metrics().await;
    assert!(counted(&metrics, "firstcome_sender_won_without_entry_total"), "{metrics}");
    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_whose_entry_the_recorder_writes_late_is_paid() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 32).await;
    env.seed_member("m1", "010-7100-0001").await;
    let mut settings = env.sender_settings(&sim.url);
    settings.dispatch.entry_wait_ms = 200;
    settings.dispatch.entry_deadline_ms = 60_000;
    let sender = RunningSender::start(settings).await;

    let won = env.won_in(&env.event_id, "m1", 1);
    env.publish_unrecorded(&won).await;
    // The sender waits for the recorder: nothing claimed, nothing sent.
    wait_for("a wait for the entry counted", WAIT, || async {
        counted(&sender.metrics().await, "firstcome_sender_entry_waits_total")
    })
    .await;
    assert!(env.claims().await.is_empty(), "claimed before its entry was recorded");
    // The recorder catches up.
    env.record_entry(&won).await;
    wait_for("the gift sent", WAIT, || async { env.dispatch_rows().await.len() == 1 }).await;
    assert_eq!(sim.gifts().await.len(), 1);
    sender.stop().await;
    sim.stop().await;
}

/// Admitted in the very millisecond the event opened (the admit script reads
/// Redis' clock in ms; `events.open_at` keeps microseconds): paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_admitted_in_the_opening_millisecond_is_paid() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 32).await;
    env.seed_member("m1", "010-7100-0002").await;
    let sender = RunningSender::start(env.sender_settings(&sim.url)).await;

    let won = env.won_in(&env.event_id, "m1", 1);
    let entry_id = uuid::Uuid::parse_str(&won.entry_id).expect("a UUID entry id");
    let db = env.pool.get().await.expect("db");
    // An opening with a fraction of a millisecond, as event create writes it.
    db.execute(
        "UPDATE events SET open_at = date_trunc('milliseconds', open_at) + interval '400 microseconds' WHERE event_id = $1",
        &[&env.event_id],
    )
    .await
    .expect("open_at");
    db.execute(
        "INSERT INTO event_entries (entry_id, event_id, user_id, answers, client_channel, submitted_at, accepted_at)
         SELECT $1, $2, $3, '[]'::jsonb, 'web', now(), date_trunc('milliseconds', open_at) FROM events WHERE event_id = $2",
        &[&entry_id, &env.event_id, &won.user_id],
    )
    .await
    .expect("entry row");
    env.publish_unrecorded(&won).await;
    wait_for("the gift sent", WAIT, || async { env.dispatch_rows().await.len() == 1 }).await;
    sender.stop().await;
    sim.stop().await;
}
