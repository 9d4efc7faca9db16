//! The decision and release scripts against the real Redis.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{EventSetup, StateChanges};
use platform::event_keys::{EventKeys, EventStatus};
use rand::seq::SliceRandom;
use schemas::Outcome;
use stock_processor::{Decision, EntryRef, Released};

/// One entry of a test: (entry_id, user_id).
type Entry = (String, String);

/// Entries accepted just now (this host's clock; the script clamps to its own).
fn refs(entries: &[Entry]) -> Vec<EntryRef<'_>> {
    refs_at(entries, schemas::now_millis())
}

/// Entries accepted at `accepted_at_ms`.
fn refs_at(entries: &[Entry], accepted_at_ms: i64) -> Vec<EntryRef<'_>> {
    entries.iter().map(|(entry_id, user_id)| EntryRef { entry_id, user_id, accepted_at_ms }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_never_sell_more_than_the_stock() {
    const FOR_SALE: i64 = 50;
    let event_id = common::new_event_id();
    let eligible: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    let ineligible: Vec<String> = (0..20).map(|i| format!("x{i}")).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, FOR_SALE, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let mut changes = StateChanges::subscribe(&event_id).await;

    // 200 eligible + 20 ineligible + 80 second entries of eligible members = 300.
    let mut entries: Vec<Entry> = eligible
        .iter()
        .chain(&ineligible)
        .chain(eligible.iter().take(80))
        .map(|member| (common::new_entry_id(), member.clone()))
        .collect();
    entries.shuffle(&mut rand::rng());
    assert_eq!(entries.len(), 300);

    // Watch the counter while the deciders run: it must never go below zero.
    let lowest = Arc::new(AtomicI64::new(i64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (lowest, done, mut conn, key) = (lowest.clone(), done.clone(), conn.clone(), keys.stock.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(value) = common::get_i64(&mut conn, &key).await {
                    lowest.fetch_min(value, Ordering::Relaxed);
                }
            }
        })
    };

    // Six deciders, each deciding its share of the entries in batches of 10.
    let store = common::store().await;
    let shares: Vec<Vec<Entry>> = (0..6).map(|t| entries.iter().skip(t).step_by(6).cloned().collect()).collect();
    let tasks = shares.into_iter().map(|share| {
        let store = store.clone();
        let event_id = event_id.clone();
        tokio::spawn(async move {
            let mut decided = Vec::new();
            for batch in share.chunks(10) {
                let answer = store.decide(&event_id, &refs(batch)).await.expect("decide");
                assert_eq!(answer.decisions.len(), batch.len());
                decided.extend(batch.iter().cloned().zip(answer.decisions));
            }
            decided
        })
    });
    let decided: Vec<(Entry, Decision)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|joined| joined.expect("decider task"))
        .collect();
    done.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    assert_eq!(decided.len(), 300);

    // Exactly 50 winners, distinct members, units 1..=50.
    let wins: Vec<&(Entry, Decision)> = decided.iter().filter(|(_, d)| d.outcome == Outcome::Won).collect();
    assert_eq!(wins.len(), FOR_SALE as usize);
    let winners: HashSet<&str> = wins.iter().map(|((_, member), _)| member.as_str()).collect();
    assert_eq!(winners.len(), wins.len(), "a member won twice");
    let units: BTreeSet<i32> = wins.iter().filter_map(|(_, d)| d.unit_no).collect();
    assert_eq!(units, (1..=FOR_SALE as i32).collect::<BTreeSet<_>>());

    // Each winner's other entries are ALREADY_WON with the same unit.
    let unit_of: HashMap<&str, i32> = wins.iter().map(|((_, m), d)| (m.as_str(), d.unit_no.unwrap_or(0))).collect();
    for ((_, member), decision) in &decided {
        match unit_of.get(member.as_str()) {
            Some(unit) => assert!(
                decision.outcome == Outcome::Won
                    || (decision.outcome == Outcome::AlreadyWon && decision.unit_no == Some(*unit)),
                "{member}: {decision:?}"
            ),
            None if member.starts_with('x') => assert_eq!(decision.outcome, Outcome::Ineligible, "{member}"),
            None => assert_eq!(decision.outcome, Outcome::SoldOut, "{member}"),
        }
    }
    let already = decided.iter().filter(|(_, d)| d.outcome == Outcome::AlreadyWon).count();
    let winners_with_two_entries = winners.iter().filter(|m| eligible[..80].iter().any(|e| e == *m)).count();
    assert_eq!(already, winners_with_two_entries);

    // The counter ends at zero, never went below, and the sell-out was published once.
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(0));
    assert!(lowest.load(Ordering::Relaxed) >= 0, "stock went negative");
    assert_eq!(common::meta_status(&mut conn, &event_id).await.as_deref(), Some("sold_out"));
    assert_eq!(changes.next(Duration::from_secs(5)).await, Some(EventStatus::SoldOut));
    assert!(changes.drain(Duration::from_millis(300)).await.is_empty(), "sold out published more than once");
    assert_eq!(common::hgetall(&mut conn, &keys.winners).await.len(), FOR_SALE as usize);
    assert_eq!(common::hgetall(&mut conn, &keys.decisions).await.len(), 300);
}

