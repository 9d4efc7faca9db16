//! The retry state machine against the provider simulator: uncertain
//! outcomes are resolved by lookup or left unresolved — never failed.

mod common;

use std::time::Duration;

use common::Sim;
use provider_sim::Faults;
use sender::dispatch::{Dispatcher, NotSent, Rejected, Resolution, Unresolved};
use sender::provider::{GiftOrder, ProviderClient};
use sender::settings::ProviderSettings;
use tokio_util::sync::CancellationToken;

fn settings(url: &str) -> ProviderSettings {
    ProviderSettings {
        base_url: url.to_string(),
        timeout_ms: 200,
        max_attempts: 4,
        backoff_base_ms: 10,
        backoff_max_ms: 100,
        ..ProviderSettings::default()
    }
}

fn dispatcher(settings: &ProviderSettings) -> Dispatcher {
    Dispatcher::new(ProviderClient::new(settings).unwrap(), settings, CancellationToken::new())
}

/// The gift must be left unresolved (retry the batch later), not rejected.
fn unresolved(result: Result<Resolution, NotSent>) -> Unresolved {
    match result {
        Err(NotSent::Unresolved(unresolved)) => unresolved,
        other => panic!("expected unresolved, got {other:?}"),
    }
}

fn order(phone: &str) -> GiftOrder {
    GiftOrder {
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        phone: phone.into(),
        product: "coffee-10000".into(),
        amount: 10_000,
    }
}

#[tokio::test]
async fn a_timed_out_issue_is_resolved_by_lookup_not_issued_again() {
    let sim = Sim::start(Faults { timeout_after_issue_rate: 1.0, hang_ms: 2_000, ..Faults::default() }, 1).await;
    let order = order("010-3000-0001");
    let resolution = dispatcher(&settings(&sim.url)).send(&order, None).await.expect("resolved");
    let gifts = sim.gifts().await;
    assert_eq!(gifts.len(), 1);
    // Issue (timed out), then lookup (found).
    assert_eq!(resolution, Resolution::Sent { gift_id: gifts[0].gift_id.clone(), attempts: 2 });
    sim.stop().await;
}

