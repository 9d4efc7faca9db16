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
/// An event whose line holds nobody beyond its units: admission is full once
/// every unit has a ticket (the sold-out and reopen announcements follow it).
async fn no_line(conn: &mut platform::redis::Connection, event_id: &str) {
    let () =
        redis::cmd("HSET").arg(EventKeys::new(event_id).meta).arg("line_depth").arg(0).query_async(conn).await.unwrap();
}

/// Entries with the tickets ingest gave them, accepted at `accepted_at_ms`.
fn ticketed(entries: &[(Entry, i64)], accepted_at_ms: i64) -> Vec<EntryRef<'_>> {
    entries
        .iter()
        .map(|((entry_id, user_id), ticket)| EntryRef {
            entry_id,
            user_id,
            accepted_at_ms,
            ticket: *ticket,
            hole: false,
        })
        .collect()
}

fn refs(entries: &[Entry]) -> Vec<EntryRef<'_>> {
    refs_at(entries, schemas::now_millis())
}

/// Entries accepted at `accepted_at_ms`.
fn refs_at(entries: &[Entry], accepted_at_ms: i64) -> Vec<EntryRef<'_>> {
    entries
        .iter()
        .map(|(entry_id, user_id)| EntryRef { entry_id, user_id, accepted_at_ms, ticket: 0, hole: false })
        .collect()
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
    let decided: Vec<(Entry, Decision)> =
        futures::future::join_all(tasks).await.into_iter().flat_map(|joined| joined.expect("decider task")).collect();
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
    no_line(&mut conn, &event_id).await;
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
    assert_eq!(repeated, Released::Duplicate(vec![]));
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
    assert!(changes.drain(Duration::from_millis(300)).await.is_empty(), "a duplicate release published");

    // The next winner gets the returned unit under a new number (no number is
    // ever held by two members), and the event sells out again.
    let c = vec![(common::new_entry_id(), "c".to_string())];
    let decided = store.decide(&event_id, &refs(&c)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(3) });
    assert_eq!(decided.remaining, Some(0));
    assert_eq!(common::get_i64(&mut conn, &keys.next_unit).await, Some(3));
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
    EventSetup {
        event_id: &ended,
        for_sale: 5,
        eligible: &eligible,
        open_at_ms: now - 120_000,
        close_at_ms: now - 60_000,
    }
    .create(&mut conn)
    .await;
    let answer = store.decide(&ended, &refs(&one("m1"))).await.unwrap();
    assert_eq!(answer.decisions[0].outcome, Outcome::Closed);

    let early = common::new_event_id();
    EventSetup {
        event_id: &early,
        for_sale: 5,
        eligible: &eligible,
        open_at_ms: now + 60_000,
        close_at_ms: now + 120_000,
    }
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

