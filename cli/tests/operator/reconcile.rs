//! `firstcome reconcile` without a rush: invariant 3 against Redis' accepted
//! marks, Redis' WONs against the ledger and the payout claims, and what was
//! refused on the way (payout refusals, releases the stock stage dead-lettered).
//!
//! The stores are written directly, as the pipeline would have left them,
//! so each discrepancy is exact and nothing waits.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_postgres::types::ToSql;

use firstcome_cli::commands::reconcile::{self, Reconciliation};
use platform::event_keys::EventKeys;
use schemas::{StockRelease, Topics};

use crate::helpers::{operator_settings, TestEnv};
use crate::pipeline_harness::{drain, open_event, seed_crowd, submit, Pipeline, Topology};

struct Event {
    env: TestEnv,
    id: String,
    keys: EventKeys,
    members: Vec<String>,
    redis: platform::redis::Connection,
    pool: deadpool_postgres::Pool,
}

impl Event {
    /// An open event with 3 units for sale and 6 eligible members.
    async fn open() -> Self {
        let env = TestEnv::new().await;
        let crowd = seed_crowd(&env, 6, 0).await;
        let id = open_event(&env, &crowd, 3, 0).await;
        let redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
        let pool = platform::db::pool(&env.admin_database()).expect("pool");
        Self { keys: EventKeys::new(&id), id, members: crowd.eligible, redis, pool, env }
    }

    async fn reconcile(&self) -> Reconciliation {
        reconcile::run(&operator_settings(&self.env), &self.id, None, false).await.expect("reconcile ran")
    }

    async fn sql(&self, statement: &str, params: &[&(dyn ToSql + Sync)]) {
        self.pool.get().await.expect("client").execute(statement, params).await.expect(statement);
    }

    /// What ingest leaves: the accepted first-entry mark and the entry's member.
    async fn accept(&mut self, member: &str) -> uuid::Uuid {
        let entry = uuid::Uuid::now_v7();
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(&self.keys.entered)
            .arg(member)
            .arg(format!("A|{entry}"))
            .ignore()
            .cmd("HSET")
            .arg(&self.keys.entries)
            .arg(entry.to_string())
            .arg(member)
            .ignore()
            .query_async(&mut self.redis)
            .await
            .expect("marks");
        entry
    }

    /// What the recorder leaves for a submitted entry.
    async fn record(&self, entry: uuid::Uuid, member: &str, status: &str, unit: Option<i32>) {
        let outcome = match status {
            "pending" => None,
            "lost" => Some("SOLD_OUT"),
            _ => Some("WON"),
        };
        let dispatch = match status {
            "sent" => Some("SENT"),
            "failed" => Some("FAILED"),
            _ => None,
        };
        self.sql(
            "INSERT INTO event_entries (entry_id, event_id, user_id, submitted_at, accepted_at, outcome, unit_no, dispatch_status, status)
             VALUES ($1, $2, $3, now(), now(), $4, $5, $6, $7)",
            &[&entry, &self.id, &member, &outcome, &unit, &dispatch, &status],
        )
        .await;
        if unit.is_some() {
            self.sql(
                "INSERT INTO stock_movements (entry_id, kind, event_id, unit_no) VALUES ($1, 'issued', $2, $3)",
                &[&entry, &self.id, &unit],
            )
            .await;
            self.sql("UPDATE stock_ledger SET issued = issued + 1 WHERE event_id = $1", &[&self.id]).await;
        }
    }

