//! A rebuild of one event reads the log from a margin before the event's
//! opening (the topics' time index), not every partition from its
//! beginning: the records of older events are never fetched, and the state
//! it swaps in is the one the stage had built.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::{entry, Producer};
use common::EventSetup;
use platform::event_keys::EventKeys;
use schemas::Codec;
use stock_processor::rebuild::{window_start, Rebuilder};
use stock_processor::Application;
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
/// Entries of an event that ran hours before this one.
const OLDER: usize = 40;

/// What a rebuild must give back, key by key.
async fn state(conn: &mut platform::redis::Connection, keys: &EventKeys, for_sale: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for hash in [&keys.decisions, &keys.winners, &keys.members, &keys.tickets, &keys.released] {
        let mut fields: Vec<_> = common::hgetall(conn, hash).await.into_iter().collect();
        fields.sort();
        out.push((hash.clone(), format!("{fields:?}")));
    }
    for counter in [&keys.stock, &keys.next_unit, &keys.ticket] {
        out.push((counter.clone(), format!("{:?}", common::get_i64(conn, counter).await)));
    }
    // No frontier key means the first `for_sale` tickets (the scripts' reading).
    let frontier = common::get_i64(conn, &keys.frontier).await.unwrap_or(for_sale);
    out.push((keys.frontier.clone(), frontier.to_string()));
    let waiting: Vec<(String, f64)> =
        redis::cmd("ZRANGE").arg(&keys.waitlist).arg(0).arg(-1).arg("WITHSCORES").query_async(conn).await.unwrap();
    out.push((keys.waitlist.clone(), format!("{waiting:?}")));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_reads_from_the_events_opening_and_rebuilds_it_exactly() {
    let env = TestEnv::builder().without_database().build().await;
    let settings = common::stage_settings(&env);
    let kafka = settings.kafka.clone();
    let topics = kafka.topics();
    let group = settings.group();
    let codec: Codec = settings.registry.codec().expect("codec");
    let producer = Producer::new(&kafka);
    let mut conn = common::redis().await;

    // An older event's entries, stamped three hours ago: in the log, before
    // this event's window.
    let older = common::new_event_id();
    let then = schemas::now_millis() - 3 * 3600 * 1000;
    for i in 0..OLDER {
        let (entry_id, member) = (common::new_entry_id(), format!("old-{i}"));
        let record = entry(&older, &entry_id, &member, then + i as i64);
        let payload = codec.encode(&topics.survey_submitted, &record).await.expect("encode");
        producer.send_at(&topics.survey_submitted, &member, &payload, &entry_id, Some(then + i as i64)).await;
    }

    // This event: five units, seven members; the stage decides them all.
    let event_id = common::new_event_id();
    let members: Vec<String> = (1..=7).map(|i| format!("u{i}")).collect();
    let setup = EventSetup::open_now(&event_id, 5, &members);
    setup.create(&mut conn).await;
    let application = Application::build(settings.clone()).await.expect("application builds");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(application.run_until_stopped(shutdown.clone()));
    for member in &members {
        let entry_id = common::new_entry_id();
        let at = schemas::now_millis();
        let payload =
            codec.encode(&topics.survey_submitted, &entry(&event_id, &entry_id, member, at)).await.expect("encode");
        producer.send_at(&topics.survey_submitted, member, &payload, &entry_id, Some(at)).await;
    }
    let input = [topics.survey_submitted.as_str()];
    testkit::wait_for("the stage to commit every entry", DEADLINE, || env.caught_up(&group, &input)).await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "the application stops cleanly: {stopped:?}");

    let keys = EventKeys::new(&event_id);
    let before = state(&mut conn, &keys, setup.for_sale).await;
    assert!(before.iter().any(|(k, v)| *k == keys.winners && v.matches("u").count() == 5), "{before:?}");

    // Redis forgets everything the stage wrote for the event.
    let lost = [
        &keys.decisions,
        &keys.winners,
        &keys.members,
        &keys.tickets,
        &keys.ticket,
        &keys.frontier,
        &keys.dead,
        &keys.next_unit,
        &keys.waitlist,
        &keys.applied,
    ];
    let () = redis::cmd("DEL").arg(&lost[..]).query_async(&mut conn).await.unwrap();
    let () = redis::cmd("SET").arg(&keys.stock).arg(setup.for_sale).query_async(&mut conn).await.unwrap();

    let rebuilder =
        Rebuilder::new(&testkit::kafka_admin(&kafka), &group, codec.clone(), conn.clone()).expect("rebuilder");
    let report = rebuilder.rebuild_event(&event_id).await.expect("rebuilt");

    let log = [topics.survey_submitted.as_str(), topics.stock_decided.as_str(), topics.stock_released.as_str()];
    let held = testkit::read_log(&env.kafka, &log).await.len();
    assert_eq!(report.read_from_ms, Some(window_start(setup.open_at_ms)));
    assert_eq!(report.records_read, held - OLDER, "every record but the older event's entries: {report:?}");
    assert_eq!((report.entries_in_log, report.decisions_in_log), (7, 7), "{report:?}");
    let after = state(&mut conn, &keys, setup.for_sale).await;
    for ((key, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "{key} rebuilt differently");
    }
    let applied: HashMap<String, String> = common::hgetall(&mut conn, &keys.applied).await;
    assert!(!applied.is_empty(), "the committed marks are back");

    env.delete_topics().await;
}