async fn pttl(conn: &mut platform::redis::Connection, key: &str) -> i64 {
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
    for key in [&keys.winners, &keys.decisions, &keys.next_unit, &keys.released] {
        assert_eq!(pttl(&mut conn, key).await, -2, "{key} exists before any decision");
    }
    let store = common::store().await;
    let entry = common::new_entry_id();
    let won = store.decide(&event_id, &refs(&[(entry.clone(), "m1".into())])).await.unwrap();
    assert_eq!(won.decisions[0].outcome, Outcome::Won);
    let released = store.release(&event_id, &entry, "m1", 1).await.unwrap();
    assert!(matches!(released, Released::Returned { .. }), "{released:?}");

    // Each copies meta's expiry (close_at + a day), not some expiry of its own.
    let meta_ttl = pttl(&mut conn, &keys.meta).await;
    assert!(meta_ttl > 3_600_000, "meta expires at close_at + grace ({meta_ttl})");
    for key in
        [&keys.winners, &keys.decisions, &keys.next_unit, &keys.released, &keys.ticket, &keys.tickets, &keys.frontier]
    {
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
    no_line(&mut conn, &event_id).await;
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
    EventSetup {
        event_id: &late,
        for_sale: 5,
        eligible: &eligible,
        open_at_ms: close_at - 60_000,
        close_at_ms: close_at,
    }
    .create(&mut conn)
    .await;
    let entry = vec![(common::new_entry_id(), "m1".to_string())];
    let decided = store.decide(&late, &refs_at(&entry, close_at - 1)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&late).stock).await, Some(5));

    // Closed by an operator while open: an entry ingest admitted before (it
    // holds the ticket ingest gave it) is decided on its ticket; one another
    // producer wrote without a ticket is CLOSED.
    let eligible = vec!["m1".to_string(), "m2".to_string()];
    let closed = common::new_event_id();
    EventSetup::open_now(&closed, 5, &eligible).create(&mut conn).await;
    let admitted = (common::new_entry_id(), "m1".to_string());
    let keys = EventKeys::new(&closed);
    let () = redis::cmd("HSET").arg(&keys.tickets).arg(&admitted.0).arg(1).query_async(&mut conn).await.unwrap();
    let () = redis::cmd("HSET").arg(&keys.meta).arg("status").arg("closed").query_async(&mut conn).await.unwrap();
    let decided = store.decide(&closed, &ticketed(&[(admitted, 1)], now - 1)).await.unwrap();
    assert_eq!(
        decided.decisions[0],
        Decision { outcome: Outcome::Won, unit_no: Some(1) },
        "its 202 was given while open"
    );
    let partner = vec![(common::new_entry_id(), "m2".to_string())];
    let decided = store.decide(&closed, &refs_at(&partner, now - 1)).await.unwrap();
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
    EventSetup {
        event_id: &early,
        for_sale: 5,
        eligible: &eligible,
        open_at_ms: now + 60_000,
        close_at_ms: now + 3_600_000,
    }
    .create(&mut conn)
    .await;
    let entry = vec![(common::new_entry_id(), "m1".to_string())];
    let decided = store.decide(&early, &refs_at(&entry, now + 120_000)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert_eq!(common::get_i64(&mut conn, &EventKeys::new(&early).stock).await, Some(5));

    // Open: an entry claiming a time after close is judged at now, inside the window.
    let open = common::new_event_id();
    EventSetup {
        event_id: &open,
        for_sale: 5,
        eligible: &eligible,
        open_at_ms: now - 60_000,
        close_at_ms: now + 3_600_000,
    }
    .create(&mut conn)
    .await;
    let entry = vec![(common::new_entry_id(), "m1".to_string())];
    let decided = store.decide(&open, &refs_at(&entry, now + 7_200_000)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
}

async fn zrange(conn: &mut platform::redis::Connection, key: &str) -> Vec<String> {
    redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).query_async(conn).await.expect("ZRANGE")
}

#[tokio::test]
async fn a_member_gets_one_entry_whatever_the_entry_ids() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["a", "b", "c"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let now = common::redis_now(&mut conn).await;

    // a wins, b loses; then each enters again under new entry ids (another
    // producer, or ingest after Redis lost its first-entry mark).
    let first: Vec<Entry> = ["a", "b"].iter().map(|m| (common::new_entry_id(), m.to_string())).collect();
    let decided = store.decide(&event_id, &refs_at(&first, now - 5_000)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(1) });
    assert_eq!(decided.decisions[1].outcome, Outcome::SoldOut);
    let again: Vec<Entry> = ["a", "b", "b"].iter().map(|m| (common::new_entry_id(), m.to_string())).collect();
    // Earlier accept times than the first entries: the standing is the member's, not the time's.
    let decided = store.decide(&event_id, &refs_at(&again, now - 9_000)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::AlreadyWon, unit_no: Some(1) });
    assert_eq!(decided.decisions[1], Decision { outcome: Outcome::SoldOut, unit_no: None });
    assert_eq!(decided.decisions[2], Decision { outcome: Outcome::SoldOut, unit_no: None });

    // The members hash names each member's first entry; only b's first entry waits in line.
    let members = common::hgetall(&mut conn, &keys.members).await;
    assert_eq!(members.get("a"), Some(&first[0].0));
    assert_eq!(members.get("b"), Some(&first[1].0));
    assert_eq!(zrange(&mut conn, &keys.waitlist).await, vec![format!("{}|b|{}", first[1].0, now - 5_000)]);

    // a's unit comes back: it goes to b's first entry (under a new number),
    // never to b's later ones.
    let released = store.release(&event_id, &first[0].0, "a", 1).await.unwrap();
    let Released::Promoted(promotions) = released else { panic!("expected a promotion, got {released:?}") };
    let promotion = &promotions[0];
    assert_eq!(
        (promotion.entry_id.as_str(), promotion.user_id.as_str(), promotion.unit_no),
        (first[1].0.as_str(), "b", 2)
    );
    // b's later entries (redelivered) keep their answer; a new one sees b's win.
    let decided = store.decide(&event_id, &refs(&again[1..])).await.unwrap();
    assert!(decided.decisions.iter().all(|d| d.outcome == Outcome::SoldOut));
    let another = vec![(common::new_entry_id(), "b".to_string())];
    let decided = store.decide(&event_id, &refs(&another)).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::AlreadyWon, unit_no: Some(2) });
    assert_eq!(common::hgetall(&mut conn, &keys.winners).await.len(), 2, "a (released) and b");
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(0));
}

