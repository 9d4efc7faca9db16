//! The grouped admission (`ingest::admission`): the requests waiting at the
//! same moment are decided in one script call per event, each exactly as if
//! it had been a call of its own, and one event's failure is never another's.

use std::collections::HashMap;

use ingest::admission::{Admission, AdmissionError, Admitter};
use ingest::MemberId;
use platform::event_keys::EventKeys;

use crate::helpers::*;

fn member(id: &str) -> MemberId {
    MemberId::parse(id).expect("member id")
}

#[tokio::test]
async fn grouped_requests_are_each_decided_as_if_alone() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let (members, event_id) = open_event_of(&mut conn, 40).await;
    let admitter = instance();

    // Every eligible member three times, and a stranger, all at once: they
    // land in a few grouped calls, a member's requests often in the same one.
    let mut asks = Vec::new();
    for round in 0..3 {
        for m in members.iter().chain(std::iter::once(&"stranger".to_string())) {
            let (admitter, conn, event_id) = (admitter.clone(), conn.clone(), event_id.clone());
            let entry = format!("e-{m}-{round}");
            let m = m.clone();
            asks.push(tokio::spawn(async move {
                let answer = admitter.admit_grouped(&conn, &event_id, &member(&m), &entry, true).await;
                (m, answer.expect("admitted or refused"))
            }));
        }
    }
    let mut by_member: HashMap<String, Vec<Admission>> = HashMap::new();
    for ask in asks {
        let (m, admission) = ask.await.expect("task");
        by_member.entry(m).or_default().push(admission);
    }

    assert!(by_member["stranger"].iter().all(|a| *a == Admission::NotEligible), "{:?}", by_member["stranger"]);
    for m in &members {
        let answers = &by_member[m];
        let accepted: Vec<&String> = answers
            .iter()
            .filter_map(|a| match a {
                Admission::Accept { entry_id, .. } => Some(entry_id),
                _ => None,
            })
            .collect();
        assert_eq!(accepted.len(), 1, "{m}: exactly one accepted of {answers:?}");
        for answer in answers {
            match answer {
                Admission::Accept { .. } => {}
                Admission::InProgress { entry_id, .. } => assert_eq!(entry_id, accepted[0], "{m}"),
                other => panic!("{m}: a repeat is in progress, not {other:?}"),
            }
        }
        assert_eq!(
            entered_mark(&mut conn, &event_id, m).await.map(|mark| mark.split('|').nth(1).map(str::to_string)),
            Some(Some(accepted[0].clone())),
            "{m}: the pending mark names the accepted entry"
        );
    }
}

#[tokio::test]
async fn a_failing_event_fails_its_own_requests_only() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let members: Vec<String> = (0..20).map(|i| format!("m-{i}")).collect();
    let eligible: Vec<&str> = members.iter().map(String::as_str).collect();
    let healthy = create_event(&mut conn, EventSpec::open(&eligible)).await;
    let broken = create_event(&mut conn, EventSpec::open(&eligible)).await;
    // A key of the wrong type: the script errors on every request of `broken`.
    let _: () =
        redis::cmd("SET").arg(EventKeys::new(&broken).entered).arg("x").query_async(&mut conn).await.expect("SET");
    let admitter = instance();

    let mut asks = Vec::new();
    for m in &members {
        for event_id in [&healthy, &broken] {
            let (admitter, conn, event_id, m) = (admitter.clone(), conn.clone(), event_id.clone(), m.clone());
            asks.push(tokio::spawn(async move {
                let answer =
                    admitter.admit_grouped(&conn, &event_id, &member(&m), &format!("e-{m}-{event_id}"), true).await;
                (event_id, answer)
            }));
        }
    }
    for ask in asks {
        let (event_id, answer) = ask.await.expect("task");
        if event_id == healthy {
            assert!(matches!(answer, Ok(Admission::Accept { .. })), "{answer:?}");
        } else {
            let error = answer.expect_err("the broken event's requests fail");
            assert!(matches!(error, AdmissionError::Grouped(_) | AdmissionError::Redis(_)), "{error:?}");
            assert!(error.to_string().contains("WRONGTYPE"), "the cause is kept: {error}");
        }
    }
}

