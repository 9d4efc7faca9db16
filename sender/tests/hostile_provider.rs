//! The sender against a provider that answers what its contract never
//! promised (a scripted HTTP server, `common::scripted`): every gift is
//! resolved on its own, whatever the answer. For each answer: no gift
//! recorded SENT that is not ours, never FAILED while it may have been
//! issued, no other gift held up, and the member's final state.
//! docs/provider.md has the table these tests stand behind.

mod common;

use std::time::Duration;

use common::scripted::{Answer, Call, ScriptedProvider};
use common::{RunningSender, TestEnv};
use schemas::StockRelease;
use sender::Settings;
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(60);

/// Short timeouts and few rounds, so a hostile answer is met quickly.
fn settings(env: &TestEnv, url: &str) -> Settings {
    let mut settings = env.sender_settings(url);
    settings.provider.timeout_ms = 400;
    settings.provider.max_attempts = 3;
    settings
}

/// The gift recorded for `entry_id`: `(status, provider_ref, reason)`.
async fn outcome(env: &TestEnv, entry_id: &str) -> Option<(String, Option<String>, Option<String>)> {
    env.dispatch_rows().await.into_iter().find(|r| r.entry_id == entry_id).map(|r| (r.status, r.provider_ref, r.reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_that_may_have_been_issued_is_not_failed_when_the_phone_goes() {
    let env = TestEnv::new().await;
    let provider = ScriptedProvider::start().await;
    env.seed_member("blanked", "010-8100-0001").await;
    env.seed_member("deleted", "010-8100-0002").await;
    let blanked = env.won_in(&env.event_id, "blanked", 1);
    let deleted = env.won_in(&env.event_id, "deleted", 2);
    let both = [&blanked, &deleted];
    for won in both {
        // Issued, but the answer never comes; then every lookup fails.
        provider.queue(&won.entry_id, Call::Issue, [Answer::Hold]);
        provider.always(&won.entry_id, Call::Lookup, Answer::Unavailable);
        env.publish(won).await;
    }
    let sender = RunningSender::start(settings(&env, &provider.url)).await;
    wait_for("both issued and looked up", WAIT, || async {
        both.iter().all(|w| provider.calls(&w.entry_id, Call::Lookup) >= 1)
    })
    .await;
    assert_eq!(provider.gift_count(), 2, "both gifts exist at the provider");

    // The shop blanks one phone and deletes the other member meanwhile.
    env.seed_member("blanked", "").await;
    env.kit
        .member_primary_pool()
        .get()
        .await
        .unwrap()
        .execute("DELETE FROM members WHERE member_id = 'deleted'", &[])
        .await
        .unwrap();
    env.kit.members_replayed().await;
    let seen: Vec<usize> = both.iter().map(|w| provider.calls(&w.entry_id, Call::Lookup)).collect();
    wait_for("a run after the phones went", WAIT, || async {
        !env.dispatch_rows().await.is_empty()
            || both.iter().zip(&seen).all(|(w, n)| provider.calls(&w.entry_id, Call::Lookup) > *n)
    })
    .await;

    // The provider answers lookups again: both gifts are found, and they are the members'.
    for won in both {
        provider.heal(&won.entry_id);
    }
    wait_for("both recorded", WAIT, || async { env.dispatch_rows().await.len() == 2 }).await;
    for won in both {
        let expected = provider.gift_id(&won.entry_id);
        assert_eq!(
            outcome(&env, &won.entry_id).await,
            Some(("SENT".into(), expected, None)),
            "a gift that may have been issued is never failed without the provider saying it was not"
        );
    }
    let released = env.published::<StockRelease>(&env.topics.stock_released).await;
    assert!(released.is_empty(), "no unit handed to the next in line: {released:?}");
    assert_eq!(env.payout_claimed(&env.event_id).await, 2);

    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_carrying_another_keys_gift_is_never_recorded_as_ours() {
    let env = TestEnv::new().await;
    let provider = ScriptedProvider::start().await;
    for member in ["once", "always", "pending"] {
        env.seed_member(member, "010-8200-0001").await;
    }
    // Issued, answered with another key's gift; the lookup tells the truth.
    let once = env.won_in(&env.event_id, "once", 1);
    provider.queue(&once.entry_id, Call::Issue, [Answer::OtherKeysGift]);
    // Issued, and every answer about it is another key's gift (a poisoned cache).
    let always = env.won_in(&env.event_id, "always", 2);
    provider.always(&always.entry_id, Call::Issue, Answer::OtherKeysGift);
    provider.always(&always.entry_id, Call::Lookup, Answer::OtherKeysGift);
    // Issued, answered 200 with a status that is not ISSUED.
    let pending = env.won_in(&env.event_id, "pending", 3);
    provider.queue(&pending.entry_id, Call::Issue, [Answer::Status("PENDING")]);
    for won in [&once, &always, &pending] {
        env.publish(won).await;
    }
    let sender = RunningSender::start(settings(&env, &provider.url)).await;

    wait_for("the others recorded and the batch committed", WAIT, || async {
        env.dispatch_rows().await.len() >= 2 && env.caught_up().await
    })
    .await;
    for won in [&once, &pending] {
        assert_eq!(outcome(&env, &won.entry_id).await, Some(("SENT".into(), provider.gift_id(&won.entry_id), None)));
    }
    assert_eq!(outcome(&env, &always.entry_id).await, None, "never SENT with another key's gift, never FAILED");
    let metrics = sender.metrics().await;
    let mismatches: f64 = ["issue", "lookup"]
        .iter()
        .filter_map(|call| testkit::metric(&metrics, "firstcome_sender_provider_mismatches_total", &[("call", call)]))
        .sum();
    assert!(mismatches >= 3.0, "every mismatch counted: {mismatches}");

    // The provider is fixed: the parked gift is found under its own key.
    provider.heal(&always.entry_id);
    wait_for("the parked gift resolved", WAIT, || async { outcome(&env, &always.entry_id).await.is_some() }).await;
    assert_eq!(outcome(&env, &always.entry_id).await, Some(("SENT".into(), provider.gift_id(&always.entry_id), None)));
    assert_eq!(provider.gift_count(), 3);

    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_gift_is_parked_and_its_partition_moves_on() {
    // One partition: every gift of the test is behind the unresolvable ones.
    let env = TestEnv::with_partitions(1).await;
    let provider = ScriptedProvider::start().await;
    for member in ["bad-json", "bare-404", "later"] {
        env.seed_member(member, "010-8300-0001").await;
    }
    let bad_json = env.won_in(&env.event_id, "bad-json", 1);
    let bare_404 = env.won_in(&env.event_id, "bare-404", 2);
    for (won, lookup) in [(&bad_json, Answer::MalformedJson), (&bare_404, Answer::Bare404)] {
        // Issued, every answer lost, and no lookup can tell.
        provider.always(&won.entry_id, Call::Issue, Answer::Hold);
        provider.always(&won.entry_id, Call::Lookup, lookup);
        env.publish(won).await;
    }
    let sender = RunningSender::start(settings(&env, &provider.url)).await;
    wait_for("both looked up", WAIT, || async {
        [&bad_json, &bare_404].iter().all(|w| provider.calls(&w.entry_id, Call::Lookup) >= 1)
    })
    .await;

    // A later WON on the same partition is sent, and the group commits.
    let later = env.won_in(&env.event_id, "later", 3);
    env.publish(&later).await;
    wait_for("the later gift sent", WAIT, || async { outcome(&env, &later.entry_id).await.is_some() }).await;
    assert_eq!(outcome(&env, &later.entry_id).await, Some(("SENT".into(), provider.gift_id(&later.entry_id), None)));
    wait_for("the group committed past the parked gifts", WAIT, || env.caught_up()).await;

    // Parked: no outcome, the claims kept, the state in PostgreSQL, visible.
    for won in [&bad_json, &bare_404] {
        assert_eq!(outcome(&env, &won.entry_id).await, None);
        assert_eq!(env.claims().await[&won.entry_id].2, "claimed");
    }
    let parked = sender::store::parked_gifts(&env.pool, Some(&env.event_id)).await.expect("parked gifts read");
    let mut parked_ids: Vec<String> = parked.iter().map(|p| p.entry_id.to_string()).collect();
    parked_ids.sort();
    let mut expected = vec![bad_json.entry_id.clone(), bare_404.entry_id.clone()];
    expected.sort();
    assert_eq!(parked_ids, expected);
    assert!(parked.iter().all(|p| !p.last_error.is_empty()), "{parked:?}");
    wait_for("the parked gauge", WAIT, || async {
        testkit::metric(&sender.metrics().await, "firstcome_sender_parked_gifts", &[]) == Some(2.0)
    })
    .await;

    // Retried on their own schedule: once the provider answers, both are found.
    for won in [&bad_json, &bare_404] {
        provider.heal(&won.entry_id);
    }
    wait_for("the parked gifts resolved", WAIT, || async { env.dispatch_rows().await.len() == 3 }).await;
    for won in [&bad_json, &bare_404] {
        assert_eq!(outcome(&env, &won.entry_id).await, Some(("SENT".into(), provider.gift_id(&won.entry_id), None)));
    }
    assert!(sender::store::parked_gifts(&env.pool, None).await.expect("read").is_empty());
    assert_eq!(provider.gift_count(), 3);
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());

    sender.stop().await;
}

/// The table of docs/provider.md: one member per hostile answer, all on
/// one partition with honest members between them. Every answer is given
/// to the member's first calls; then the provider tells the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatever_the_provider_answers_every_member_ends_with_their_own_gift() {
    let env = TestEnv::with_partitions(1).await;
    let provider = ScriptedProvider::start().await;
    let storm = vec![Answer::RateLimited { retry_after_secs: 86_400 }; 6];
    let cases: Vec<(&str, Vec<Answer>, Vec<Answer>)> = vec![
        ("another key's gift", vec![Answer::OtherKeysGift], vec![]),
        ("the previous response replayed", vec![Answer::ReplayPrevious], vec![]),
        ("malformed JSON on 201", vec![Answer::MalformedJson], vec![]),
        ("200 with a status other than ISSUED", vec![Answer::Status("CANCELLED")], vec![]),
        ("an HTML 500", vec![Answer::Html500], vec![]),
        ("404 without a body", vec![Answer::Bare404], vec![]),
        ("a body over the cap", vec![Answer::Oversized], vec![]),
        ("a response dribbled slower than the timeout", vec![Answer::Dribble], vec![]),
        ("a 429 storm with a huge Retry-After", storm, vec![]),
        ("the connection reset after the request was sent", vec![Answer::Reset], vec![]),
        ("a redirect", vec![Answer::Redirect], vec![]),
        (
            "lookups answering another key's gift, bad JSON, a bare 404 (parked)",
            vec![Answer::Hold],
            vec![Answer::OtherKeysGift, Answer::MalformedJson, Answer::Bare404],
        ),
    ];
    let mut hostile = Vec::new();
    let mut honest = Vec::new();
    for (i, (name, issue, lookup)) in cases.into_iter().enumerate() {
        let i = i as i32;
        for (member, unit) in [(format!("h{i}"), 2 * i + 1), (format!("k{i}"), 2 * i + 2)] {
            env.seed_member(&member, &format!("010-8400-{unit:04}")).await;
        }
        let won = env.won_in(&env.event_id, &format!("h{i}"), 2 * i + 1);
        provider.queue(&won.entry_id, Call::Issue, issue);
        provider.queue(&won.entry_id, Call::Lookup, lookup);
        env.publish(&won).await;
        hostile.push((name, won));
        let fine = env.won_in(&env.event_id, &format!("k{i}"), 2 * i + 2);
        env.publish(&fine).await;
        honest.push(fine);
    }
    let sender = RunningSender::start(settings(&env, &provider.url)).await;
    let all = hostile.len() + honest.len();
    wait_for("every gift recorded and the group committed", Duration::from_secs(120), || async {
        env.dispatch_rows().await.len() == all && env.caught_up().await
    })
    .await;

    for (name, won) in &hostile {
        assert_eq!(
            outcome(&env, &won.entry_id).await,
            Some(("SENT".into(), provider.gift_id(&won.entry_id), None)),
            "{name}: the member's own gift, SENT"
        );
    }
    let rows = env.dispatch_rows().await;
    for won in &honest {
        let row = rows.iter().find(|r| r.entry_id == won.entry_id).expect("recorded");
        assert_eq!(row.provider_ref, provider.gift_id(&won.entry_id));
        assert_eq!(row.attempts, 1, "an honest gift is not held up by its neighbours' answers");
    }
    assert!(rows.iter().all(|r| r.status == "SENT"), "never FAILED: {rows:?}");
    assert_eq!(provider.gift_count(), all, "one gift per member, never a second");
    assert!(env.published::<StockRelease>(&env.topics.stock_released).await.is_empty());
    assert!(sender::store::parked_gifts(&env.pool, None).await.expect("read").is_empty(), "nothing left parked");
    let metrics = sender.metrics().await;
    assert!(testkit::metric(&metrics, "firstcome_sender_gifts_parked_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        testkit::metric(&metrics, "firstcome_sender_provider_mismatches_total", &[("call", "issue")]).unwrap_or(0.0)
            >= 2.0
    );

    sender.stop().await;
}