#[tokio::test]
async fn a_returned_unit_goes_to_the_lowest_ticket_waiting_whose_member_has_not_won() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["w1", "w2", "l1", "l2", "l3", "l4"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 2, &eligible).create(&mut conn).await;
    no_line(&mut conn, &event_id).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let mut changes = StateChanges::subscribe(&event_id).await;
    let now = common::redis_now(&mut conn).await;
    let one = |member: &str| (common::new_entry_id(), member.to_string());

    let winners = vec![(one("w1"), 1), (one("w2"), 2)];
    let decided = store.decide(&event_id, &ticketed(&winners, now - 60_000)).await.unwrap();
    assert!(decided.decisions.iter().all(|d| d.outcome == Outcome::Won));
    assert_eq!(decided.tickets, vec![1, 2]);
    assert_eq!(changes.next(Duration::from_secs(5)).await, Some(EventStatus::SoldOut));
    // Lost entries, decided in an order that is not their tickets' (nor their accept times').
    let (l1, l2, l3, l4) = (one("l1"), one("l2"), one("l3"), one("l4"));
    for (entry, ticket) in [(&l1, 6), (&l2, 4), (&l3, 5), (&l4, 3)] {
        let batch = [(entry.clone(), ticket)];
        let decided = store.decide(&event_id, &ticketed(&batch, now - 10_000 * ticket)).await.unwrap();
        assert_eq!(decided.decisions[0].outcome, Outcome::SoldOut);
        assert_eq!(decided.tickets, vec![ticket]);
    }
    // l4 is first in line, but its member holds a unit by now (a state a
    // rebuild or an operator can leave): it leaves the line, unpromoted, and
    // its place passes on.
    let () = redis::cmd("HSET").arg(&keys.winners).arg("l4").arg(99).query_async(&mut conn).await.unwrap();

    // w1's gift was refused: its unit goes to l2 (ticket 4: the lowest waiting with no unit).
    let released = store.release(&event_id, &winners[0].0 .0, "w1", 1).await.unwrap();
    let Released::Promoted(promotions) = released else { panic!("expected a promotion, got {released:?}") };
    let [promotion] = promotions.as_slice() else { panic!("one promotion: {promotions:?}") };
    assert_eq!(promotion.entry_id, l2.0);
    assert_eq!(promotion.user_id, "l2");
    assert_eq!((promotion.unit_no, promotion.ticket), (3, 4), "a new unit number; its place in line");
    assert_eq!(promotion.accepted_at_ms, now - 40_000);
    assert!(promotion.decided_at_ms >= now, "Redis' clock at the hand-over");
    let decisions = common::hgetall(&mut conn, &keys.decisions).await;
    assert_eq!(decisions.get(&l2.0).map(String::as_str), Some("WON|3"));
    assert_eq!(common::hgetall(&mut conn, &keys.winners).await.get("l2").map(String::as_str), Some("3"));
    // The unit went straight on: stock stays at zero, the event stays sold out, nothing published.
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(0));
    assert_eq!(common::meta_status(&mut conn, &event_id).await.as_deref(), Some("sold_out"));
    assert!(changes.drain(Duration::from_millis(300)).await.is_empty(), "a promotion published a state change");
    assert_eq!(
        zrange(&mut conn, &keys.waitlist).await,
        vec![format!("{}|l3|{}", l3.0, now - 50_000), format!("{}|l1|{}", l1.0, now - 60_000)]
    );
    // l2's entry redelivered: its answer is now the win.
    let decided = store.decide(&event_id, &refs(std::slice::from_ref(&l2))).await.unwrap();
    assert_eq!(decided.decisions[0], Decision { outcome: Outcome::Won, unit_no: Some(3) });

    // l2's gift fails too: a unit goes on to l3, never back to l2.
    let released = store.release(&event_id, &l2.0, "l2", 3).await.unwrap();
    assert!(matches!(&released, Released::Promoted(p) if p[0].entry_id == l3.0 && p[0].unit_no == 4), "{released:?}");
    // w2's: to l1, the last in line.
    let released = store.release(&event_id, &winners[1].0 .0, "w2", 2).await.unwrap();
    assert!(matches!(&released, Released::Promoted(p) if p[0].entry_id == l1.0 && p[0].unit_no == 5), "{released:?}");
    assert!(zrange(&mut conn, &keys.waitlist).await.is_empty());

    // Nobody left in line: the next returned unit stays in stock and admission reopens.
    let released = store.release(&event_id, &l3.0, "l3", 4).await.unwrap();
    assert_eq!(released, Released::Returned { reopened: true });
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
    assert_eq!(changes.next(Duration::from_secs(5)).await, Some(EventStatus::Open));

    // Each promoted entry won once; the counter agrees with the decision log
    // (for_sale − WON decisions + released units, as reconcile derives it).
    let decisions = common::hgetall(&mut conn, &keys.decisions).await;
    let won = decisions.values().filter(|d| d.starts_with("WON|")).count() as i64;
    let released: i64 = redis::cmd("SCARD").arg(&keys.released).query_async(&mut conn).await.unwrap();
    assert_eq!(won, 5, "w1, w2, l2, l3, l1");
    assert_eq!(2 - won + released, 1);
}

