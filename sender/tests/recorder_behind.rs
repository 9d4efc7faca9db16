//! A missing entry is judged forged only once the recorder has read past it:
//! a genuine WON whose entry the recorder has not recorded yet is never
//! dead-lettered because time passed, whatever `dispatch.entry_deadline_ms`
//! says. The recorder's progress is its group's committed offsets on
//! `survey-submitted`, committed here as the recorder commits them (after
//! writing what it read); its entries table is written as it writes it.

mod common;

use std::time::{Duration, Instant};

use common::{RunningSender, Sim, TestEnv};
use provider_sim::Faults;
use sender::Settings;
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(60);
/// Tiny, so that without the recorder's progress the WON would be refused at once.
const DEADLINE: Duration = Duration::from_millis(200);
/// Batch retries that show the WON judged past its deadline more than once
/// (the loop's backoff doubles from 100 ms: the fifth retry comes seconds
/// after the first look, well past `DEADLINE`).
const RETRIES_PAST_DEADLINE: f64 = 5.0;

fn settings(env: &TestEnv, sim: &Sim) -> Settings {
    let mut settings = env.sender_settings(&sim.url);
    settings.dispatch.entry_wait_ms = 100;
    settings.dispatch.entry_deadline_ms = DEADLINE.as_millis() as u64;
    settings
}

/// Waits until the sender has retried the batch past the deadline several
/// times, or dead-lettered something; returns the dead letters then.
async fn held_or_dead_lettered(env: &TestEnv, sender: &RunningSender, published: Instant) -> usize {
    let retries = sender.batch_retries().await;
    wait_for("the WON held past its deadline, or dead-lettered", WAIT, || async {
        env.dead_letter_count().await > 0
            || (published.elapsed() > 2 * DEADLINE && sender.batch_retries().await >= retries + RETRIES_PAST_DEADLINE)
    })
    .await;
    env.dead_letter_count().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_whose_entry_the_recorder_has_not_read_is_held_past_the_deadline_then_paid() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 41).await;
    env.seed_member("m1", "010-7200-0001").await;
    // The recorder has read and committed every entry before this one.
    let earlier = env.won_in(&env.event_id, "m0", 1);
    env.submit_entry(&earlier).await;
    env.recorder_commits_to_the_end().await;
    let sender = RunningSender::start(settings(&env, &sim)).await;

    // Ingest wrote the entry, the stock stage decided it; the recorder is behind.
    let won = env.won_in(&env.event_id, "m1", 2);
    env.submit_entry(&won).await;
    let published = Instant::now();
    env.publish_unrecorded(&won).await;

    let dead = held_or_dead_lettered(&env, &sender, published).await;
    assert_eq!(dead, 0, "a genuine WON dead-lettered because the recorder was behind");
    assert!(env.claims().await.is_empty(), "claimed before its entry was recorded");
    assert!(sim.gifts().await.is_empty(), "paid before its entry was recorded");
    let metrics = sender.metrics().await;
    assert!(
        testkit::metric(&metrics, "firstcome_sender_awaiting_recorder_total", &[]).unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    // The recorder catches up: it writes the entry, then commits past it.
    env.record_entry(&won).await;
    env.recorder_commits_to_the_end().await;
    wait_for("the gift sent", WAIT, || async { env.dispatch_rows().await.len() == 1 }).await;
    wait_for("caught up", WAIT, || env.caught_up()).await;
    assert_eq!(env.dispatch_rows().await[0].entry_id, won.entry_id);
    assert_eq!(sim.gifts().await.len(), 1);
    assert_eq!(env.dead_letter_count().await, 0, "nothing dead-lettered");
    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_won_is_dead_lettered_once_the_recorder_has_read_past_the_deadline() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 42).await;
    env.seed_member("m1", "010-7200-0002").await;
    env.seed_member("m2", "010-7200-0003").await;
    // Real entries exist (the watermarks are not zero) and the recorder has read them all.
    let honest = env.won_in(&env.event_id, "m1", 1);
    env.submit_entry(&honest).await;
    env.recorder_commits_to_the_end().await;
    let sender = RunningSender::start(settings(&env, &sim)).await;

    // A WON for a member who never entered: no entry in `survey-submitted`.
    let forged = env.won_in(&env.event_id, "m2", 2);
    env.publish_unrecorded(&forged).await;

    let dead = env.dead_decisions(1, WAIT).await;
    assert_eq!(dead[0].entry_id, forged.entry_id);
    wait_for("caught up", WAIT, || env.caught_up()).await;
    assert!(!env.claims().await.contains_key(&forged.entry_id), "no claim for the forged WON");
    assert!(env.dispatch_rows().await.is_empty());
    assert!(sim.gifts().await.is_empty(), "never paid");
    sender.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_won_held_while_the_recorder_is_behind_is_dead_lettered_once_it_catches_up() {
    let env = TestEnv::new().await;
    let sim = Sim::start(Faults::default(), 43).await;
    env.seed_member("m2", "010-7200-0004").await;
    let sender = RunningSender::start(settings(&env, &sim)).await;

    // A real entry of someone else the recorder has not read yet.
    let other = env.won_in(&env.event_id, "m1", 1);
    env.submit_entry(&other).await;
    let forged = env.won_in(&env.event_id, "m2", 2);
    let published = Instant::now();
    env.publish_unrecorded(&forged).await;

    let dead = held_or_dead_lettered(&env, &sender, published).await;
    assert_eq!(dead, 0, "refused before the recorder had read past it");
    // The recorder reads everything it was behind on: the entry is still not there.
    env.recorder_commits_to_the_end().await;
    let dead = env.dead_decisions(1, WAIT).await;
    assert_eq!(dead[0].entry_id, forged.entry_id);
    wait_for("caught up", WAIT, || env.caught_up()).await;
    assert!(env.claims().await.is_empty(), "no claim for the forged WON");
    assert!(sim.gifts().await.is_empty(), "never paid");
    sender.stop().await;
    sim.stop().await;
}