/// Redis forgot its last second (an AOF that missed it, a failover without
/// the fence): the ticket counter went back. The instance's floor raises it
/// before the next ticket, so no ticket it handed out is handed out again.
#[tokio::test]
async fn a_ticket_counter_that_went_back_is_raised_to_the_highest_ticket_given() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let (members, event_id) = open_event_of(&mut conn, 6).await;
    // As ingest's own Redis user: its ACL must allow what the floor writes.
    let mut as_ingest = ingest_redis(&settings).await;
    let admitter = instance();
    for (n, m) in members[..4].iter().enumerate() {
        let answer =
            admitter.admit(&mut as_ingest, &event_id, &member(m), &format!("e-{m}"), true).await.expect("admit");
        assert!(matches!(answer, Admission::Accept { ticket, .. } if ticket == n as i64 + 1), "{answer:?}");
    }
    // The last two tickets' writes are lost: the counter is back at 2.
    let _: () =
        redis::cmd("SET").arg(EventKeys::new(&event_id).ticket).arg(2).query_async(&mut conn).await.expect("SET");

    let answer = admitter.admit(&mut as_ingest, &event_id, &member("m-4"), "e-m-4", true).await.expect("admit");
    assert!(matches!(answer, Admission::Accept { ticket: 5, .. }), "not ticket 3 again: {answer:?}");
    let ttl: i64 = redis::cmd("PTTL").arg(EventKeys::new(&event_id).ticket).query_async(&mut conn).await.expect("PTTL");
    assert!(ttl > 0, "the raised counter still expires with the event: {ttl}");
    // Another instance (a floor of its own, here none) continues from there.
    let other = instance();
    let answer = other.admit(&mut as_ingest, &event_id, &member("m-5"), "e-m-5", true).await.expect("admit");
    assert!(matches!(answer, Admission::Accept { ticket: 6, .. }), "{answer:?}");
}

/// Redis forgot tickets two instances gave: A's last were 6 and 7, B's 8 to
/// 10. A calls first and can raise the counter only to 7; were the next
/// ticket taken at once it would be B's 8 again. So the raise starts a wait
/// in which nobody new is admitted, B's call raises the counter to 10 within
/// it, and no ticket is given twice.
#[tokio::test]
async fn a_raised_counter_waits_for_the_other_instances_floors() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let (members, event_id) = open_event_of(&mut conn, 12).await;
    let keys = EventKeys::new(&event_id);
    let mut as_ingest = ingest_redis(&settings).await;
    let (a, b) = (instance(), instance());
    for (n, m) in members[..10].iter().enumerate() {
        let giver = if n < 7 { &a } else { &b };
        let answer = giver.admit(&mut as_ingest, &event_id, &member(m), &format!("e-{m}"), true).await.expect("admit");
        assert!(matches!(answer, Admission::Accept { ticket, .. } if ticket == n as i64 + 1), "{answer:?}");
    }
    // The last second is lost: the counter is back at 5.
    let () = redis::cmd("SET").arg(&keys.ticket).arg(5).arg("KEEPTTL").query_async(&mut conn).await.expect("SET");

    let first = tokio::spawn({
        let (a, as_ingest, event_id) = (a.clone(), as_ingest.clone(), event_id.clone());
        async move { a.admit_grouped(&as_ingest, &event_id, &member("m-10"), "e-m-10", true).await }
    });
    // A's call raised the counter: the wait has begun (or, with the defect,
    // A was answered at once).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = redis::cmd("PTTL").arg(&keys.settle).query_async(&mut conn).await.expect("PTTL");
        if left > 0 {
            // Held open for as long as B may take on a loaded machine;
            // B's raise sets it back to the usual wait.
            let _: i64 =
                redis::cmd("PEXPIRE").arg(&keys.settle).arg(60_000).query_async(&mut conn).await.expect("PEXPIRE");
            break;
        }
        if first.is_finished() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "A's call neither answered nor began the wait");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let second = b.admit(&mut as_ingest, &event_id, &member("m-11"), "e-m-11", true).await.expect("B admits");
    let first = first.await.expect("A's task").expect("A admits");
    let ticket = |answer: &Admission| match answer {
        Admission::Accept { ticket, .. } => *ticket,
        other => panic!("not admitted: {other:?}"),
    };
    let (first, second) = (ticket(&first), ticket(&second));
    assert!(first > 10, "A's new member got ticket {first}, one B gave before the loss");
    assert!(second > 10 && second != first, "B's new member got ticket {second} (A's: {first})");
    let settled: i64 = redis::cmd("PTTL").arg(&keys.settle).query_async(&mut conn).await.expect("PTTL");
    assert!(settled < 0, "the wait ended: {settled}");
}