/// The ticket, not the order of arrival: the second instance's entries with
/// lower tickets arrive after the first decided higher ones, and still hold
/// the units; an invalid entry's place passes to the next ticket, waiting or
/// not yet seen.
#[tokio::test]
async fn the_lowest_valid_tickets_hold_the_units_whatever_order_they_arrive_in() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["a", "b", "c", "e", "f"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 2, &eligible).create(&mut conn).await;
    let store = common::store().await;
    let now = common::redis_now(&mut conn).await;
    let one = |member: &str| (common::new_entry_id(), member.to_string());
    let (a, b, c, d, e, f) = (one("a"), one("b"), one("c"), one("d"), one("e"), one("f"));

    // Tickets 3 and 5 arrive first: beyond the two units, they wait.
    let late = [(c.clone(), 3), (e.clone(), 5)];
    let decided = store.decide(&event_id, &ticketed(&late, now - 1_000)).await.unwrap();
    assert!(decided.decisions.iter().all(|d| d.outcome == Outcome::SoldOut), "{decided:?}");
    // Ticket 2 is d, who did not buy: its place passes to ticket 3 at once.
    let decided = store.decide(&event_id, &ticketed(&[(d.clone(), 2)], now - 1_000)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Ineligible);
    assert_eq!(decided.promotions.len(), 1, "{decided:?}");
    assert_eq!((decided.promotions[0].entry_id.as_str(), decided.promotions[0].ticket), (c.0.as_str(), 3));
    // Ticket 1 arrives last and still wins.
    let decided = store.decide(&event_id, &ticketed(&[(a.clone(), 1)], now - 1_000)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Won);
    // Both units are held: ticket 4 (and 5, 6) wait.
    let rest = [(b.clone(), 4), (f.clone(), 6)];
    let decided = store.decide(&event_id, &ticketed(&rest, now - 1_000)).await.unwrap();
    assert!(decided.decisions.iter().all(|d| d.outcome == Outcome::SoldOut), "{decided:?}");
    assert_eq!(decided.remaining, Some(0));
    // A batch run again (an aborted transaction) announces d's promotion again, never a second one.
    let again = store.decide(&event_id, &ticketed(&[(d, 2)], now - 1_000)).await.unwrap();
    assert_eq!(again.promotions.len(), 1);
    assert_eq!(again.promotions[0].unit_no, decided_unit(&mut conn, &event_id, &c.0).await);
}