#[tokio::test]
async fn deciding_the_same_batch_again_gives_the_same_answers() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 5, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;

    let mut batch: Vec<Entry> = eligible.iter().map(|m| (common::new_entry_id(), m.clone())).collect();
    batch.push((common::new_entry_id(), "m0".into()));
    batch.push((common::new_entry_id(), "stranger".into()));

    let first = store.decide(&event_id, &refs(&batch)).await.expect("decide");
    let stock_after_first = common::get_i64(&mut conn, &keys.stock).await;
    let next_unit_after_first = common::get_i64(&mut conn, &keys.next_unit).await;
    let outcomes: Vec<Outcome> = first.decisions.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Won).count(), 5);
    assert_eq!(outcomes[8], Outcome::AlreadyWon, "m0's second entry");
    assert_eq!(outcomes[9], Outcome::Ineligible);
    assert_eq!(first.remaining, Some(0));

    // The same batch again (an aborted transaction re-runs it): same answers, no stock change.
    let again = store.decide(&event_id, &refs(&batch)).await.expect("decide again");
    assert_eq!(again.decisions, first.decisions);
    // Cut differently and in another order (a rewind may batch otherwise): still the same.
    let mut reversed = batch.clone();
    reversed.reverse();
    let reordered = store.decide(&event_id, &refs(&reversed)).await.expect("decide reversed");
    let mut expected = first.decisions.clone();
    expected.reverse();
    assert_eq!(reordered.decisions, expected);
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, stock_after_first);
    assert_eq!(common::get_i64(&mut conn, &keys.next_unit).await, next_unit_after_first);
    assert_eq!(common::hgetall(&mut conn, &keys.winners).await.len(), 5);
}

#[tokio::test]
async fn a_winning_entry_id_sent_for_another_member_wins_nothing() {
    let event_id = common::new_event_id();
    let eligible = vec!["m1".to_string(), "m2".to_string()];
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 2, &eligible).create(&mut conn).await;
    let store = common::store().await;

    let entry = common::new_entry_id();
    let won = store.decide(&event_id, &refs(&[(entry.clone(), "m1".into())])).await.unwrap();
    assert_eq!(won.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
    let forged = store.decide(&event_id, &refs(&[(entry.clone(), "m2".into())])).await.unwrap();
    assert_eq!(forged.decisions[0].outcome, Outcome::Ineligible);
    // The real member still gets the stored answer, and the stock is untouched.
    let again = store.decide(&event_id, &refs(&[(entry, "m1".into())])).await.unwrap();
    assert_eq!(again.decisions, won.decisions);
    assert_eq!(again.remaining, Some(1));
}

