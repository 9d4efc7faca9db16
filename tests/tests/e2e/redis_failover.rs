//! Redis as production runs it: a primary, a replica and three Sentinels
//! (`stack/bin/stack up redis-sentinel`), every service finding the primary
//! through the Sentinels. A failover during a rush — asked of the Sentinels
//! (`SENTINEL FAILOVER`), or forced by a SIGKILL of the primary — costs a
//! short window of 503s at ingest, then 202s again; after the drain all
//! six invariants hold. Writes the promoted replica had not received are
//! recovered from the Kafka log: the stock stage finds Redis behind its
//! committed marks and rebuilds the event (docs/defence-in-depth.md).
//!
//! The two tests share the one Sentinel-managed Redis: one at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::settings::RedisSettings;

use crate::helpers::{eventually, TestEnv};
use crate::member_replica::stack;
use crate::pipeline_harness::{drain, open_event, seed_crowd, Pipeline, Topology};
use audit::Accepted;
use testkit::sentinel;

static SENTINEL_REDIS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `SENTINEL FAILOVER firstcome`: the replica is promoted, the primary demoted.
    SentinelFailover,
    /// SIGKILL of the primary (`stack kill redis-sN`): the Sentinels notice and promote.
    KillPrimary,
}

/// The primary's port as the Sentinels see it.
async fn master_port() -> u16 {
    sentinel::master_port().await.expect("a Sentinel knows the primary")
}

/// `SENTINEL FAILOVER firstcome`.
async fn failover() {
    sentinel::failover().await.expect("failover accepted");
}

/// One answer of ingest, at `at_ms` since the rush started.
#[derive(Clone, Copy, Debug)]
struct Shot {
    at_ms: u64,
    status: u16,
}

struct RushOutcome {
    shots: Vec<Shot>,
    accepted: Vec<Accepted>,
    fault_at_ms: u64,
    /// Final answer per member (after retrying 503s).
    finals: HashMap<u16, usize>,
}