async fn decided_unit(conn: &mut platform::redis::Connection, event_id: &str, entry: &str) -> i32 {
    let stored = common::hgetall(conn, &EventKeys::new(event_id).decisions).await;
    stored.get(entry).and_then(|d| d.strip_prefix("WON|")).and_then(|u| u.parse().ok()).unwrap_or(-1)
}

#[tokio::test]
async fn a_redelivered_release_repeats_its_promotion_and_promotes_nobody_else() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["w", "l1", "l2"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let now = common::redis_now(&mut conn).await;

    let entries: Vec<Entry> = ["w", "l1", "l2"].iter().map(|m| (common::new_entry_id(), m.to_string())).collect();
    for (n, entry) in entries.iter().enumerate() {
        store.decide(&event_id, &refs_at(std::slice::from_ref(entry), now - 3_000 + n as i64)).await.unwrap();
    }
    let first = store.release(&event_id, &entries[0].0, "w", 1).await.unwrap();
    let Released::Promoted(promotions) = first else { panic!("expected a promotion, got {first:?}") };
    let promotion = promotions[0].clone();
    assert_eq!(promotion.entry_id, entries[1].0);

    // The aborted batch runs again, twice: the same promotion, nobody else.
    for _ in 0..2 {
        let again = store.release(&event_id, &entries[0].0, "w", 1).await.unwrap();
        assert_eq!(again, Released::Duplicate(vec![promotion.clone()]));
    }
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(0));
    assert_eq!(zrange(&mut conn, &keys.waitlist).await, vec![format!("{}|l2|{}", entries[2].0, now - 3_000 + 2)]);
    let decisions = common::hgetall(&mut conn, &keys.decisions).await;
    assert_eq!(decisions.get(&entries[2].0).map(String::as_str), Some("SOLD_OUT|"));
    assert_eq!(common::hgetall(&mut conn, &keys.winners).await.len(), 2);
}