    /// What the stock stage leaves for a WON.
    async fn decide_won(&mut self, entry: uuid::Uuid, member: &str, unit: i32) {
        let _: () = redis::pipe()
            .cmd("HSET")
            .arg(&self.keys.decisions)
            .arg(entry.to_string())
            .arg(format!("WON|{unit}"))
            .ignore()
            .cmd("HSET")
            .arg(&self.keys.winners)
            .arg(member)
            .arg(unit)
            .ignore()
            .cmd("DECR")
            .arg(&self.keys.stock)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.keys.decisions)
            .arg(3_600_000)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.keys.winners)
            .arg(3_600_000)
            .ignore()
            .query_async(&mut self.redis)
            .await
            .expect("decision");
    }

    /// What the dispatch group leaves for a sent gift: its claim and dispatch.
    async fn pay(&self, entry: uuid::Uuid, member: &str, unit: i32) {
        self.sql(
            "INSERT INTO payout_claims (entry_id, event_id, user_id, unit_no, status, settled_at) VALUES ($1, $2, $3, $4, 'sent', now())",
            &[&entry, &self.id, &member, &unit],
        )
        .await;
        self.sql("UPDATE events SET payout_claimed = payout_claimed + 1 WHERE event_id = $1", &[&self.id]).await;
        self.sql(
            "INSERT INTO gift_dispatches (entry_id, event_id, user_id, unit_no, status, attempts) VALUES ($1, $2, $3, $4, 'SENT', 1)",
            &[&entry, &self.id, &member, &unit],
        )
        .await;
    }

    async fn refuse(&self, entry: uuid::Uuid, member: &str, unit: i32, reason: &str) {
        self.sql(
            "INSERT INTO payout_refusals (entry_id, event_id, user_id, unit_no, reason) VALUES ($1, $2, $3, $4, $5)",
            &[&entry, &self.id, &member, &unit, &reason],
        )
        .await;
    }
}

fn failing(outcome: &Reconciliation, invariant: char) -> Option<String> {
    outcome.report.failing().iter().find(|c| c.name.starts_with(invariant)).map(|c| c.detail.clone())
}

#[tokio::test]
async fn reconcile_reports_an_accepted_entry_missing_from_the_entries_table() {
    let mut event = Event::open().await;
    let member = event.members[0].clone();
    let recorded = event.accept(&member).await;
    event.record(recorded, &member, "pending", None).await;
    let other = event.members[1].clone();
    let lost = event.accept(&other).await;

    let found = event.reconcile().await;
    let detail = failing(&found, '3').expect("the unrecorded 202 is reported");
    assert!(detail.contains(&lost.to_string()), "{detail}");
    assert!(detail.starts_with("1 of 2 accepted entries recorded"), "{detail}");
    assert_eq!(found.report.tally.accepted_marks, 2);

    event.record(lost, &other, "pending", None).await;
    let settled = event.reconcile().await;
    assert!(settled.report.all_hold(), "{:#?}", settled.report.failing());
}