#[tokio::test]
async fn a_released_unit_reopens_the_event_and_goes_to_the_next_winner() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["a", "b", "c"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 2, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let mut changes = StateChanges::subscribe(&event_id).await;

    let batch: Vec<Entry> = ["a", "b"].iter().map(|m| (common::new_entry_id(), m.to_string())).collect();
    let decided = store.decide(&event_id, &refs(&batch)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
    assert_eq!(decided.decisions[1], Decision { outcome: Outcome::Won, unit_no: Some(2) });
    assert_eq!(changes.next(Duration::from_secs(5)).await, Some(EventStatus::SoldOut));

    // A wrong unit, a wrong member, an entry that did not win: refused, nothing changes.
    let (a_entry, _) = &batch[0];
    assert_eq!(store.release(&event_id, a_entry, "a", 2).await.unwrap(), Released::Mismatch);
    assert_eq!(store.release(&event_id, a_entry, "b", 1).await.unwrap(), Released::Mismatch);
    let stranger = common::new_entry_id();
    assert_eq!(store.release(&event_id, &stranger, "a", 1).await.unwrap(), Released::Mismatch);
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(0));

    // a's gift failed: unit 1 goes back, the event reopens.
    let released = store.release(&event_id, a_entry, "a", 1).await.unwrap();
    assert_eq!(released, Released::Returned { reopened: true });
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
    assert_eq!(common::meta_status(&mut conn, &event_id).await.as_deref(), Some("open"));
    assert_eq!(changes.next(Duration::from_secs(5)).await, Some(EventStatus::Open));

    // The same release again (redelivered): nothing happens.
    let repeated = store.release(&event_id, a_entry, "a", 1).await.unwrap();
    assert_eq!(repeated, Released::Duplicate(None));
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
    assert!(changes.drain(Duration::from_millis(300)).await.is_empty(), "a duplicate release published");

    // The next winner gets the freed unit 1, and the event sells out again.
    let c = vec![(common::new_entry_id(), "c".to_string())];
    let decided = store.decide(&event_id, &refs(&c)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
    assert_eq!(decided.remaining, Some(0));
    assert_eq!(common::get_i64(&mut conn, &keys.next_unit).await, Some(2), "no fresh unit was minted");
    assert_eq!(changes.next(Duration::from_secs(5)).await, Some(EventStatus::SoldOut));
}

#[tokio::test]
async fn entries_outside_the_event_window_or_for_unknown_events_win_nothing() {
    let eligible = vec!["m1".to_string()];
    let mut conn = common::redis().await;
    let store = common::store().await;
    let now = schemas::now_millis();
    let one = |member: &str| vec![(common::new_entry_id(), member.to_string())];

    let ended = common::new_event_id();
    EventSetup { event_id: &ended, for_sale: 5, eligible: &eligible, open_at_ms: now - 120_000, close_at_ms: now - 60_000 }
        .create(&mut conn)
        .await;
    let answer = store.decide(&ended, &refs(&one("m1"))).await.unwrap();
    assert_eq!(answer.decisions[0].outcome, Outcome::Closed);

    let early = common::new_event_id();
    EventSetup { event_id: &early, for_sale: 5, eligible: &eligible, open_at_ms: now + 60_000, close_at_ms: now + 120_000 }
        .create(&mut conn)
        .await;
    let answer = store.decide(&early, &refs(&one("m1"))).await.unwrap();
    assert_eq!(answer.decisions[0].outcome, Outcome::Closed);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&early).stock).await, Some(5));

    // An unknown event: INELIGIBLE, and no key is left behind.
    let unknown = common::new_event_id();
    let answer = store.decide(&unknown, &refs(&one("m1"))).await.unwrap();
    assert_eq!(answer.decisions[0].outcome, Outcome::Ineligible);
    assert_eq!(answer.remaining, None);
    let keys = EventKeys::new(&unknown);
    let existing: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut conn).await.unwrap();
    assert_eq!(existing, 0);
}

async fn pttl(conn: &mut redis::aio::ConnectionManager, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.expect("PTTL")
}

#[tokio::test]
async fn keys_first_written_by_the_scripts_expire_with_the_event() {
    let event_id = common::new_event_id();
    let eligible = vec!["m1".to_string(), "m2".to_string()];
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    // write_event creates none of them (no placeholder members): the scripts do.
    for key in [&keys.winners, &keys.decisions, &keys.next_unit, &keys.free_units, &keys.released] {
        assert_eq!(pttl(&mut conn, key).await, -2, "{key} exists before any decision");
    }
    let store = common::store().await;
    let entry = common::new_entry_id();
    let won = store.decide(&event_id, &refs(&[(entry.clone(), "m1".into())])).await.unwrap();
    assert_eq!(won.decisions[0].outcome, Outcome::Won);
    let released = store.release(&event_id, &entry, "m1", 1).await.unwrap();
    assert_eq!(released, Released::Returned { reopened: true });

    // Each copies meta's expiry (close_at + a day), not some expiry of its own.
    let meta_ttl = pttl(&mut conn, &keys.meta).await;
    assert!(meta_ttl > 3_600_000, "meta expires at close_at + grace ({meta_ttl})");
    for key in [&keys.winners, &keys.decisions, &keys.next_unit, &keys.free_units, &keys.released] {
        let ttl = pttl(&mut conn, key).await;
        assert!(ttl > 0 && (meta_ttl - ttl).abs() < 60_000, "{key} expires at {ttl}, meta at {meta_ttl}");
    }
}