/// Members enter at a steady pace from `workers` clients; a member answered
/// 503 retries (as a client honouring Retry-After would, sooner). Once a
/// third of the members are answered, `fault` strikes.
async fn rush_with_fault(pipeline: &Pipeline, event_id: &str, members: &[String], fault: Fault) -> RushOutcome {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("http");
    let secret = ingest::Settings::default().auth.token_secret;
    let url = format!("{}/api/events/{event_id}/entries", pipeline.ingest_urls[0]);
    let body = serde_json::json!({ "answers": { "satisfaction": "5", "recommend": "yes" } });
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let shots = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let finals = Arc::new(Mutex::new(HashMap::new()));
    let members = Arc::new(members.to_vec());

    let mut workers = Vec::new();
    for _ in 0..16 {
        let (http, url, body, secret) = (http.clone(), url.clone(), body.clone(), secret.clone());
        let (next, answered, shots, accepted, finals, members) =
            (next.clone(), answered.clone(), shots.clone(), accepted.clone(), finals.clone(), members.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(member) = members.get(i) else { return };
                let token = ingest::mint(&secret, member, Duration::from_secs(600)).expect("token");
                let deadline = Instant::now() + Duration::from_secs(60);
                let status = loop {
                    let response = http.post(&url).bearer_auth(&token).json(&body).send().await;
                    let (status, json) = match response {
                        Ok(r) => (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default()),
                        Err(_) => (0, serde_json::Value::Null),
                    };
                    shots.lock().unwrap().push(Shot { at_ms: started.elapsed().as_millis() as u64, status });
                    if status == 202 {
                        let entry_id = json["entry_id"].as_str().expect("entry id").to_string();
                        accepted.lock().unwrap().push(Accepted { member: member.clone(), entry_id });
                    }
                    if status != 503 || Instant::now() > deadline {
                        break status;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                *finals.lock().unwrap().entry(status).or_insert(0) += 1;
                answered.fetch_add(1, Ordering::SeqCst);
                // A steady stream of members, so the rush outlasts the failover.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    let third = members.len() / 3;
    let struck = eventually(Duration::from_secs(60), || async { answered.load(Ordering::SeqCst) >= third }).await;
    assert!(struck, "a third of the rush answered");
    let fault_at_ms = started.elapsed().as_millis() as u64;
    match fault {
        Fault::SentinelFailover => {
            failover().await;
        }
        Fault::KillPrimary => {
            let unit = sentinel::primary_unit().await.expect("a Sentinel knows the primary");
            stack(&["kill", &unit]).await;
        }
    }
    for worker in workers {
        worker.await.expect("rush worker");
    }
    let mut shots = shots.lock().unwrap().clone();
    shots.sort_by_key(|s| s.at_ms);
    let accepted = accepted.lock().unwrap().clone();
    let finals = finals.lock().unwrap().clone();
    RushOutcome { shots, accepted, fault_at_ms, finals }
}

async fn failover_during_a_rush(fault: Fault) {
    let _one_at_a_time = SENTINEL_REDIS.lock().await;
    testkit::init_logs("e2e-redis-failover");
    stack(&["up", "redis-sentinel"]).await;
    assert!(eventually(Duration::from_secs(30), sentinel::replica_known).await, "the Sentinels know a healthy replica");
    let old_master = master_port().await;

    let mut env = TestEnv::new().await;
    env.redis = RedisSettings {
        sentinels: sentinel::SENTINELS.into(),
        master_name: sentinel::MASTER_NAME.into(),
        ..Default::default()
    };
    let crowd = seed_crowd(&env, 360, 0).await;
    // 290 for sale: a third of the crowd enters before the fault, the rest after.
    let event_id = open_event(&env, &crowd, 300, 10).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");

    let rush = rush_with_fault(&pipeline, &event_id, &crowd.eligible, fault).await;
    let new_master = master_port().await;
    // Back to a primary and a replica (a killed node rejoins as the replica).
    stack(&["up", "redis-sentinel"]).await;

    let unavailable: Vec<&Shot> = rush.shots.iter().filter(|s| s.status == 503).collect();
    let first_503 = unavailable.first().map(|s| s.at_ms);
    let last_503 = unavailable.last().map(|s| s.at_ms);
    let window_ms = match (first_503, last_503) {
        (Some(first), Some(last)) => last - first,
        _ => 0,
    };
    let recovered_ms =
        last_503.and_then(|last| rush.shots.iter().find(|s| s.at_ms > last && s.status != 503).map(|s| s.at_ms));
    let after_fault: HashMap<u16, usize> =
        rush.shots.iter().filter(|s| s.at_ms >= rush.fault_at_ms).fold(HashMap::new(), |mut m, s| {
            *m.entry(s.status).or_insert(0) += 1;
            m
        });
    let last_shot = rush.shots.last().map(|s| s.at_ms).unwrap_or(0);
    eprintln!(
        "redis failover ({fault:?}): primary {old_master} -> {new_master}; fault at {} ms, rush ended at {last_shot} ms; \
         {} answers 503 between {first_503:?} and {last_503:?} ms (window {window_ms} ms); first answer after it at \
         {recovered_ms:?} ms; answers after the fault {after_fault:?}; final answers {:?}",
        rush.fault_at_ms,
        unavailable.len(),
        rush.finals,
    );

    let report = drain(&env, &pipeline, &event_id, &rush.accepted).await;
    pipeline.stop().await;
    eprintln!("redis failover ({fault:?}): drained, tally {:?}", report.tally);

    assert_ne!(old_master, new_master, "the Sentinels promoted the replica");
    assert!(report.all_hold(), "invariants after the failover: {:#?}", report.failing());
    let finals_ok = rush.finals.keys().all(|status| [202, 410].contains(status));
    assert!(
        finals_ok,
        "every member ends with 202 or 410 (sold out), none stuck at 503 or an error: {:?}",
        rush.finals
    );
    if let Some(first) = first_503 {
        assert!(
            first + 200 >= rush.fault_at_ms,
            "no 503 before the failover (first at {first} ms, fault at {} ms)",
            rush.fault_at_ms
        );
        assert!(window_ms < 15_000, "the 503 window closes within 15 s: {window_ms} ms");
        assert!(recovered_ms.is_some(), "ingest answers again after the window");
    }
    assert!(rush.shots.iter().any(|s| s.at_ms > rush.fault_at_ms && s.status == 202), "202s again after the failover");
    let t = &report.tally;
    assert_eq!(t.sent, 290, "every unit for sale sent, no more: {t:?}");
    assert_eq!(t.provider_gifts, 290, "{t:?}");
}

#[tokio::test]
async fn a_sentinel_failover_during_a_rush_costs_a_short_503_window_and_keeps_every_invariant() {
    failover_during_a_rush(Fault::SentinelFailover).await;
}

#[tokio::test]
async fn a_sigkilled_primary_during_a_rush_costs_a_short_503_window_and_keeps_every_invariant() {
    failover_during_a_rush(Fault::KillPrimary).await;
}

/// `Script::invoke_async` sends EVALSHA and, on NOSCRIPT, loads the script
/// and sends it again: a new primary that never saw a script runs it on the
/// first call, through the same (Sentinel-following) connection.
#[tokio::test]
async fn scripts_are_loaded_again_on_a_new_primary_that_never_saw_them() {
    let _one_at_a_time = SENTINEL_REDIS.lock().await;
    stack(&["up", "redis-sentinel"]).await;
    assert!(eventually(Duration::from_secs(30), sentinel::replica_known).await, "the Sentinels know a healthy replica");
    let settings = RedisSettings {
        sentinels: sentinel::SENTINELS.into(),
        master_name: sentinel::MASTER_NAME.into(),
        ..Default::default()
    }
    .for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
    let mut conn = platform::redis::connect(&settings).await.expect("through the Sentinels");
    let key = format!("t-noscript-{}", uuid::Uuid::new_v4().simple());
    let script = redis::Script::new("return redis.call('INCR', KEYS[1])");
    let exists = |conn: &mut platform::redis::Connection| {
        let mut conn = conn.clone();
        let hash = script.get_hash().to_string();
        async move {
            let found: Vec<i64> =
                redis::cmd("SCRIPT").arg("EXISTS").arg(hash).query_async(&mut conn).await.expect("script exists");
            found[0] == 1
        }
    };
    assert_eq!(script.key(&key).invoke_async::<i64>(&mut conn).await.expect("first call"), 1);
    let replicas: i64 = redis::cmd("WAIT").arg(1).arg(5_000).query_async(&mut conn).await.expect("wait");
    assert_eq!(replicas, 1, "the replica has the first call's write");

    let old_master = master_port().await;
    failover().await;
    let moved = eventually(Duration::from_secs(30), || {
        let mut conn = conn.clone();
        async move {
            let port = master_port().await;
            let role: Vec<redis::Value> = match redis::cmd("ROLE").query_async(&mut conn).await {
                Ok(role) => role,
                Err(_) => return false,
            };
            let is_master = matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
            port != old_master
                && is_master
                && redis::cmd("SET").arg("t-noscript-probe").arg(1).query_async::<()>(&mut conn).await.is_ok()
        }
    })
    .await;
    assert!(moved, "the connection follows the Sentinels to the new primary");

    // Whether or not the script came along, the new primary forgets it now.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("flush");
    assert!(!exists(&mut conn).await, "the new primary does not know the script");
    let second: i64 = script.key(&key).invoke_async(&mut conn).await.expect("NOSCRIPT answered by loading the script");
    assert_eq!(second, 2, "the write before the failover was replicated, the script ran once more");
    assert!(exists(&mut conn).await, "the script is loaded on the new primary");
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.expect("del");
    stack(&["up", "redis-sentinel"]).await;
}

/// The worst timing of a failover: the event sells out on decisions the old
/// primary took and then lost, so no further record of the event ever comes
/// for the stage's per-batch check to notice. (Made deterministic: the
/// event's keys are put back to an earlier snapshot, replicated, and the
/// Sentinels then fail over.) The stage checks every event against its
/// committed marks when its connection moves, and rebuilds this one.
#[tokio::test]
async fn an_event_that_sold_out_on_lost_decisions_is_rebuilt_after_the_failover_without_another_record() {
    let _one_at_a_time = SENTINEL_REDIS.lock().await;
    testkit::init_logs("e2e-redis-failover");
    stack(&["up", "redis-sentinel"]).await;
    assert!(eventually(Duration::from_secs(30), sentinel::replica_known).await, "the Sentinels know a healthy replica");
    let mut env = TestEnv::new().await;
    env.redis = RedisSettings {
        sentinels: sentinel::SENTINELS.into(),
        master_name: sentinel::MASTER_NAME.into(),
        ..Default::default()
    };
    let crowd = seed_crowd(&env, 10, 0).await;
    let event_id = open_event(&env, &crowd, 10, 0).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let mut conn = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    let keys = platform::event_keys::EventKeys::new(&event_id);

    let (early, late) = crowd.eligible.split_at(4);
    let first = crate::pipeline_harness::submit(&pipeline, &event_id, early, 0.0).await;
    assert_eq!(first.count(202), 4, "{:?}", first.by_status);
    let winners = |conn: &platform::redis::Connection, n: i64| {
        let mut conn = conn.clone();
        let winners = keys.winners.clone();
        async move { redis::cmd("HLEN").arg(&winners).query_async::<i64>(&mut conn).await.map(|h| h == n).unwrap_or(false) }
    };
    assert!(eventually(Duration::from_secs(30), || winners(&conn, 4)).await, "four winners decided");
    let snapshot = crate::helpers::EventSnapshot::take(&mut conn, &event_id).await;

    let second = crate::pipeline_harness::submit(&pipeline, &event_id, late, 0.0).await;
    assert_eq!(second.count(202), 6, "{:?}", second.by_status);
    let accepted: Vec<Accepted> = first.accepted.iter().chain(&second.accepted).cloned().collect();
    let report = drain(&env, &pipeline, &event_id, &accepted).await;
    assert_eq!(report.tally.sent, 10, "sold out and paid: {:?}", report.tally);

    // The old primary "loses" the last six decisions; the replica gets the loss too.
    snapshot.restore(&mut conn).await;
    let replicas: i64 = redis::cmd("WAIT").arg(1).arg(5_000).query_async(&mut conn).await.expect("WAIT");
    assert_eq!(replicas, 1);
    assert!(winners(&conn, 4).await, "Redis is behind the log now");

    failover().await;
    let rebuilt = eventually(Duration::from_secs(45), || winners(&conn, 10)).await;
    let stores = audit::Stores::connect(&env.admin_database(), &env.redis_admin()).await.expect("stores");
    let report = audit::check(&stores, &event_id, &accepted, Some(&pipeline.provider_url)).await.expect("checked");
    pipeline.stop().await;
    stack(&["up", "redis-sentinel"]).await;
    assert!(rebuilt, "the stage rebuilt the event from the log after the failover: {:?}", report.tally);
    assert!(report.all_hold(), "invariants: {:#?}", report.failing());
    assert_eq!(report.tally.redis_stock, 0, "{:?}", report.tally);
    assert_eq!(report.tally.redis_held, 10, "{:?}", report.tally);
}