#[tokio::test]
async fn after_close_a_returned_unit_promotes_nobody() {
    let eligible: Vec<String> = ["w", "l"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    let now = common::redis_now(&mut conn).await;
    let event_id = common::new_event_id();
    let close_at = now - 60_000;
    EventSetup {
        event_id: &event_id,
        for_sale: 1,
        eligible: &eligible,
        open_at_ms: close_at - 60_000,
        close_at_ms: close_at,
    }
    .create(&mut conn)
    .await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let entries: Vec<Entry> = ["w", "l"].iter().map(|m| (common::new_entry_id(), m.to_string())).collect();
    let decided = store.decide(&event_id, &refs_at(&entries, close_at - 1)).await.unwrap();
    assert_eq!(decided.decisions[1].outcome, Outcome::SoldOut);

    let released = store.release(&event_id, &entries[0].0, "w", 1).await.unwrap();
    assert_eq!(released, Released::Returned { reopened: false });
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
    assert_eq!(zrange(&mut conn, &keys.waitlist).await.len(), 1, "l still in line, unserved");
}

#[tokio::test]
async fn a_redis_behind_the_committed_marks_is_answered_stale_and_nothing_is_written() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["a", "b"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let marks = |expected: &[(&str, i64)], new: &[(&str, i64)]| stock_processor::Marks {
        expected: expected.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
        new: new.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
    };

    // A batch at offsets 10..=14 of partition 2 commits: the marks rise to 15.
    let a = vec![(common::new_entry_id(), "a".to_string())];
    let won = store.decide_marked(&event_id, &refs(&a), &marks(&[], &[("s:2", 15)])).await.unwrap();
    assert_eq!(won.decisions[0].outcome, Outcome::Won);
    assert_eq!(common::hgetall(&mut conn, &keys.applied).await.get("s:2").map(String::as_str), Some("15"));
    // A re-run of an older batch never lowers a mark.
    store.decide_marked(&event_id, &refs(&a), &marks(&[], &[("s:2", 12)])).await.unwrap();
    assert_eq!(common::hgetall(&mut conn, &keys.applied).await.get("s:2").map(String::as_str), Some("15"));

    // Redis loses that write (the decision and its mark); Kafka kept the commit.
    let () = redis::cmd("HSET").arg(&keys.applied).arg("s:2").arg(10).query_async(&mut conn).await.unwrap();
    let () = redis::cmd("HDEL").arg(&keys.winners).arg("a").query_async(&mut conn).await.unwrap();
    let () = redis::cmd("SET").arg(&keys.stock).arg(1).arg("KEEPTTL").query_async(&mut conn).await.unwrap();

    let b = vec![(common::new_entry_id(), "b".to_string())];
    let expected = marks(&[("s:2", 15), ("r:0", 0)], &[("s:2", 16)]);
    let stale = store.decide_marked(&event_id, &refs(&b), &expected).await.unwrap_err();
    assert!(
        matches!(&stale, stock_processor::StoreError::Stale { field, applied: 10, expected: 15 } if field == "s:2"),
        "{stale:?}"
    );
    let released = store.release_marked(&event_id, &a[0].0, "a", 1, &expected).await.unwrap_err();
    assert!(matches!(released, stock_processor::StoreError::Stale { .. }), "{released:?}");
    // Nothing was decided on the forgetful state: no answer for b, the unit still counted once.
    assert!(!common::hgetall(&mut conn, &keys.decisions).await.contains_key(&b[0].0));
    assert_eq!(common::get_i64(&mut conn, &keys.stock).await, Some(1));
    assert_eq!(common::hgetall(&mut conn, &keys.applied).await.get("s:2").map(String::as_str), Some("10"));
    // An event Redis never heard of has no marks to be behind on only if none were committed.
    let unknown = common::new_event_id();
    let answer = store.decide_marked(&unknown, &refs(&b), &marks(&[], &[("s:2", 16)])).await.unwrap();
    assert_eq!(answer.decisions[0].outcome, Outcome::Ineligible);
    let existing: i64 =
        redis::cmd("EXISTS").arg(&EventKeys::new(&unknown).all()[..]).query_async(&mut conn).await.unwrap();
    assert_eq!(existing, 0, "an unknown event gets no marks either");
}

#[tokio::test]
async fn the_line_the_members_the_marks_and_the_promotions_expire_with_the_event() {
    let event_id = common::new_event_id();
    let eligible = vec!["m1".to_string(), "m2".to_string()];
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let marks = stock_processor::Marks { expected: vec![], new: vec![("s:0".into(), 2)] };
    let entries: Vec<Entry> = ["m1", "m2"].iter().map(|m| (common::new_entry_id(), m.to_string())).collect();
    store.decide_marked(&event_id, &refs(&entries), &marks).await.unwrap();
    let released = store.release(&event_id, &entries[0].0, "m1", 1).await.unwrap();
    assert!(matches!(released, Released::Promoted(_)), "{released:?}");

    let meta_ttl = pttl(&mut conn, &keys.meta).await;
    for key in [&keys.applied, &keys.members, &keys.promoted] {
        let ttl = pttl(&mut conn, key).await;
        assert!(ttl > 0 && (meta_ttl - ttl).abs() < 60_000, "{key} expires at {ttl}, meta at {meta_ttl}");
    }
    // The line was emptied by the promotion; while it existed it had meta's expiry too.
    let loser = vec![(common::new_entry_id(), "m3".to_string())];
    let () = redis::cmd("SADD").arg(&keys.eligible).arg("m3").query_async(&mut conn).await.unwrap();
    store.decide(&event_id, &refs(&loser)).await.unwrap();
    let ttl = pttl(&mut conn, &keys.waitlist).await;
    assert!(ttl > 0 && (meta_ttl - ttl).abs() < 60_000, "waitlist expires at {ttl}, meta at {meta_ttl}");
}

#[tokio::test]
async fn an_expired_event_still_named_by_the_committed_marks_is_unknown_not_stale() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["a", "b"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let marks = |expected: &[(&str, i64)], new: &[(&str, i64)]| stock_processor::Marks {
        expected: expected.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
        new: new.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
    };
    let a = vec![(common::new_entry_id(), "a".to_string())];
    let won = store.decide_marked(&event_id, &refs(&a), &marks(&[], &[("s:2", 15), ("r:1", 3)])).await.unwrap();
    assert_eq!(won.decisions[0].outcome, Outcome::Won);

    // A day after close every key of the event expires; the partitions'
    // committed offset metadata still names it with marks 15 and 3. An entry
    // of it arriving now was accepted before close, so over a day ago (one
    // accepted later could only be of an event lost whole: STALE, below).
    let () = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut conn).await.unwrap();
    let expected = marks(&[("s:2", 15), ("r:1", 3)], &[("s:2", 16), ("r:1", 4)]);
    let before_close = schemas::now_millis() - platform::event_keys::GRACE_AFTER_CLOSE.as_millis() as i64 - 60_000;

    let b = vec![(common::new_entry_id(), "b".to_string())];
    let answer =
        store.decide_marked(&event_id, &refs_at(&b, before_close), &expected).await.expect("unknown, not stale");
    assert_eq!(answer.decisions[0].outcome, Outcome::Ineligible);
    assert_eq!(answer.remaining, None);
    let released = store.release_marked(&event_id, &a[0].0, "a", 1, &expected).await.expect("unknown, not stale");
    assert_eq!(released, Released::UnknownEvent);
    let existing: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut conn).await.unwrap();
    assert_eq!(existing, 0, "nothing is written for an expired event: no decision, no mark, no stock");

    // `applied` outliving `meta` by a moment (each key copies meta's expiry on
    // its own) changes nothing: still unknown, still nothing written.
    let () = redis::cmd("HSET").arg(&keys.applied).arg("s:2").arg(15).query_async(&mut conn).await.unwrap();
    let answer = store
        .decide_marked(&event_id, &refs_at(&b, before_close), &marks(&[("s:2", 15), ("r:1", 3)], &[("s:2", 16)]))
        .await
        .unwrap();
    assert_eq!(answer.decisions[0].outcome, Outcome::Ineligible);
    let released =
        store.release_marked(&event_id, &a[0].0, "a", 1, &marks(&[("r:1", 3)], &[("r:1", 4)])).await.unwrap();
    assert_eq!(released, Released::UnknownEvent);
    assert_eq!(common::hgetall(&mut conn, &keys.applied).await.len(), 1, "marks not raised");
    let () = redis::cmd("DEL").arg(&keys.applied).query_async(&mut conn).await.unwrap();
}

