//! The giveaway pipeline end to end on the real stack: ingest → Kafka →
//! stock decision → recorder / sender → provider → outbox → recorder, with
//! every invariant of docs/DESIGN.md asserted on the real stores.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::helpers::TestEnv;
use crate::pipeline_harness::{drain, open_event, seed_crowd, submit, Pipeline, Topology};

/// 200 eligible + 20 ineligible members against 50 units (5 safety): every
/// member once, then a second entry from everyone who was accepted.
async fn fifty_units_for_two_hundred(topology: Topology) {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 200, 20).await;
    let event_id = open_event(&env, &crowd, 50, 5).await;
    let pipeline = Pipeline::start(&env, topology).await.expect("pipeline started");

    let everyone: Vec<String> = crowd.eligible.iter().chain(&crowd.ineligible).cloned().collect();
    let first = submit(&pipeline, &event_id, &everyone, 0.0).await;
    let ineligible: HashSet<&String> = crowd.ineligible.iter().collect();
    assert_eq!(first.count(403), 20, "every ineligible member is refused: {:?}", first.by_status);
    assert!(first.accepted.iter().all(|a| !ineligible.contains(&a.member)));
    assert!(first.count(202) >= 45, "at least the units for sale were accepted: {:?}", first.by_status);
    assert_eq!(first.count(202) + first.count(410) + first.count(403), everyone.len(), "{:?}", first.by_status);

    // Everyone accepted tries again: a second entry is 409 with the first id.
    let accepted_members: Vec<String> = first.accepted.iter().map(|a| a.member.clone()).collect();
    let again = submit(&pipeline, &event_id, &accepted_members, 0.0).await;
    assert_eq!(again.count(409), accepted_members.len(), "every duplicate is 409: {:?}", again.by_status);

    let report = drain(&env, &pipeline, &event_id, &first.accepted).await;
    pipeline.stop().await;
    assert!(report.all_hold(), "invariants: {:#?}", report.failing());
    let t = &report.tally;
    assert_eq!(t.sent, 45, "exactly the units for sale were sent: {t:?}");
    assert_eq!(t.failed, 0);
    assert_eq!(t.provider_gifts, 45, "the provider issued exactly 45");
    assert_eq!(t.ledger_issued, 45);
    assert_eq!(t.redis_stock, 0, "Redis view: 45 of 45 issued");
    assert_eq!(t.entries, first.count(202) as i64, "one row per accepted entry, none for refused ones");
    assert_eq!(t.lost, first.count(202) as i64 - 45);
}

#[tokio::test]
async fn exactly_the_units_for_sale_are_sent_to_distinct_members() {
    fifty_units_for_two_hundred(Topology::default()).await;
}

#[tokio::test]
async fn a_flaky_provider_still_gives_exactly_one_gift_per_winner() {
    let faults = provider_sim::Faults {
        transient_failure_rate: 0.3,
        timeout_after_issue_rate: 0.1,
        hang_ms: 1_000,
        ..Default::default()
    };
    fifty_units_for_two_hundred(Topology { faults, provider_timeout_ms: 300, ..Default::default() }).await;
}

#[tokio::test]
async fn two_instances_of_every_group_give_the_same_results() {
    fifty_units_for_two_hundred(Topology { ingest_instances: 2, instances_per_group: 2, ..Default::default() }).await;
}