#[tokio::test]
async fn reconcile_matches_redis_wins_with_the_ledger_and_the_payout_claims() {
    let mut event = Event::open().await;
    let m = event.members.clone();

    // One paid winner, one loser: everything agrees.
    let won = event.accept(&m[0]).await;
    event.decide_won(won, &m[0], 1).await;
    let found = event.reconcile().await;
    let detail = failing(&found, '5').expect("a Redis WON the ledger does not hold is reported");
    assert!(detail.contains("1 held in Redis, not held in the ledger"), "{detail}");

    event.record(won, &m[0], "sent", Some(1)).await;
    let detail = failing(&event.reconcile().await, '5').expect("a ledger unit without its claim is reported");
    assert!(detail.contains("1 held in the ledger, not claimed"), "{detail}");
    event.pay(won, &m[0], 1).await;
    let lost = event.accept(&m[1]).await;
    event.record(lost, &m[1], "lost", None).await;
    let healthy = event.reconcile().await;
    assert!(healthy.report.all_hold(), "{:#?}", healthy.report.failing());
    assert_eq!((healthy.report.tally.redis_held, healthy.report.tally.claims_holding), (1, 1));

    // A second WON for the paid member under a new entry id: recorded and in
    // the ledger, refused by the guard. Visible, never paid, not a drift, and
    // no phantom success: the member holds their one gift.
    let second = uuid::Uuid::now_v7();
    event.record(second, &m[0], "won", Some(2)).await;
    event.refuse(second, &m[0], 2, "member_already_paid").await;
    let refused = event.reconcile().await;
    assert!(refused.report.all_hold(), "{:#?}", refused.report.failing());
    let four = refused.report.checks.iter().find(|c| c.name.starts_with('4')).expect("check 4");
    assert!(four.detail.contains("1 WONs refused for members paid under another entry"), "{}", four.detail);
    let t = &refused.report.tally;
    assert_eq!((t.refused, t.won_refused, t.repeat_wins_refused, t.phantom_successes), (1, 1, 1, 0), "{t:?}");
    assert_eq!(refused.payout_refusals.get("member_already_paid"), Some(&1));

    // Redis forgot a winner and decided again: its new WON holds a unit the
    // guard refused, a unit lost to stock while it lasts, and its member was
    // told "won" and is never paid — a phantom success.
    let again = event.accept(&m[2]).await;
    event.decide_won(again, &m[2], 2).await;
    event.record(again, &m[2], "won", Some(2)).await;
    event.refuse(again, &m[2], 2, "stock_exhausted").await;
    let lost_unit = event.reconcile().await;
    let detail = failing(&lost_unit, '5').expect("the lost unit is reported");
    assert!(detail.contains("1 units Redis holds for WONs the payout guard refused"), "{detail}");
    assert!(detail.contains(&again.to_string()), "{detail}");
    let detail = failing(&lost_unit, '4').expect("the phantom success breaks invariant 4");
    assert!(detail.contains("1 phantom successes"), "{detail}");
    assert!(detail.contains(&again.to_string()), "{detail}");
    assert_eq!(lost_unit.report.tally.phantom_successes, 1, "{:?}", lost_unit.report.tally);
    let listed: Vec<(String, &str, Option<i32>, &str)> = lost_unit
        .report
        .phantom_successes
        .iter()
        .map(|p| (p.entry_id.clone(), p.member.as_str(), p.unit_no, p.reason.as_str()))
        .collect();
    assert_eq!(listed, [(again.to_string(), m[2].as_str(), Some(2), "stock_exhausted")]);

    // The guard's counter must count its claims.
    event.sql("UPDATE events SET payout_claimed = 2 WHERE event_id = $1", &[&event.id]).await;
    let detail = failing(&event.reconcile().await, '5').expect("counter drift");
    assert!(detail.contains("payout_claimed 2 != 1 claims holding a unit"), "{detail}");
}

#[tokio::test]
async fn reconcile_counts_a_refused_forged_won_apart_from_phantom_successes() {
    let event = Event::open().await;
    let m = event.members.clone();
    // A forged WON of an entry that never was: the recorder makes its row
    // from the decision alone (no submission) and issues its unit in the
    // ledger; the guard refuses it. Not a phantom: no member was told "won".
    let forged = uuid::Uuid::now_v7();
    event
        .sql(
            "INSERT INTO event_entries (entry_id, event_id, user_id, outcome, unit_no, status) VALUES ($1, $2, $3, 'WON', 3, 'won')",
            &[&forged, &event.id, &m[0]],
        )
        .await;
    event
        .sql(
            "INSERT INTO stock_movements (entry_id, kind, event_id, unit_no) VALUES ($1, 'issued', $2, 3)",
            &[&forged, &event.id],
        )
        .await;
    event.sql("UPDATE stock_ledger SET issued = issued + 1 WHERE event_id = $1", &[&event.id]).await;
    event.refuse(forged, &m[0], 3, "stock_exhausted").await;
    let forged_refused = event.reconcile().await;
    assert!(forged_refused.report.all_hold(), "{:#?}", forged_refused.report.failing());
    let t = &forged_refused.report.tally;
    assert_eq!((t.forged_wins_refused, t.phantom_successes), (1, 0), "{t:?}");
    assert!(forged_refused.report.phantom_successes.is_empty());
}