/// Redis lost the event whole (every key) after the stage had committed
/// decisions of it: a recent entry is STALE, never INELIGIBLE — answering it
/// INELIGIBLE took accepted members' places for good (50 of 50 in the
/// reproduction: both stock instances paused, the keys deleted, resumed).
/// An entry older than the keys' lifetime cannot be told from one of an
/// expired event, and without committed marks nothing says the event existed:
/// both stay unknown (INELIGIBLE, nothing written).
#[tokio::test]
async fn an_event_lost_whole_is_stale_not_ineligible() {
    let event_id = common::new_event_id();
    let eligible = vec!["m1".to_string(), "m2".to_string()];
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 5, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let first = vec![(common::new_entry_id(), "m1".to_string())];
    let committed = stock_processor::Marks { expected: vec![], new: vec![("s:0".into(), 1)] };
    let decided = store.decide_marked(&event_id, &refs(&first), &committed).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Won);

    let () = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut conn).await.unwrap();
    let next = vec![(common::new_entry_id(), "m2".to_string())];
    let named = stock_processor::Marks { expected: vec![("s:0".into(), 1)], new: vec![("s:0".into(), 2)] };
    let answer = store.decide_marked(&event_id, &refs(&next), &named).await;
    assert!(
        matches!(&answer, Err(stock_processor::StoreError::Stale { field, .. }) if field == "meta"),
        "a lost event must not be decided: {answer:?}"
    );
    let existing: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut conn).await.unwrap();
    assert_eq!(existing, 0, "nothing written for a lost event");

    // Accepted before the keys could have expired? No: unknown, as an expired event.
    let long_ago = schemas::now_millis() - platform::event_keys::GRACE_AFTER_CLOSE.as_millis() as i64 - 60_000;
    let old = store.decide_marked(&event_id, &refs_at(&next, long_ago), &named).await.unwrap();
    assert_eq!(old.decisions[0].outcome, Outcome::Ineligible);
    // No committed mark names it: nothing says it existed.
    let unnamed = store.decide(&event_id, &refs(&next)).await.unwrap();
    assert_eq!(unnamed.decisions[0].outcome, Outcome::Ineligible);
    let existing: i64 = redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(&mut conn).await.unwrap();
    assert_eq!(existing, 0, "nothing written for an unknown event");
}