/// An instance that gave no ticket in the forgotten span (or was restarted
/// since) still raises the counter: it knows the floors the others
/// announced on the ticket floor channel.
#[tokio::test]
async fn an_instance_raises_the_counter_to_the_floors_the_others_announced() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let event_id = create_event(&mut conn, EventSpec::open(&["m-0", "m-1", "m-2", "m-3"])).await;
    let keys = EventKeys::new(&event_id);
    let mut as_ingest = ingest_redis(&settings).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let (a, b) = (instance(), instance());
    for admitter in [&a, &b] {
        run_state_sync(&settings, admitter, &as_ingest, &stop).await;
    }
    for (n, m) in ["m-0", "m-1", "m-2"].into_iter().enumerate() {
        let answer = b.admit(&mut as_ingest, &event_id, &member(m), &format!("e-{m}"), true).await.expect("admit");
        assert!(matches!(answer, Admission::Accept { ticket, .. } if ticket == n as i64 + 1), "{answer:?}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.ticket_floor(&event_id) < 3 {
        assert!(std::time::Instant::now() < deadline, "A never learnt B's floor: {}", a.ticket_floor(&event_id));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Redis forgets B's last two tickets; A, which gave none, calls first.
    let () = redis::cmd("SET").arg(&keys.ticket).arg(1).arg("KEEPTTL").query_async(&mut conn).await.expect("SET");
    let answer = a.admit(&mut as_ingest, &event_id, &member("m-3"), "e-m-3", true).await.expect("admit");
    stop.cancel();
    assert!(matches!(answer, Admission::Accept { ticket: 4, .. }), "not ticket 2 again: {answer:?}");
}

/// Tickets of a call still in flight (answered by Redis, its fence still
/// waiting) are not a floor yet: the fence may fail, and then nobody holds
/// them. If Redis forgets them meanwhile, the instance keeps new admissions
/// waiting until the call ends, so no other instance gives them again; a
/// call that ends refused leaves no gap in the line.
#[tokio::test]
async fn tickets_in_flight_hold_new_admissions_until_their_call_ends() {
    let settings = isolated_settings().await;
    let mut conn = redis(&settings).await;
    let (members, event_id) = open_event_of(&mut conn, 8).await;
    let keys = EventKeys::new(&event_id);
    let mut as_ingest = ingest_redis(&settings).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let (a, b) = (instance(), instance());
    for admitter in [&a, &b] {
        run_state_sync(&settings, admitter, &as_ingest, &stop).await;
    }
    for (n, m) in members[..3].iter().enumerate() {
        let answer = b.admit(&mut as_ingest, &event_id, &member(m), &format!("e-{m}"), true).await.expect("admit");
        assert!(matches!(answer, Admission::Accept { ticket, .. } if ticket == n as i64 + 1), "{answer:?}");
    }
    // B's next call was given tickets 4 and 5 and waits on its fence; Redis
    // forgets them (the counter is back at 3).
    let in_flight = b.floors().hold_in_flight(&event_id, 5);
    let () = redis::cmd("SET").arg(&keys.ticket).arg(3).arg("KEEPTTL").query_async(&mut conn).await.expect("SET");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: i64 = redis::cmd("PTTL").arg(&keys.settle).query_async(&mut conn).await.expect("PTTL");
        if left > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B never held new admissions while its tickets were in flight");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // A, which knows B's floor of 3, calls: held for as long as B's call is
    // in flight (its waits run out: 503, and the member tries again).
    let held = a.admit(&mut as_ingest, &event_id, &member("m-5"), "e-m-5", true).await;
    assert!(matches!(held, Err(AdmissionError::Settling)), "not ticket 4, one B's call in flight holds: {held:?}");
    // B's call ends refused (its fence did not hold): nobody holds 4 and 5,
    // and the line goes on from the counter, with no gap.
    drop(in_flight);
    let answer = a.admit(&mut as_ingest, &event_id, &member("m-6"), "e-m-6", true).await.expect("admit");
    stop.cancel();
    assert!(matches!(answer, Admission::Accept { ticket: 4, .. }), "{answer:?}");
}

/// The admission fence: with `replica_acks = 1`, an admission on a Redis
/// without a replica fails (the member gets 503 and nothing is produced),
/// and one on a primary with a replica passes only once the replica holds
/// the ticket.
#[tokio::test]
async fn an_admission_is_answered_only_once_a_replica_holds_its_ticket() {
    let settings = isolated_settings().await;
    let fence =
        Some(platform::redis::fence::ReplicaFence { replicas: 1, timeout: std::time::Duration::from_millis(200) });

    // The suite's Redis has no replica: the fence cannot hold.
    let mut admin = redis(&settings).await;
    let event_id = create_event(&mut admin, EventSpec::open(&["m-1"])).await;
    let mut alone = ingest_redis(&settings).await;
    let admitter = instance().with_fence(fence);
    let refused = admitter.admit(&mut alone, &event_id, &member("m-1"), "e-1", true).await;
    assert!(matches!(refused, Err(AdmissionError::Fence(_))), "{refused:?}");
    // Nothing was produced for the refused ticket: if a failover loses its
    // writes nobody holds it, so the floor must not skip past it (a number
    // no entry claims would keep a unit from the line for good).
    assert_eq!(admitter.ticket_floor(&event_id), 0, "a refused call does not raise the floor");
    // Refusing admits nothing new: the member's retry resumes the same entry.
    assert!(
        matches!(
            admitter.admit(&mut alone, &event_id, &member("m-1"), "e-2", true).await,
            Ok(Admission::InProgress { .. })
        ),
        "the refused admission's mark stands"
    );

    // The Sentinel-watched pair (primary and replica): the fence holds, and
    // the replica has the ticket by the time the answer comes.
    let mut ha_settings =
        settings.redis.for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
    ha_settings.sentinels = testkit::sentinel::SENTINELS.into();
    ha_settings.master_name = testkit::sentinel::MASTER_NAME.into();
    assert!(testkit::sentinel::wait_healthy(std::time::Duration::from_secs(60)).await, "the Sentinel pair is up");
    let mut pair = platform::redis::connect(&ha_settings).await.expect("the Sentinel pair");
    let event_id = create_event(&mut pair, EventSpec::open(&["m-1"])).await;
    let answer = admitter.admit_grouped(&pair, &event_id, &member("m-1"), "e-1", true).await;
    assert!(matches!(answer, Ok(Admission::Accept { ticket: 1, .. })), "{answer:?}");
    assert_eq!(admitter.ticket_floor(&event_id), 1, "an answered call raises the floor");
    let primary = testkit::sentinel::master_port().await.expect("a primary");
    let replica_port = if primary == 6380 { 6381 } else { 6380 };
    let mut replica = redis::Client::open(format!("redis://admin:firstcome_admin@127.0.0.1:{replica_port}/"))
        .expect("replica address")
        .get_multiplexed_async_connection()
        .await
        .expect("the replica");
    let ticket: Option<i64> =
        redis::cmd("GET").arg(EventKeys::new(&event_id).ticket).query_async(&mut replica).await.expect("GET");
    assert_eq!(ticket, Some(1), "the replica holds the ticket the answer announced");
}

/// Members m-0 … m-{n-1}, all eligible for a new open event; its id.
async fn open_event_of(conn: &mut platform::redis::Connection, n: usize) -> (Vec<String>, String) {
    let members: Vec<String> = (0..n).map(|i| format!("m-{i}")).collect();
    let eligible: Vec<&str> = members.iter().map(String::as_str).collect();
    let event_id = create_event(conn, EventSpec::open(&eligible)).await;
    (members, event_id)
}

/// One ingest instance's admitter (a pending entry resumes after 30 s).
fn instance() -> Admitter {
    Admitter::new(std::time::Duration::from_secs(30))
}

/// An instance's state sync, as ingest runs it (its own Redis user): it
/// learns the others' floors, announces its own and holds tickets in flight,
/// until `stop`.
async fn run_state_sync(
    settings: &ingest::Settings,
    admitter: &Admitter,
    as_ingest: &platform::redis::Connection,
    stop: &tokio_util::sync::CancellationToken,
) {
    let ingest_settings =
        settings.redis.for_principal(platform::settings::Environment::Local, platform::settings::Principal::INGEST);
    let sync = ingest::state::StateSync::connect(
        ingest::state::EventCache::new(std::time::Duration::from_secs(60)),
        admitter.floors(),
        platform::redis::client(&ingest_settings).expect("pub/sub client"),
        as_ingest.clone(),
        std::time::Duration::from_secs(60),
    )
    .await
    .expect("state sync");
    tokio::spawn(sync.run(stop.clone()));
}

/// A connection as ingest's own Redis user (what the service runs as).
async fn ingest_redis(settings: &ingest::Settings) -> platform::redis::Connection {
    platform::redis::connect(
        &settings.redis.for_principal(platform::settings::Environment::Local, platform::settings::Principal::INGEST),
    )
    .await
    .expect("redis as ingest")
}
