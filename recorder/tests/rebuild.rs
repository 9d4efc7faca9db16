//! `recorder::rebuild` against the real stack: the projection replayed from
//! Kafka into a fresh schema equals the live one, and a live table that
//! drifted from the log is reported row by row.

mod support;

use recorder::rebuild::{self, DifferenceKind};
use schemas::{DispatchStatus, Outcome, Topics};
use support::{twice, Member, Produce, TestStack, WAIT};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_kafka_equals_the_live_projection_and_finds_drift() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;
    let foreign_event = Uuid::new_v4().to_string();

    let sent = Member::new(&event, "sent");
    let failed = Member::new(&event, "failed");
    let promoted = Member::new(&event, "promoted");
    let lost = Member::new(&event, "lost");
    let second = Member {
        event_id: event.clone(),
        entry_id: Uuid::new_v4(),
        user_id: sent.user_id.clone(),
        submitted_at: schemas::now_millis(),
    };
    let pending = Member::new(&event, "pending");
    let foreign = Member::new(&foreign_event, "foreign");
    let records = vec![
        // Outcomes before entries, promotions, a FAILED before the WON, redeliveries.
        failed.dispatch(DispatchStatus::Failed),
        sent.decision(Outcome::Won, Some(1)),
        sent.entry(),
        sent.dispatch(DispatchStatus::Sent),
        failed.entry(),
        failed.decision(Outcome::Won, Some(2)),
        promoted.entry(),
        promoted.decision(Outcome::SoldOut, None),
        lost.entry(),
        lost.decision(Outcome::SoldOut, None),
        second.entry(),
        second.decision(Outcome::AlreadyWon, Some(1)),
        promoted.decision(Outcome::Won, Some(2)),
        promoted.dispatch(DispatchStatus::Sent),
        promoted.decision(Outcome::SoldOut, None),
        pending.entry(),
        foreign.entry(),
        foreign.decision(Outcome::Won, Some(1)),
    ];
    let records = twice(records);
    stack.send(&records).await;
    let poison = Produce::Raw { topic: stack.topics().stock_decided, payload: b"not avro".to_vec() };
    stack.send(&[poison]).await;

    let (_, shutdown, handle) = stack.start().await;
    stack.wait_until_committed().await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");
    assert_eq!(stack.kit.read_log(&Topics::dlq(&stack.topics().stock_decided)).await.len(), 1);

    // The rebuild equals the live tables, and its schema is dropped.
    let outcome = rebuild::run(&stack.admin_settings()).await.expect("rebuild");
    assert!(outcome.comparison.is_equal(), "{:#?}", outcome.comparison);
    assert_eq!(outcome.rebuilt.total_records(), records.len() as u64 + 1);
    assert_eq!(outcome.rebuilt.dead_letters, 1, "the poison record is refused again, not recorded");
    assert!(!outcome.kept);
    let entries = &outcome.comparison.tables[0];
    assert_eq!((entries.table, entries.live_rows, entries.rebuilt_rows), ("event_entries", 7, 7));
    assert!(!schema_exists(&stack, &outcome.rebuilt.schema).await, "an equal rebuild is dropped");

    // Drift the live tables away from the log: every kind is found.
    let client = stack.pool.get().await.expect("connection");
    client
        .execute(
            "UPDATE event_entries SET status = 'won', dispatch_status = NULL WHERE entry_id = $1",
            &[&sent.entry_id],
        )
        .await
        .expect("drift a row");
    client
        .execute("DELETE FROM stock_movements WHERE entry_id = $1 AND kind = 'returned'", &[&failed.entry_id])
        .await
        .expect("lose a movement");
    client
        .execute("UPDATE stock_ledger SET issued = issued + 1 WHERE event_id = $1", &[&event])
        .await
        .expect("drift the ledger");
    client
        .execute(
            "INSERT INTO event_entries (entry_id, event_id, user_id) VALUES ($1, $2, 'ghost')",
            &[&Uuid::new_v4(), &event],
        )
        .await
        .expect("a row the log does not have");

    let outcome = rebuild::run(&stack.admin_settings()).await.expect("rebuild");
    assert!(!outcome.comparison.is_equal());
    assert!(outcome.kept, "a differing rebuild is kept for inspection");
    let [entries, moves, ledger] = &outcome.comparison.tables[..] else { panic!("three tables") };
    assert_eq!((entries.only_live, entries.only_rebuilt, entries.differing), (1, 0, 1), "{entries:#?}");
    let drifted = entries.samples.iter().find(|d| d.kind == DifferenceKind::Differs).expect("the drifted row");
    assert_eq!(drifted.key, sent.entry_id.to_string());
    assert_eq!(drifted.columns, vec!["dispatch_status".to_string(), "status".to_string()]);
    assert_eq!((moves.only_live, moves.only_rebuilt, moves.differing), (0, 1, 0), "{moves:#?}");
    assert_eq!(moves.samples[0].key, format!("{}/returned", failed.entry_id));
    assert_eq!(ledger.differing, 1, "{ledger:#?}");
    assert_eq!(ledger.samples[0].columns, vec!["issued".to_string()]);
    assert!(schema_exists(&stack, &outcome.rebuilt.schema).await);
    rebuild::drop_schema(&stack.pool, &outcome.rebuilt.schema).await.expect("drop");
    assert!(!schema_exists(&stack, &outcome.rebuilt.schema).await);
}

async fn schema_exists(stack: &TestStack, schema: &str) -> bool {
    let client = stack.pool.get().await.expect("connection");
    client
        .query_opt("SELECT 1 FROM information_schema.schemata WHERE schema_name = $1", &[&schema])
        .await
        .expect("schemata")
        .is_some()
}