#[tokio::test]
async fn an_entry_accepted_before_close_is_decided_normally_within_the_grace() {
    // The stage lagged: the event closed 5 minutes ago (grace is 10).
    let eligible: Vec<String> = ["a", "b", "c", "d"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    let now = common::redis_now(&mut conn).await;
    let (open_at, close_at) = (now - 20 * 60_000, now - 5 * 60_000);
    let event_id = common::new_event_id();
    EventSetup { event_id: &event_id, for_sale: 1, eligible: &eligible, open_at_ms: open_at, close_at_ms: close_at }
        .create(&mut conn)
        .await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let one = |member: &str| vec![(common::new_entry_id(), member.to_string())];

    // Accepted a millisecond before close, decided now: it takes the unit left.
    let (a, b, c, d) = (one("a"), one("b"), one("c"), one("d"));
    let decided = store.decide(&event_id, &refs_at(&a, close_at - 1)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
    assert!(decided.decided_at_ms >= now, "decided on Redis' clock");
    // Accepted before close too, but no unit is left: the real answer, not CLOSED.
    let decided = store.decide(&event_id, &refs_at(&b, open_at)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::SoldOut);
    // Accepted at close or before open: outside the window.
    let decided = store.decide(&event_id, &refs_at(&c, close_at)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    let decided = store.decide(&event_id, &refs_at(&d, open_at - 1)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);

    // A unit returned after close goes back to stock but does not reopen the event.
    let released = store.release(&event_id, &a[0].0, "a", 1).await.unwrap();
    assert_eq!(released, Released::Returned { reopened: false });
    assert_eq!(common::meta_status(&mut conn, &event_id).await.as_deref(), Some("sold_out"));
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
}

#[tokio::test]
async fn past_the_grace_or_after_an_operator_close_every_entry_is_closed() {
    let eligible = vec!["m1".to_string()];
    let mut conn = common::redis().await;
    let store = common::store().await;
    let now = common::redis_now(&mut conn).await;
    let grace = stock_processor::LATE_DECISION_GRACE.as_millis() as i64;

    // Closed a minute longer ago than the grace: even an entry accepted in time is CLOSED.
    let late = common::new_event_id();
    let close_at = now - grace - 60_000;
    EventSetup { event_id: &late, for_sale: 5, eligible: &eligible, open_at_ms: close_at - 60_000, close_at_ms: close_at }
        .create(&mut conn)
        .await;
    let entry = vec![(common::new_entry_id(), "m1".to_string())];
    let decided = store.decide(&late, &refs_at(&entry, close_at - 1)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&late).stock).await, Some(5));

    // Closed by an operator while open: entries accepted before are CLOSED too.
    let closed = common::new_event_id();
    EventSetup::open_now(&closed, 5, &eligible).create(&mut conn).await;
    let () = redis::cmd("HSET")
        .arg(EventKeys::new(&closed).meta)
        .arg("status")
        .arg("closed")
        .query_async(&mut conn)
        .await
        .unwrap();
    let decided = store.decide(&closed, &refs_at(&entry, now - 1)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
}

#[tokio::test]
async fn an_entry_accepted_in_the_future_is_judged_at_now() {
    let eligible = vec!["m1".to_string()];
    let mut conn = common::redis().await;
    let store = common::store().await;
    let now = common::redis_now(&mut conn).await;

    // Not open yet: an entry claiming a time inside the window is still too early.
    let early = common::new_event_id();
    EventSetup { event_id: &early, for_sale: 5, eligible: &eligible, open_at_ms: now + 60_000, close_at_ms: now + 3_600_000 }
        .create(&mut conn)
        .await;
    let entry = vec![(common::new_entry_id(), "m1".to_string())];
    let decided = store.decide(&early, &refs_at(&entry, now + 120_000)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&early).stock).await, Some(5));

    // Open: an entry claiming a time after close is judged at now, inside the window.
    let open = common::new_event_id();
    EventSetup { event_id: &open, for_sale: 5, eligible: &eligible, open_at_ms: now - 60_000, close_at_ms: now + 3_600_000 }
        .create(&mut conn)
        .await;
    let entry = vec![(common::new_entry_id(), "m1".to_string())];
    let decided = store.decide(&open, &refs_at(&entry, now + 7_200_000)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
}