#[tokio::test]
async fn a_refused_phone_is_a_definite_failure() {
    let sim = Sim::start(Faults { refused_phones: vec!["010-3000-0002".into()], ..Faults::default() }, 2).await;
    let resolution = dispatcher(&settings(&sim.url)).send(&order("010-3000-0002"), None).await.expect("resolved");
    assert_eq!(resolution, Resolution::Failed { reason: "phone_refused".into(), attempts: 1 });
    assert!(sim.gifts().await.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn a_provider_that_keeps_failing_leaves_the_gift_unresolved_not_failed() {
    let sim = Sim::start(Faults { transient_failure_rate: 1.0, ..Faults::default() }, 3).await;
    let unresolved = unresolved(dispatcher(&settings(&sim.url)).send(&order("010-3000-0003"), None).await);
    assert_eq!(unresolved.attempts, 4);
    sim.stop().await;
}

#[tokio::test]
async fn an_unreachable_provider_leaves_the_gift_unresolved() {
    let port = testkit::unused_port();
    let settings = settings(&format!("http://127.0.0.1:{port}"));
    let unresolved = unresolved(dispatcher(&settings).send(&order("010-3000-0004"), None).await);
    assert_eq!(unresolved.attempts, 4);
}

#[tokio::test]
async fn a_failing_lookup_keeps_the_outcome_unknown_and_issues_nothing_more() {
    let faults =
        Faults { timeout_after_issue_rate: 1.0, hang_ms: 2_000, lookup_failure_rate: 1.0, ..Faults::default() };
    let sim = Sim::start(faults, 4).await;
    let unresolved = unresolved(dispatcher(&settings(&sim.url)).send(&order("010-3000-0005"), None).await);
    // One issue, then only lookups: the outcome never became safe to retry or to fail.
    assert_eq!(unresolved.attempts, 4);
    assert_eq!(sim.gifts().await.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_key_already_used_with_another_phone_resolves_to_the_existing_gift() {
    let sim = Sim::start(Faults::default(), 5).await;
    let first = order("010-3000-0006");
    let earlier = dispatcher(&settings(&sim.url)).send(&first, None).await.expect("sent");
    let changed_phone = GiftOrder { phone: "010-3000-9999".into(), ..first };
    let later = dispatcher(&settings(&sim.url)).send(&changed_phone, None).await.expect("resolved");
    let (Resolution::Sent { gift_id: a, .. }, Resolution::Sent { gift_id: b, .. }) = (earlier, later) else {
        panic!("both sent");
    };
    assert_eq!(a, b, "the same gift, not a second one");
    assert_eq!(sim.gifts().await.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn rate_limited_calls_wait_for_retry_after_and_succeed() {
    let sim = Sim::start(Faults { rate_limit_per_sec: Some(2), ..Faults::default() }, 6).await;
    let mut settings = settings(&sim.url);
    settings.backoff_max_ms = 1_500;
    settings.max_attempts = 5;
    let dispatcher = dispatcher(&settings);
    let orders: Vec<GiftOrder> = (0..4).map(|i| order(&format!("010-3000-01{i:02}"))).collect();
    let started = std::time::Instant::now();
    let results = futures::future::join_all(orders.iter().map(|o| dispatcher.send(o, None))).await;
    assert!(results.iter().all(|r| matches!(r, Ok(Resolution::Sent { .. }))), "{results:?}");
    assert_eq!(sim.gifts().await.len(), 4);
    assert!(started.elapsed() >= Duration::from_millis(900), "429s were waited out");
    sim.stop().await;
}

#[tokio::test]
async fn shutdown_cuts_the_retries_short() {
    let sim = Sim::start(Faults { transient_failure_rate: 1.0, ..Faults::default() }, 7).await;
    let mut settings = settings(&sim.url);
    settings.backoff_base_ms = 2_000;
    settings.backoff_max_ms = 2_000;
    settings.max_attempts = 10;
    let shutdown = CancellationToken::new();
    let dispatcher = Dispatcher::new(ProviderClient::new(&settings).unwrap(), &settings, shutdown.clone());
    shutdown.cancel();
    let started = std::time::Instant::now();
    let unresolved = unresolved(dispatcher.send(&order("010-3000-0007"), None).await);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(unresolved.attempts, 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_wrong_base_url_leaves_the_gift_unresolved_not_failed() {
    let sim = Sim::start(Faults::default(), 8).await;
    // The simulator answers 404 on any unknown path, as a misconfigured provider URL would.
    let settings = settings(&format!("{}/nope", sim.url));
    let unresolved = unresolved(dispatcher(&settings).send(&order("010-3000-0008"), None).await);
    // Repeating a call our configuration got wrong is pointless: one call, then the batch retries later.
    assert_eq!(unresolved.attempts, 1);
    assert!(unresolved.last.contains("404"), "{unresolved:?}");
    assert!(sim.gifts().await.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn a_request_we_built_wrong_is_rejected_on_its_own_not_failed() {
    let sim = Sim::start(Faults::default(), 9).await;
    // amount 0 → 400 invalid_request: this request, not a refusal of the member,
    // and not a configuration every gift shares (that would be 401/403/404).
    let bad = GiftOrder { amount: 0, ..order("010-3000-0009") };
    let result = dispatcher(&settings(&sim.url)).send(&bad, None).await;
    let Err(NotSent::Rejected(Rejected { status, attempts, .. })) = result else {
        panic!("rejected, never failed: {result:?}");
    };
    assert_eq!((status, attempts), (400, 1), "repeating it is pointless: one call");
    assert!(sim.gifts().await.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn a_phone_of_unicode_whitespace_is_rejected_by_the_provider_as_malformed() {
    // What the sender's phone filter must agree with: the provider's 400.
    let sim = Sim::start(Faults::default(), 12).await;
    let result = dispatcher(&settings(&sim.url)).send(&order("\u{2003}\u{2003}"), None).await;
    assert!(matches!(result, Err(NotSent::Rejected(Rejected { status: 400, .. }))), "{result:?}");
    assert!(sender::phone::check(Some("\u{2003}\u{2003}")).is_err(), "the sender's filter agrees");
    sim.stop().await;
}

#[tokio::test]
async fn only_the_contracts_not_found_proves_nothing_was_issued() {
    let sim = Sim::start(Faults::default(), 10).await;
    let key = uuid::Uuid::new_v4().to_string();
    let right = ProviderClient::new(&settings(&sim.url)).unwrap();
    assert_eq!(right.lookup(&key, None).await, Ok(None));
    // A bare 404 from a wrong path says nothing about the gift.
    let wrong = ProviderClient::new(&settings(&format!("{}/nope", sim.url))).unwrap();
    assert!(wrong.lookup(&key, None).await.is_err());
    sim.stop().await;
}

#[tokio::test]
async fn a_gift_that_cannot_be_issued_fails_only_after_the_provider_says_none_exists() {
    use sender::dispatch::Start;
    let sim = Sim::start(Faults::default(), 13).await;
    let dispatcher = dispatcher(&settings(&sim.url));
    let no_phone = Start { maybe_issued: true, cannot_issue: Some("no_phone") };
    // Nothing ever asked: failed at once, no call.
    let never = order("");
    let start = Start { maybe_issued: false, ..no_phone };
    assert_eq!(
        dispatcher.resume(&never, None, start).await,
        Ok(Resolution::Failed { reason: "no_phone".into(), attempts: 0 })
    );
    // Asked before, nothing issued: one lookup (404 not_found), then failed.
    let asked = order("");
    assert_eq!(
        dispatcher.resume(&asked, None, no_phone).await,
        Ok(Resolution::Failed { reason: "no_phone".into(), attempts: 1 })
    );
    // Issued before the phone went: found, SENT, never failed.
    let issued = order("010-3000-0013");
    let Ok(Resolution::Sent { gift_id, .. }) = dispatcher.send(&issued, None).await else { panic!("sent") };
    let gone = GiftOrder { phone: String::new(), ..issued };
    assert_eq!(dispatcher.resume(&gone, None, no_phone).await, Ok(Resolution::Sent { gift_id, attempts: 1 }));
    assert_eq!(sim.gifts().await.len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn answers_that_are_not_our_gift_leave_it_unresolved_and_parkable() {
    for faults in
        [Faults { wrong_key_rate: 1.0, ..Faults::default() }, Faults { malformed_rate: 1.0, ..Faults::default() }]
    {
        let sim = Sim::start(faults.clone(), 14).await;
        let unresolved = unresolved(dispatcher(&settings(&sim.url)).send(&order("010-3000-0014"), None).await);
        assert!(unresolved.parkable, "{faults:?}: {unresolved:?}");
        assert_eq!(sim.gifts().await.len(), 1, "issued once, whatever was answered");
        sim.stop().await;
    }
}

#[tokio::test]
async fn a_reset_after_issue_is_resolved_by_lookup() {
    let sim = Sim::start(Faults { reset_after_issue_rate: 1.0, ..Faults::default() }, 15).await;
    let resolution = dispatcher(&settings(&sim.url)).send(&order("010-3000-0015"), None).await.expect("resolved");
    let gifts = sim.gifts().await;
    assert_eq!(gifts.len(), 1);
    assert_eq!(resolution, Resolution::Sent { gift_id: gifts[0].gift_id.clone(), attempts: 2 });
    sim.stop().await;
}
