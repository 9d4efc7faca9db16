//! The `recording` group against the real stack: Kafka, the registry and
//! PostgreSQL, each test isolated by a topic prefix, a database and event ids
//! of its own.

mod support;

use rdkafka::message::{Headers, Message};
use schemas::{DispatchStatus, Outcome, Topics};
use support::{ledger, movements, rows, twice, wait_for_retries, Member, Produce, TestStack, WAIT};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_every_entry_once_in_any_order_and_commits_after_the_database() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let topics = stack.topics();
    let event = Uuid::new_v4().to_string();
    // An event created by other tooling: no events row, no ledger row.
    let foreign_event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;

    let sent = Member::new(&event, "sent");
    let failed = Member::new(&event, "failed");
    let sold_out = Member::new(&event, "sold-out");
    let sold_out_early = Member::new(&event, "sold-out-early");
    let pending = Member::new(&event, "pending");
    let won = Member::new(&event, "won");
    let sent_early = Member::new(&event, "sent-early");
    let twice_entered = Member::new(&event, "twice");
    // The same member with a second entry id (another producer's doing).
    let second_entry = Member {
        event_id: event.clone(),
        entry_id: Uuid::new_v4(),
        user_id: twice_entered.user_id.clone(),
        submitted_at: schemas::now_millis(),
    };
    let foreign = Member::new(&foreign_event, "foreign");

    // Phase A: outcomes before their entries, and poison.
    let phase_a = || {
        vec![
            failed.decision(Outcome::Won, Some(2)),
            sold_out_early.decision(Outcome::SoldOut, None),
            sent_early.dispatch(DispatchStatus::Sent),
            sent_early.decision(Outcome::Won, Some(4)),
            foreign.decision(Outcome::Won, Some(1)),
        ]
    };
    // Phase B: the entries and the rest of the outcomes.
    let phase_b = || {
        vec![
            sent.entry(),
            sent.decision(Outcome::Won, Some(1)),
            sent.dispatch(DispatchStatus::Sent),
            failed.entry(),
            failed.dispatch(DispatchStatus::Failed),
            sold_out.entry(),
            sold_out.decision(Outcome::SoldOut, None),
            sold_out_early.entry(),
            pending.entry(),
            won.entry(),
            won.decision(Outcome::Won, Some(3)),
            sent_early.entry(),
            twice_entered.entry(),
            second_entry.entry(),
            foreign.entry(),
        ]
    };

    stack.send(&twice(phase_a())).await;
    stack.send(&[Produce::Raw { topic: topics.survey_submitted.clone(), payload: b"not avro at all".to_vec() }]).await;
    let mut bad_id = match failed.decision(Outcome::Won, Some(9)) {
        Produce::Decision(d) => d,
        _ => unreachable!(),
    };
    bad_id.entry_id = "not-a-uuid".into();
    stack.send(&[Produce::Decision(bad_id)]).await;

    let (ops_port, shutdown, handle) = stack.start().await;
    stack.wait_until_committed().await;

    // Decisions arrived first: the rows exist, without their submissions.
    let early = rows(&stack.pool).await;
    assert_eq!(early.len(), 4, "one row per entry seen so far");
    assert_eq!(early[&failed.entry_id].status, "won");
    assert!(!early[&failed.entry_id].submitted);
    assert_eq!(early[&sold_out_early.entry_id].status, "lost");
    assert_eq!(early[&sent_early.entry_id].status, "sent");
    assert_eq!(ledger(&stack.pool, &event).await, (2, 0));

    stack.send(&twice(phase_b())).await;
    stack.wait_until_committed().await;
    // Redelivery of everything, after it was all recorded once.
    stack.send(&phase_a()).await;
    stack.send(&phase_b()).await;
    stack.wait_until_committed().await;

    // The ops server answers while the loop runs.
    let http = reqwest::Client::new();
    let health = http.get(format!("http://127.0.0.1:{ops_port}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200, "healthz: {:?}", health.text().await);
    let metrics = http
        .get(format!("http://127.0.0.1:{ops_port}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(metrics.contains("firstcome_recorder_rows_total{kind=\"issued\"}"), "{metrics}");

    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");

    // One row per entry with the right status; the second entry id of a member has its own row.
    let rows = rows(&stack.pool).await;
    let expected = [
        (&sent, "sent"),
        (&failed, "failed"),
        (&sold_out, "lost"),
        (&sold_out_early, "lost"),
        (&pending, "pending"),
        (&won, "won"),
        (&sent_early, "sent"),
        (&twice_entered, "pending"),
        (&second_entry, "pending"),
        (&foreign, "won"),
    ];
    assert_eq!(rows.len(), expected.len(), "exactly one row per entry");
    for (member, status) in expected {
        let row = &rows[&member.entry_id];
        assert_eq!(row.status, status, "status of {}", member.user_id);
        assert!(row.submitted, "submission recorded for {}", member.user_id);
        assert_eq!(
            row.answers,
            Some(serde_json::json!([
                { "question": "taste", "answer": "5" },
                { "question": "again", "answer": "yes" }
            ]))
        );
    }
    let failed_row = &rows[&failed.entry_id];
    assert_eq!(failed_row.outcome.as_deref(), Some("WON"));
    assert_eq!(failed_row.unit_no, Some(2));
    assert_eq!(failed_row.dispatch_status.as_deref(), Some("FAILED"));

    // The ledger counts distinct WON and FAILED, whatever the duplicates.
    assert_eq!(ledger(&stack.pool, &event).await, (4, 1), "issued, returned");
    let moves = movements(&stack.pool).await;
    assert_eq!(moves.len(), 6, "4 issued + 1 returned for the event, 1 issued for the foreign event");
    assert_eq!(moves[&(failed.entry_id, "returned".to_string())], (event.clone(), Some(2)));
    assert_eq!(moves[&(foreign.entry_id, "issued".to_string())], (foreign_event.clone(), Some(1)));

    // Each poison record is in its dead-letter topic, once, with the reason.
    let dlq = stack.kit.read_log(&Topics::dlq(&topics.survey_submitted)).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].payload(), Some(&b"not avro at all"[..]));
    let has_reason = dlq[0].headers().map(|h| h.iter().any(|header| header.key == "dlq-error")).unwrap_or(false);
    assert!(has_reason, "dead letter carries dlq-error");
    let dlq = stack.kit.read_log(&Topics::dlq(&topics.stock_decided)).await;
    assert_eq!(dlq.len(), 1);
    assert!(stack.kit.read_log(&Topics::dlq(&topics.gift_dispatched)).await.is_empty());

    // After stopping, the committed offsets are at the end of every partition.
    let lag = stack.lag().await;
    assert!(lag.is_empty(), "uncommitted: {lag:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_commits_neither_rows_nor_offsets_and_the_batch_is_retried() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;
    let client = stack.pool.get().await.expect("connection");
    // The third statement of the batch will fail; the first two must roll back with it.
    client.batch_execute("ALTER TABLE stock_movements RENAME TO stock_movements_away").await.expect("rename");

    let member = Member::new(&event, "retried");
    stack.send(&[member.decision(Outcome::Won, Some(1))]).await;
    let (port, shutdown, handle) = stack.start().await;
    let group = stack.settings.kafka.group(recorder::GROUP);
    wait_for_retries(port, &group).await;

    assert!(rows(&stack.pool).await.is_empty(), "nothing of the failed batch is committed");
    assert!(!stack.lag().await.is_empty(), "offsets do not move past an uncommitted batch");

    client.batch_execute("ALTER TABLE stock_movements_away RENAME TO stock_movements").await.expect("rename back");
    stack.wait_until_committed().await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");

    assert_eq!(rows(&stack.pool).await[&member.entry_id].status, "won");
    assert_eq!(ledger(&stack.pool, &event).await, (1, 0));
    assert!(
        stack.kit.read_log(&Topics::dlq(&stack.topics().stock_decided)).await.is_empty(),
        "a database failure is not poison"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_retried_never_dead_lettered() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;
    let member = Member::new(&event, "patient");
    stack.send(&[member.entry()]).await;

    // A registry nobody listens on: the writer's schema cannot be fetched.
    let mut unreachable = stack.settings.clone();
    unreachable.registry.url = format!("http://127.0.0.1:{}/apis/ccompat/v7", testkit::unused_port());
    unreachable.registry.timeout_ms = 500;
    let application = recorder::Application::build(unreachable).await.expect("build");
    let port = application.ops_port();
    let shutdown = platform::CancellationToken::new();
    let handle = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    wait_for_retries(port, &stack.settings.kafka.group(recorder::GROUP)).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");

    assert!(rows(&stack.pool).await.is_empty());
    assert!(!stack.lag().await.is_empty(), "nothing committed while the registry was down");
    let topics = stack.topics();
    assert!(stack.kit.read_log(&Topics::dlq(&topics.survey_submitted)).await.is_empty(), "not poison");

    // The registry is back: the same record is recorded.
    let (_, shutdown, handle) = stack.start().await;
    stack.wait_until_committed().await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");
    let rows = rows(&stack.pool).await;
    assert_eq!(rows[&member.entry_id].status, "pending");
    assert!(rows[&member.entry_id].submitted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_database_refuses_is_dead_lettered_and_the_rest_of_the_batch_recorded() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let topics = stack.topics();
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;
    // A constraint only the poison member violates (SQLSTATE 23514): every
    // try of a batch holding its records fails the same way.
    let client = stack.pool.get().await.expect("connection");
    client
        .batch_execute("ALTER TABLE event_entries ADD CONSTRAINT t CHECK (user_id <> 'poison-member')")
        .await
        .expect("extra check");

    let poison = Member {
        event_id: event.clone(),
        entry_id: Uuid::new_v4(),
        user_id: "poison-member".into(),
        submitted_at: schemas::now_millis(),
    };
    let good: Vec<Member> = (0..4).map(|i| Member::new(&event, &format!("good{i}"))).collect();
    let mut records = vec![poison.entry(), poison.decision(Outcome::Won, Some(1))];
    for (i, member) in good.iter().enumerate() {
        records.push(member.entry());
        records.push(member.decision(Outcome::Won, Some(i as i32 + 2)));
    }
    stack.send(&records).await;

    let (port, shutdown, handle) = stack.start().await;
    // Without isolating the poison, the batches holding it would retry forever.
    stack.wait_until_committed().await;
    let metrics = testkit::metrics_text(port).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");

    let rows = rows(&stack.pool).await;
    assert_eq!(rows.len(), good.len(), "every good entry, nothing of the poison member");
    for member in &good {
        let row = &rows[&member.entry_id];
        assert_eq!(row.status, "won", "status of {}", member.user_id);
        assert!(row.submitted, "submission of {}", member.user_id);
    }
    assert!(!rows.contains_key(&poison.entry_id));
    assert_eq!(ledger(&stack.pool, &event).await, (good.len() as i32, 0), "the poison's WON moved no stock");
    assert!(!movements(&stack.pool).await.keys().any(|(id, _)| *id == poison.entry_id));

    // Both records of the poison member are dead-lettered, with the database's reason.
    for topic in [&topics.survey_submitted, &topics.stock_decided] {
        let dlq = stack.kit.read_log(&Topics::dlq(topic)).await;
        assert_eq!(dlq.len(), 1, "one dead letter in {topic}");
        let reason = dlq[0]
            .headers()
            .and_then(|h| h.iter().find(|header| header.key == "dlq-error").and_then(|header| header.value))
            .map(|v| String::from_utf8_lossy(v).to_string())
            .unwrap_or_default();
        assert!(reason.contains("23514"), "reason names the SQLSTATE: {reason:?}");
    }
    assert!(stack.kit.read_log(&Topics::dlq(&topics.gift_dispatched)).await.is_empty());
    assert!(metrics.contains("firstcome_recorder_poison_records_total"), "{metrics}");
    assert!(metrics.contains("firstcome_recorder_batch_splits_total"), "{metrics}");
}

/// Another producer's entry for a member, then the member's entry through
/// ingest under a different entry id: both were answered 202 somewhere, so
/// both end recorded with their outcome (docs/DESIGN.md, invariant 3). Once with
/// the two entries in separate batches, once in the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_id_of_a_member_is_recorded_with_its_outcome() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;

    let foreign = Member::new(&event, "apart");
    let through_ingest = Member {
        event_id: event.clone(),
        entry_id: Uuid::new_v4(),
        user_id: foreign.user_id.clone(),
        submitted_at: schemas::now_millis(),
    };
    let together = Member::new(&event, "together");
    let together_again = Member {
        event_id: event.clone(),
        entry_id: Uuid::new_v4(),
        user_id: together.user_id.clone(),
        submitted_at: schemas::now_millis(),
    };

    let (_, shutdown, handle) = stack.start().await;
    stack.send(&[foreign.entry(), foreign.decision(Outcome::Won, Some(1))]).await;
    stack.wait_until_committed().await;
    stack.send(&[through_ingest.entry(), through_ingest.decision(Outcome::AlreadyWon, Some(1))]).await;
    stack
        .send(&[
            together.entry(),
            together_again.entry(),
            together.decision(Outcome::SoldOut, None),
            together_again.decision(Outcome::SoldOut, None),
        ])
        .await;
    stack.wait_until_committed().await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");

    let rows = rows(&stack.pool).await;
    assert_eq!(rows.len(), 4, "one row per entry id, two per member");
    for (member, outcome, status) in [
        (&foreign, "WON", "won"),
        (&through_ingest, "ALREADY_WON", "lost"),
        (&together, "SOLD_OUT", "lost"),
        (&together_again, "SOLD_OUT", "lost"),
    ] {
        let row = rows.get(&member.entry_id).unwrap_or_else(|| panic!("entry {} is not recorded", member.entry_id));
        assert!(row.submitted, "submission of {}", member.entry_id);
        assert_eq!(row.outcome.as_deref(), Some(outcome), "outcome of {}", member.entry_id);
        assert_eq!(row.status, status, "status of {}", member.entry_id);
    }
    assert_eq!(ledger(&stack.pool, &event).await, (1, 0), "the member's one unit is issued once");
}

/// A returned unit goes to the next in line under the entry id that was
/// decided SOLD_OUT: the entry moves lost → won → sent/failed, the ledger
/// counts the issue, and a SOLD_OUT read after the WON (a redelivery, or
/// topics read in another order) never takes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waitlist_promotion_moves_a_lost_entry_to_won_and_never_back() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;

    // Promoted, then sent.
    let sent = Member::new(&event, "promoted-sent");
    // Promoted; its FAILED is read before the WON that gave it the unit.
    let failed = Member::new(&event, "promoted-failed");
    // SOLD_OUT and WON in one batch, the WON first.
    let same_batch = Member::new(&event, "same-batch");
    // WON first, then a late SOLD_OUT in a later batch.
    let late_sold_out = Member::new(&event, "late-sold-out");

    let (_, shutdown, handle) = stack.start().await;
    stack
        .send(&[
            sent.entry(),
            sent.decision(Outcome::SoldOut, None),
            failed.entry(),
            failed.decision(Outcome::SoldOut, None),
            late_sold_out.entry(),
            late_sold_out.decision(Outcome::Won, Some(5)),
        ])
        .await;
    stack.wait_until_committed().await;
    let before = rows(&stack.pool).await;
    assert_eq!(before[&sent.entry_id].status, "lost");
    assert_eq!(before[&failed.entry_id].status, "lost");
    assert_eq!(ledger(&stack.pool, &event).await, (1, 0));

    // The promotion of `sent`; `failed`'s dispatch outruns its WON.
    stack
        .send(&[
            sent.decision(Outcome::Won, Some(3)),
            failed.dispatch(DispatchStatus::Failed),
            same_batch.entry(),
            same_batch.decision(Outcome::Won, Some(6)),
            same_batch.decision(Outcome::SoldOut, None),
        ])
        .await;
    stack.wait_until_committed().await;
    let promoted = rows(&stack.pool).await;
    assert_eq!(promoted[&sent.entry_id].status, "won", "lost → won");
    assert_eq!(promoted[&sent.entry_id].outcome.as_deref(), Some("WON"));
    assert_eq!(promoted[&sent.entry_id].unit_no, Some(3));
    assert_eq!(promoted[&same_batch.entry_id].outcome.as_deref(), Some("WON"));
    assert_eq!(ledger(&stack.pool, &event).await, (3, 1), "the promotion is issued");

    // Then the WON of `failed`, the dispatch of `sent`, and late SOLD_OUTs
    // (redeliveries) of every promoted or won entry.
    stack
        .send(&[
            failed.decision(Outcome::Won, Some(4)),
            sent.dispatch(DispatchStatus::Sent),
            sent.decision(Outcome::SoldOut, None),
            same_batch.decision(Outcome::SoldOut, None),
            late_sold_out.decision(Outcome::SoldOut, None),
        ])
        .await;
    stack.wait_until_committed().await;
    // And once more everything about `failed` and `sent`, in any order.
    stack
        .send(&[
            failed.decision(Outcome::SoldOut, None),
            failed.decision(Outcome::Won, Some(4)),
            sent.decision(Outcome::Won, Some(3)),
            sent.dispatch(DispatchStatus::Sent),
        ])
        .await;
    stack.wait_until_committed().await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");

    let rows = rows(&stack.pool).await;
    assert_eq!(rows.len(), 4);
    for (member, status, unit_no) in
        [(&sent, "sent", 3), (&failed, "failed", 4), (&same_batch, "won", 6), (&late_sold_out, "won", 5)]
    {
        let row = &rows[&member.entry_id];
        assert_eq!(row.status, status, "status of {}", member.user_id);
        assert_eq!(row.outcome.as_deref(), Some("WON"), "outcome of {}", member.user_id);
        assert_eq!(row.unit_no, Some(unit_no), "unit of {}", member.user_id);
        assert!(row.submitted);
    }
    assert_eq!(ledger(&stack.pool, &event).await, (4, 1), "four issues, one return, each once");
    let moves = movements(&stack.pool).await;
    assert_eq!(moves.len(), 5);
    for (member, unit) in [(&sent, 3), (&failed, 4), (&same_batch, 6), (&late_sold_out, 5)] {
        assert_eq!(moves[&(member.entry_id, "issued".to_string())], (event.clone(), Some(unit)));
    }
    assert_eq!(
        moves[&(failed.entry_id, "returned".to_string())],
        (event.clone(), Some(4)),
        "the unit returned before its WON was read takes the WON's number"
    );
}

/// A WON the payout guard refused is answered: its REFUSED dispatch makes the
/// entry read "refused" (never "won" for ever), and no unit goes back.
#[tokio::test]
async fn a_refused_won_reads_refused_and_returns_no_unit() {
    platform::telemetry::init("recorder-test", &Default::default());
    let stack = TestStack::new().await;
    let event = Uuid::new_v4().to_string();
    stack.create_event(&event).await;
    let refused = Member::new(&event, "refused");
    let (_, shutdown, handle) = stack.start().await;
    stack
        .send(&[refused.entry(), refused.decision(Outcome::Won, Some(1)), refused.dispatch(DispatchStatus::Refused)])
        .await;
    stack.wait_until_committed().await;
    let row = &rows(&stack.pool).await[&refused.entry_id];
    assert_eq!((row.status.as_str(), row.dispatch_status.as_deref()), ("refused", Some("REFUSED")));
    assert_eq!(row.outcome.as_deref(), Some("WON"), "the decision stands; its end is the refusal");
    assert_eq!(ledger(&stack.pool, &event).await, (1, 0), "issued, never returned");
    shutdown.cancel();
    tokio::time::timeout(WAIT, handle).await.expect("stops in time").expect("task").expect("stops cleanly");
}