/// A hole (an admitted entry ingest announced as never having reached the
/// log): CLOSED, and its place passes on to the next ticket waiting; the
/// real record, had it come first, keeps its answer.
#[tokio::test]
async fn a_hole_passes_its_place_to_the_next_in_line() {
    let event_id = common::new_event_id();
    let eligible: Vec<String> = ["a", "b", "c"].iter().map(|m| m.to_string()).collect();
    let mut conn = common::redis().await;
    EventSetup::open_now(&event_id, 1, &eligible).create(&mut conn).await;
    let keys = EventKeys::new(&event_id);
    let store = common::store().await;
    let now = common::redis_now(&mut conn).await;
    let one = |member: &str| (common::new_entry_id(), member.to_string());
    let (a, b, c) = (one("a"), one("b"), one("c"));
    // Ingest gave a ticket 1 and b ticket 2; a's record never reached the log.
    for (entry, ticket) in [(&a, 1), (&b, 2)] {
        let () = redis::cmd("HSET").arg(&keys.tickets).arg(&entry.0).arg(ticket).query_async(&mut conn).await.unwrap();
    }
    let decided = store.decide(&event_id, &ticketed(&[(b.clone(), 2)], now - 1_000)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::SoldOut, "ticket 1's unit is kept for it");

    fn hole(entry: &Entry, ticket: i64, accepted_at_ms: i64) -> EntryRef<'_> {
        EntryRef { entry_id: &entry.0, user_id: &entry.1, accepted_at_ms, ticket, hole: true }
    }
    // A forged hole naming ticket 2 for an entry Redis never ticketed passes no place on.
    let decided = store.decide(&event_id, &[hole(&c, 2, now - 2_000)]).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert!(decided.promotions.is_empty(), "{decided:?}");
    // a's hole: CLOSED, and b (ticket 2) takes the unit.
    let decided = store.decide(&event_id, &[hole(&a, 99, now - 2_000)]).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert_eq!(decided.tickets, vec![1], "Redis' ticket, not the record's");
    assert_eq!(decided.promotions.len(), 1, "{decided:?}");
    assert_eq!(decided.promotions[0].entry_id, b.0);
    // a's real record, late: the hole's answer stands; a is not stuck as entered.
    let decided = store.decide(&event_id, &ticketed(&[(a.clone(), 1)], now - 2_000)).await.unwrap();
    assert_eq!(decided.decisions[0].outcome, Outcome::Closed);
    assert_eq!(
        common::hgetall(&mut conn, &keys.members).await.get("a"),
        None,
        "a hole is not the member's first entry"
    );
}