/// The issue's "Returned units go to the next in line": a unit a refused
/// phone gives back goes to the earliest entry decided SOLD_OUT whose member
/// holds no unit, so the event stays sold out and later entrants get 410.
#[tokio::test]
async fn refused_phones_return_their_units_to_later_entrants() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 200, 0).await;
    // A third of the first 150 members have phones the provider refuses for good.
    let (early, late) = crowd.eligible.split_at(150);
    let refused_members: HashSet<&String> = early.iter().step_by(3).collect();
    let pool = platform::db::pool(&env.admin_database()).expect("pool");
    let db = pool.get().await.expect("db");
    let members_pool = platform::member_db::replica_pool(&env.replica).expect("replica pool");
    let members_db = members_pool.get().await.expect("member replica");
    let mut refused_phones = Vec::new();
    for member in &refused_members {
        let row =
            members_db.query_one("SELECT phone FROM members WHERE member_id = $1", &[member]).await.expect("phone");
        refused_phones.push(row.get::<_, String>(0));
    }
    let event_id = open_event(&env, &crowd, 50, 5).await;
    let faults = provider_sim::Faults { refused_phones, ..Default::default() };
    let pipeline = Pipeline::start(&env, Topology { faults, ..Default::default() }).await.expect("pipeline started");

    let first = submit(&pipeline, &event_id, early, 0.0).await;
    assert_eq!(first.count(202) + first.count(410), early.len(), "{:?}", first.by_status);
    let report = drain(&env, &pipeline, &event_id, &first.accepted).await;
    assert!(report.all_hold(), "invariants: {:#?}", report.failing());
    let t = report.tally.clone();
    assert!(t.failed >= 1, "some winner had a refused phone: {t:?}");
    assert_eq!(t.sent, 45, "every unit for sale ended up sent: {t:?}");
    assert_eq!(t.provider_gifts, 45, "the provider issued exactly 45: {t:?}");
    assert_eq!(t.ledger_issued - t.ledger_returned, 45, "{t:?}");
    assert_eq!(t.ledger_returned, t.failed, "each refused phone returned its unit once: {t:?}");
    assert_eq!(t.redis_stock, 0, "returned units went on, none waits in stock: {t:?}");

    // The entries as the recorder wrote them, in line: by ticket, the place
    // ingest gave each at admission.
    let rows = db
        .query(
            "SELECT entry_id::text, user_id, status, unit_no, ticket \
             FROM event_entries WHERE event_id = $1 ORDER BY ticket, accepted_at, entry_id",
            &[&event_id],
        )
        .await
        .expect("entries");
    struct Row {
        user: String,
        status: String,
        unit: Option<i32>,
        ticket: Option<i64>,
    }
    let rows: Vec<Row> =
        rows.iter().map(|r| Row { user: r.get(1), status: r.get(2), unit: r.get(3), ticket: r.get(4) }).collect();
    assert_eq!(rows.len(), first.count(202), "one row per accepted entry");
    let tickets: Vec<i64> = rows.iter().filter_map(|r| r.ticket).collect();
    assert_eq!(tickets, (1..=rows.len() as i64).collect::<Vec<_>>(), "one ticket per entry, none missing");

    let sent: Vec<&Row> = rows.iter().filter(|r| r.status == "sent").collect();
    let sent_members: HashSet<&String> = sent.iter().map(|r| &r.user).collect();
    assert_eq!(sent_members.len(), 45, "45 SENT to distinct members");
    assert!(sent.iter().all(|r| !refused_members.contains(&r.user)), "no refused phone was paid");
    let mut units: Vec<i32> = sent.iter().filter_map(|r| r.unit).collect();
    units.sort();
    units.dedup();
    assert_eq!(units.len(), 45, "45 distinct units held by the SENT members");
    for row in rows.iter().filter(|r| r.status == "failed") {
        assert!(refused_members.contains(&row.user), "only refused phones fail: {}", row.user);
    }
    assert!(
        rows.iter().all(|r| r.status == "sent" || r.status == "failed" || r.status == "lost"),
        "every entry settled: {:?}",
        rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>()
    );

    // FCFS, exactly: the members who were handed a unit (SENT, or FAILED on
    // a refused phone) are the first 45 + failed tickets, whichever stock
    // instance decided which entry when; every later ticket lost.
    let served = 45 + t.failed as usize;
    assert!(rows.len() > served, "more entries than units handed out: {} accepted", rows.len());
    let (head, tail) = rows.split_at(served);
    for row in head {
        assert!(row.status == "sent" || row.status == "failed", "ticket {:?} ({}) was skipped", row.ticket, row.user);
    }
    for row in tail {
        assert_eq!(row.status, "lost", "ticket {:?} ({}) was served out of turn", row.ticket, row.user);
    }
    let handed = rows.iter().filter(|r| r.status == "sent" || r.status == "failed").count();
    assert_eq!(handed, served, "each unit handed out once per refusal");

    // Still sold out: later entrants are refused and never paid.
    let second = submit(&pipeline, &event_id, late, 0.0).await;
    assert_eq!(second.count(410), late.len(), "the event stays sold out: {:?}", second.by_status);
    let after = drain(&env, &pipeline, &event_id, &first.accepted).await;
    pipeline.stop().await;
    assert!(after.all_hold(), "invariants: {:#?}", after.failing());
    assert_eq!(after.tally.sent, 45, "{:?}", after.tally);
    assert_eq!(after.tally.provider_gifts, 45, "{:?}", after.tally);
    assert_eq!(after.tally.entries, rows.len() as i64, "no entry for a later entrant");
    let late_rows = db
        .query_one("SELECT count(*) FROM event_entries WHERE event_id = $1 AND user_id = ANY($2)", &[&event_id, &late])
        .await
        .expect("late entries");
    assert_eq!(late_rows.get::<_, i64>(0), 0, "later entrants have no entry, so no gift");
}