#[tokio::test]
async fn reconcile_counts_the_releases_the_stock_stage_refused_for_the_event() {
    let event = Event::open().await;
    let source = event.env.kafka.topics().stock_released;
    let codec = event.env.codec();
    let producer: FutureProducer =
        platform::kafka::client_config(&testkit::kafka_admin(&event.env.kafka)).create().expect("producer");
    let stock_group = event.env.kafka.group("stock");
    let dead = [
        (event.id.as_str(), stock_group.as_str()),
        (event.id.as_str(), stock_group.as_str()),
        (event.id.as_str(), "someone-else"),
        ("ev-another", stock_group.as_str()),
    ];
    for (event_id, group) in dead {
        let release = StockRelease {
            event_id: event_id.to_string(),
            entry_id: uuid::Uuid::now_v7().to_string(),
            user_id: event.members[0].clone(),
            unit_no: 1,
            reason: "provider refused".into(),
            released_at: 0,
        };
        let payload = codec.encode(&source, &release).await.expect("encode");
        let headers = OwnedHeaders::new()
            .insert(Header { key: "dlq-error", value: Some("entry did not win unit 1") })
            .insert(Header { key: "dlq-group", value: Some(group) });
        producer
            .send(
                FutureRecord::to(&Topics::dlq(&source)).key(&release.user_id).payload(&payload).headers(headers),
                Duration::from_secs(5),
            )
            .await
            .expect("dead letter written");
    }
    producer
        .send(FutureRecord::<str, str>::to(&Topics::dlq(&source)).key("x").payload("not avro"), Duration::from_secs(5))
        .await
        .expect("dead letter written");

    let found = event.reconcile().await;
    let releases = &found.refused_releases;
    assert_eq!(releases.by_stock_stage(&operator_settings(&event.env)), 2);
    assert_eq!(releases.by_group.get("someone-else"), Some(&1));
    assert_eq!(releases.by_group.values().sum::<usize>(), 3, "another event's release is not counted");
    assert_eq!(releases.unreadable, 1);
}

/// After a real run: a counter someone bumped is reported, and `--repair`
/// sets it back from the decision log, keeping its expiry.
#[tokio::test]
async fn reconcile_finds_a_drifted_counter_and_repairs_it_from_the_decision_log() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 12, 0).await;
    let event_id = open_event(&env, &crowd, 5, 0).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let rush = submit(&pipeline, &event_id, &crowd.eligible, 0.0).await;
    let settled = drain(&env, &pipeline, &event_id, &rush.accepted).await;
    assert!(settled.all_hold(), "{:#?}", settled.failing());

    // Someone (a bad script, a restored snapshot) bumps the counter.
    let keys = platform::event_keys::EventKeys::new(&event_id);
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let _: () = redis::cmd("SET").arg(&keys.stock).arg(3).arg("KEEPTTL").query_async(&mut redis).await.expect("set");

    let settings = operator_settings(&env);
    let provider = pipeline.provider_url.clone();
    let found = reconcile::run(&settings, &event_id, Some(&provider), false).await.expect("reconcile");
    assert!(!found.report.all_hold(), "the drift is reported");
    assert!(found.report.failing().iter().any(|c| c.name.starts_with('5')));
    assert_eq!(found.repaired_stock, None, "nothing repaired without --repair");

    let repaired = reconcile::run(&settings, &event_id, Some(&provider), true).await.expect("repair");
    assert_eq!(repaired.repaired_stock, Some(0), "set back to for sale - held");
    let after = reconcile::run(&settings, &event_id, Some(&provider), false).await.expect("reconcile");
    assert!(after.report.all_hold(), "{:#?}", after.report.failing());
    let ttl: i64 = redis::cmd("PTTL").arg(&keys.stock).query_async(&mut redis).await.expect("ttl");
    assert!(ttl > 0, "the counter keeps its expiry");
    pipeline.stop().await;
}
