//! `firstcome rebuild projections` after a real run: the PostgreSQL
//! projections replayed from Kafka equal the ones the recording group wrote
//! live, through a sell-out, refused phones (FAILED, units returned) and the
//! later entrants who took the returned units.

use std::collections::HashSet;

use firstcome_cli::commands::rebuild::{self, projections};

use crate::helpers::{operator_settings, TestEnv};
use crate::pipeline_harness::{drain, open_event, seed_crowd, submit, Pipeline, Topology};

#[tokio::test]
async fn projections_rebuilt_from_kafka_equal_the_live_ones() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 40, 0).await;
    // Every second of the first 24 members has a phone the provider refuses
    // (12 of 24, so some of the 8 winners almost surely fail).
    let (early, late) = crowd.eligible.split_at(24);
    let refused: HashSet<&String> = early.iter().step_by(2).collect();
    let members_pool = platform::member_db::replica_pool(&env.replica).expect("replica pool");
    let members_db = members_pool.get().await.expect("member replica");
    let mut refused_phones = Vec::new();
    for member in &refused {
        let row =
            members_db.query_one("SELECT phone FROM members WHERE member_id = $1", &[member]).await.expect("phone");
        refused_phones.push(row.get::<_, String>(0));
    }
    let event_id = open_event(&env, &crowd, 10, 2).await;
    let faults = provider_sim::Faults { refused_phones, ..Default::default() };
    let pipeline = Pipeline::start(&env, Topology { faults, ..Default::default() }).await.expect("pipeline started");

    // The rush sells out; some winners' phones are refused and their units return.
    let first = submit(&pipeline, &event_id, early, 0.0).await;
    let settled = drain(&env, &pipeline, &event_id, &first.accepted).await;
    assert!(settled.tally.failed >= 1, "a refused phone failed: {:?}", settled.tally);
    assert!(settled.tally.lost >= 1, "the event sold out: {:?}", settled.tally);
    // Later entrants (or the waitlist) take the returned units.
    let second = submit(&pipeline, &event_id, late, 0.0).await;
    let mut accepted = first.accepted.clone();
    accepted.extend(second.accepted.clone());
    let report = drain(&env, &pipeline, &event_id, &accepted).await;
    pipeline.stop().await;

    let outcome = projections::rebuild(&operator_settings(&env)).await.expect("rebuild");
    let printed = projections::render(&outcome);
    println!("{printed}");
    assert!(outcome.comparison.is_equal(), "rebuilt projections differ:\n{printed}");
    assert!(!outcome.kept, "an equal rebuild is dropped");

    // The comparison covered what the run made, not empty tables.
    let [entries, movements, ledger] = &outcome.comparison.tables[..] else { panic!("three tables: {printed}") };
    assert_eq!(entries.rebuilt_rows, accepted.len() as i64, "one row per accepted entry:\n{printed}");
    let t = &report.tally;
    assert_eq!(movements.rebuilt_rows, t.ledger_issued + t.ledger_returned, "{printed}");
    assert!(t.ledger_returned >= 1, "units were returned: {t:?}");
    assert_eq!(ledger.rebuilt_rows, 1, "{printed}");
    assert!(printed.contains("equal:"), "{printed}");

    // And the command itself finds them equal (exit 0), also when the log is
    // read in small batches (records of one entry in different batches, in
    // another interleaving than the live recorder saw).
    let mut small_batches = operator_settings(&env);
    small_batches.kafka.batch_max_records = 5;
    let output = rebuild::command(&small_batches, rebuild::RebuildCommand::Projections)
        .await
        .expect("firstcome rebuild projections");
    assert_eq!(output.failed, None, "{}", output.text);
}