#[tokio::test]
async fn after_the_last_unit_every_ingest_instance_answers_410_within_a_second() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 40, 0).await;
    let event_id = open_event(&env, &crowd, 5, 0).await;
    let pipeline =
        Pipeline::start(&env, Topology { ingest_instances: 2, ..Default::default() }).await.expect("pipeline started");
    let (rushers, latecomers) = crowd.eligible.split_at(20);
    let rush = submit(&pipeline, &event_id, rushers, 0.0).await;
    assert!(rush.count(202) >= 5, "{:?}", rush.by_status);

    // The moment the last unit is decided, Redis says 0 …
    let keys = platform::event_keys::EventKeys::new(&event_id);
    let redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let sold_out = testkit::poll_until(Duration::from_secs(30), Duration::from_millis(10), || {
        let (mut redis, stock) = (redis.clone(), keys.stock.clone());
        async move { redis::cmd("GET").arg(&stock).query_async::<i64>(&mut redis).await.expect("stock") == 0 }
    })
    .await;
    let sold_out_at = Instant::now();
    assert!(sold_out, "never sold out");

    // … and within a second every instance shows sold_out and answers 410.
    let secret = ingest::Settings::default().auth.token_secret;
    let http = reqwest::Client::new();
    let mut switched: HashMap<String, Duration> = HashMap::new();
    let mut latecomer = latecomers.iter();
    while switched.len() < pipeline.ingest_urls.len() && sold_out_at.elapsed() < Duration::from_secs(5) {
        for url in &pipeline.ingest_urls {
            if switched.contains_key(url) {
                continue;
            }
            let state: serde_json::Value = http
                .get(format!("{url}/api/events/{event_id}"))
                .send()
                .await
                .expect("state")
                .json()
                .await
                .expect("json");
            if state["status"] != "sold_out" {
                continue;
            }
            let member = latecomer.next().expect("enough latecomers");
            let token = ingest::mint(&secret, member, Duration::from_secs(60)).expect("token");
            let response = http
                .post(format!("{url}/api/events/{event_id}/entries"))
                .bearer_auth(token)
                .json(&serde_json::json!({"answers": {"satisfaction": "5", "recommend": "yes"}}))
                .send()
                .await
                .expect("answer");
            assert_eq!(response.status().as_u16(), 410, "sold out is 410 on {url}");
            switched.insert(url.clone(), sold_out_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pipeline.stop().await;
    assert_eq!(switched.len(), 2, "both instances switched within 5 s: {switched:?}");
    for (url, after) in &switched {
        assert!(*after < Duration::from_secs(1), "{url} switched to 410 after {after:?}");
    }
}
