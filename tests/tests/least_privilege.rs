//! Least privilege on the real stack: each service reaches only what it
//! needs, with its own identity (`platform::settings::Principal`).
//!
//! PostgreSQL: the roles of `migrations/grants.sql`, on a test database
//! migrated like every other (the grants are part of `firstcome db migrate`).
//! Redis: the ACL users of `stack/redis/users.acl`. Kafka: SASL/SCRAM users
//! and the ACLs of `platform::kafka::acl`.

use std::time::Duration;

use platform::settings::{Environment, Principal};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestEnv;
use tokio_postgres::error::SqlState;

/// Runs `sql` as `principal` on the test's database; the error's SQLSTATE if refused.
async fn run_as(env: &TestEnv, principal: Principal, sql: &str) -> Result<(), Option<SqlState>> {
    let pool = platform::db::pool(&env.database_as(principal)).expect("pool");
    let client = pool.get().await.unwrap_or_else(|e| panic!("{} logs in: {e}", principal.database_role()));
    client.batch_execute(sql).await.map_err(|e| e.code().cloned())
}

async fn refused(env: &TestEnv, principal: Principal, sql: &str) {
    let outcome = run_as(env, principal, sql).await;
    assert_eq!(
        outcome,
        Err(Some(SqlState::INSUFFICIENT_PRIVILEGE)),
        "{} must be refused: {sql}",
        principal.database_role()
    );
}

async fn allowed(env: &TestEnv, principal: Principal, sql: &str) {
    if let Err(code) = run_as(env, principal, sql).await {
        panic!("{} must be allowed ({code:?}): {sql}", principal.database_role());
    }
}

#[tokio::test]
async fn ingest_reads_events_and_entries_and_touches_nothing_else() {
    let env = TestEnv::builder().partitions(1).build().await;
    allowed(&env, Principal::INGEST, "SELECT count(*) FROM events").await;
    allowed(&env, Principal::INGEST, "SELECT count(*) FROM event_entries").await;
    // The dashboard on its ops listener: dispatch counts only.
    allowed(&env, Principal::INGEST, "SELECT * FROM dispatch_figures('e', 60)").await;
    // The public report's pre-queue draw once Redis lost the room: read only, summary only.
    allowed(&env, Principal::INGEST, "SELECT count(*) FROM event_shuffles").await;
    for sql in [
        // An event's status is the operator's: neither closed nor reopened by ingest.
        "UPDATE events SET status = 'closed', closed_at = now() WHERE false",
        "UPDATE events SET status = 'open', closed_at = NULL WHERE false",
        "SELECT count(*) FROM gift_dispatches",
        "SELECT count(*) FROM payout_claims",
        "SELECT count(*) FROM outbox",
        "INSERT INTO event_entries (entry_id, event_id, user_id) VALUES (gen_random_uuid(), 'e', 'm')",
        "UPDATE events SET total_stock = 0",
        "UPDATE events SET payout_claimed = 0",
        "UPDATE event_shuffles SET seed = seed",
        "SELECT count(*) FROM event_shuffle_draws",
        "CREATE TABLE ingest_was_here (id int)",
        "CREATE TEMP TABLE ingest_was_here (id int)",
    ] {
        refused(&env, Principal::INGEST, sql).await;
    }
}

#[tokio::test]
async fn the_recorder_and_the_sender_keep_to_their_own_tables() {
    let env = TestEnv::builder().partitions(1).build().await;
    allowed(&env, Principal::RECORDER, "UPDATE event_entries SET status = status WHERE false").await;
    allowed(&env, Principal::RECORDER, "UPDATE stock_ledger SET issued = issued WHERE false").await;
    for sql in [
        "SELECT count(*) FROM outbox",
        "SELECT count(*) FROM payout_claims",
        "UPDATE events SET payout_claimed = 0",
        "DELETE FROM event_entries",
    ] {
        refused(&env, Principal::RECORDER, sql).await;
    }

    allowed(&env, Principal::SENDER, "UPDATE events SET payout_claimed = payout_claimed WHERE false").await;
    allowed(&env, Principal::SENDER, "DELETE FROM outbox WHERE false").await;
    for sql in [
        "UPDATE events SET status = 'closed'",
        "UPDATE event_entries SET status = 'sent'",
        "UPDATE stock_ledger SET issued = 0",
        "DELETE FROM payout_claims",
        "TRUNCATE outbox",
    ] {
        refused(&env, Principal::SENDER, sql).await;
    }
}

/// The stock stage decides in Redis; it reads an event's row only to
/// restore an event Redis lost whole (`stock_processor::restore`).
#[tokio::test]
async fn the_stock_stage_only_reads_events() {
    let env = TestEnv::builder().partitions(1).build().await;
    allowed(
        &env,
        Principal::STOCK,
        "SELECT event_id, product_id, total_stock, safety_stock, open_at, close_at, questions, status FROM events",
    )
    .await;
    for sql in [
        "INSERT INTO events (event_id, name, product_id, total_stock, open_at, close_at) VALUES ('e', 'n', 'p', 1, now(), now() + interval '1 hour')",
        "UPDATE events SET status = 'closed'",
        "UPDATE events SET payout_claimed = 0",
        "DELETE FROM events",
        "SELECT count(*) FROM event_entries",
        "SELECT count(*) FROM stock_ledger",
        "SELECT count(*) FROM payout_claims",
        "SELECT count(*) FROM gift_dispatches",
        "SELECT count(*) FROM outbox",
        "CREATE TABLE stock_was_here (id int)",
        "CREATE TEMP TABLE stock_was_here (id int)",
    ] {
        refused(&env, Principal::STOCK, sql).await;
    }
}

#[tokio::test]
async fn only_the_owner_migrates_and_nobody_is_a_superuser() {
    let env = TestEnv::builder().partitions(1).build().await;
    for principal in Principal::ALL {
        let pool = platform::db::pool(&env.database_as(principal)).expect("pool");
        let client = pool.get().await.expect("logs in");
        let row = client
            .query_one("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user", &[])
            .await
            .expect("own role");
        let (superuser, createrole): (bool, bool) = (row.get(0), row.get(1));
        assert!(!superuser && !createrole, "{} is a superuser or creates roles", principal.database_role());
        if principal != Principal::ADMIN {
            let migrated = platform::db::migrate(&pool).await;
            assert!(migrated.is_err(), "{} ran the migrations", principal.database_role());
        }
    }
    // The owner migrates (again: nothing pending, the grants re-applied).
    let owner = platform::db::pool(&env.admin_database()).expect("pool");
    assert_eq!(platform::db::migrate(&owner).await.expect("the owner migrates"), 0);
}

// Redis: the ACL users of stack/redis/users.acl.

/// A `SET` of an event's stock counter as `principal` (None: no user).
async fn set_stock_counter(env: &TestEnv, principal: Option<Principal>) -> Result<(), String> {
    let settings = match principal {
        Some(principal) => env.redis.for_principal(Environment::Local, principal),
        None => env.redis.clone(),
    };
    let key = platform::event_keys::EventKeys::new(&format!("acl-{}", env.id)).stock;
    let mut conn = platform::redis::connect(&settings).await.map_err(|e| e.to_string().to_lowercase())?;
    let set: Result<(), _> = redis::cmd("SET").arg(&key).arg(1_000).arg("EX").arg(60).query_async(&mut conn).await;
    // The redis crate names the server's error kinds in its own case ("NoPerm: …").
    set.map_err(|e| e.to_string().to_lowercase())
}

#[tokio::test]
async fn only_the_stock_stage_sets_a_stock_counter() {
    let env = TestEnv::builder().partitions(1).without_database().build().await;
    let anonymous = set_stock_counter(&env, None).await.expect_err("no user: refused");
    assert!(anonymous.contains("noauth") || anonymous.contains("authentication"), "{anonymous}");
    let ingest = set_stock_counter(&env, Some(Principal::INGEST)).await.expect_err("ingest: refused");
    assert!(ingest.contains("noperm"), "{ingest}");
    set_stock_counter(&env, Some(Principal::STOCK)).await.expect("the stock stage sets it");

    // Ingest still does its own part: reads an event, marks a member's entry.
    let mut conn = platform::redis::connect(&env.redis.for_principal(Environment::Local, Principal::INGEST))
        .await
        .expect("ingest logs in");
    let keys = platform::event_keys::EventKeys::new(&format!("acl-{}", env.id));
    let _: Option<String> =
        redis::cmd("GET").arg(&keys.stock).query_async(&mut conn).await.expect("ingest reads the counter");
    let _: () = redis::cmd("HSET")
        .arg(&keys.entered)
        .arg("m-1")
        .arg("P|e|0")
        .query_async(&mut conn)
        .await
        .expect("ingest marks");
    let flush: Result<(), _> = redis::cmd("FLUSHALL").query_async(&mut conn).await;
    assert!(flush.unwrap_err().to_string().to_lowercase().contains("noperm"));
}

/// Runs `command` as ingest on a fresh event's keys (the admin wrote them
/// first); the error text, lower-cased, if refused.
async fn as_ingest(conn: &mut platform::redis::Connection, command: &redis::Cmd) -> Result<(), String> {
    let done: Result<redis::Value, _> = command.query_async(conn).await;
    done.map(|_| ()).map_err(|e| e.to_string().to_lowercase())
}

#[tokio::test]
async fn ingest_reads_an_events_state_and_writes_only_its_admissions() {
    let env = TestEnv::builder().partitions(1).without_database().build().await;
    let keys = platform::event_keys::EventKeys::new(&format!("acl-{}", env.id));
    let mut admin =
        platform::redis::connect(&env.redis.for_principal(Environment::Local, Principal::ADMIN)).await.expect("admin");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&keys.meta)
        .arg("status")
        .arg("closed")
        .ignore()
        .cmd("SET")
        .arg(&keys.stock)
        .arg(5)
        .ignore()
        .cmd("SET")
        .arg(&keys.frontier)
        .arg(5)
        .ignore()
        .cmd("SADD")
        .arg(&keys.eligible)
        .arg("m-1")
        .ignore()
        .cmd("HSET")
        .arg(&keys.decisions)
        .arg("e-1")
        .arg("WON|1")
        .ignore()
        .query_async(&mut admin)
        .await
        .expect("the admin writes an event");
    for key in [&keys.meta, &keys.stock, &keys.frontier, &keys.eligible, &keys.decisions] {
        let _: () = redis::cmd("PEXPIRE").arg(key).arg(600_000).query_async(&mut admin).await.expect("expiry");
    }
    let mut ingest = platform::redis::connect(&env.redis.for_principal(Environment::Local, Principal::INGEST))
        .await
        .expect("ingest logs in");

    // What ingest reads, it may read.
    let _: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(&keys.meta).query_async(&mut ingest).await.expect("ingest reads meta");
    let _: bool = redis::cmd("SISMEMBER")
        .arg(&keys.eligible)
        .arg("m-1")
        .query_async(&mut ingest)
        .await
        .expect("reads eligibility");
    let _: Option<i64> = redis::cmd("GET").arg(&keys.stock).query_async(&mut ingest).await.expect("reads the counter");

    // Every write to the state it only reads is refused: directly and from a
    // script that declares the key (the admit script's way in).
    let hset_meta = |status: &str| redis::cmd("HSET").arg(&keys.meta).arg("status").arg(status).clone();
    let mut forbidden = vec![
        ("reopen a closed event", hset_meta("open")),
        ("close an event", hset_meta("closed")),
        ("extend meta's life", redis::cmd("PEXPIRE").arg(&keys.meta).arg(1).clone()),
        ("expire the stock counter", redis::cmd("PEXPIRE").arg(&keys.stock).arg(1).clone()),
        ("expire eligibility", redis::cmd("PEXPIRE").arg(&keys.eligible).arg(1).clone()),
        ("persist eligibility", redis::cmd("PERSIST").arg(&keys.eligible).clone()),
        ("add an eligible member", redis::cmd("SADD").arg(&keys.eligible).arg("m-x").clone()),
        ("set the stock counter", redis::cmd("SET").arg(&keys.stock).arg(99).clone()),
        // The counter only rises (INCR, INCRBY): a SET could put it back.
        ("set the ticket counter", redis::cmd("SET").arg(&keys.ticket).arg(1).clone()),
        ("move the frontier", redis::cmd("SET").arg(&keys.frontier).arg(99).clone()),
        ("write a decision", redis::cmd("HSET").arg(&keys.decisions).arg("e-2").arg("WON|2").clone()),
        ("delete meta", redis::cmd("DEL").arg(&keys.meta).clone()),
    ];
    for (script, key) in [
        ("return redis.call('HSET', KEYS[1], 'status', 'open')", &keys.meta),
        ("return redis.call('PEXPIRE', KEYS[1], 1)", &keys.eligible),
        ("return redis.call('PEXPIRE', KEYS[1], 1)", &keys.stock),
        ("return redis.call('SADD', KEYS[1], 'm-x')", &keys.eligible),
    ] {
        forbidden.push(("a script's write", redis::cmd("EVAL").arg(script).arg(1).arg(key).clone()));
    }
    for (what, command) in &forbidden {
        let refused = as_ingest(&mut ingest, command).await.expect_err(what);
        assert!(
            refused.contains("noperm") || refused.contains("can't access") || refused.contains("can't run"),
            "{what}: {refused}"
        );
    }
    let status: Option<String> =
        redis::cmd("HGET").arg(&keys.meta).arg("status").query_async(&mut admin).await.unwrap();
    assert_eq!(status.as_deref(), Some("closed"), "still closed");
    let ttl: i64 = redis::cmd("PTTL").arg(&keys.eligible).query_async(&mut admin).await.unwrap();
    assert!(ttl > 60_000, "eligibility keeps its expiry: {ttl}");

    // What ingest's scripts write, it may write: the first-entry marks, the
    // tickets and the unacknowledged entries, with the event's expiry.
    let admission = "redis.call('HSET', KEYS[3], 'm-1', 'P|e-1|0'); redis.call('HSET', KEYS[4], 'e-1', 'm-1'); \
        redis.call('INCR', KEYS[5]); redis.call('HSET', KEYS[6], 'e-1', 1); redis.call('ZADD', KEYS[8], 1, 'e-1'); \
        redis.call('PEXPIRE', KEYS[5], 600000); return redis.call('HMGET', KEYS[1], 'status')";
    let _: redis::Value = redis::cmd("EVAL")
        .arg(admission)
        .arg(8)
        .arg(&keys.meta)
        .arg(&keys.eligible)
        .arg(&keys.entered)
        .arg(&keys.entries)
        .arg(&keys.ticket)
        .arg(&keys.tickets)
        .arg(&keys.frontier)
        .arg(&keys.pending)
        .query_async(&mut ingest)
        .await
        .expect("ingest's admission writes");
    // And the wait after a raise of a counter that went back, announced to
    // the other instances on the ticket floor channel.
    let _: () = redis::cmd("SET")
        .arg(&keys.settle)
        .arg(1)
        .arg("PX")
        .arg(250)
        .query_async(&mut ingest)
        .await
        .expect("ingest starts the settle");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(platform::event_keys::TICKET_FLOOR_CHANNEL)
        .arg("{}")
        .query_async(&mut ingest)
        .await
        .expect("ingest announces its floors");
    let _: () = redis::cmd("DEL").arg(keys.all().to_vec()).query_async(&mut admin).await.expect("cleaned up");
}

// Kafka: SASL/SCRAM logins, the standard authorizer and the topology's ACLs
// (platform::kafka::acl), created for this test's topics by the test kit.

/// Produces one record to `topic` as `principal` (None: no SASL login).
async fn produce_as(env: &TestEnv, principal: Option<Principal>, topic: &str) -> Result<(), String> {
    let settings = match principal {
        Some(principal) => env.kafka_as(principal),
        None => env.kafka.clone(),
    };
    let producer: FutureProducer = platform::kafka::client_config(&settings)
        .set("message.timeout.ms", "10000")
        .create()
        .map_err(|e| e.to_string())?;
    producer
        .send(FutureRecord::to(topic).key("m-1").payload("forged"), Duration::from_secs(10))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e.to_string())
}

#[tokio::test]
async fn ingest_credentials_are_refused_on_stock_decided() {
    let env = TestEnv::builder().partitions(1).without_database().build().await;
    let topics = env.topics();
    let refused =
        produce_as(&env, Some(Principal::INGEST), &topics.stock_decided).await.expect_err("ingest on stock-decided");
    assert!(refused.contains("uthoriz"), "{refused}");
    produce_as(&env, Some(Principal::INGEST), &topics.survey_submitted).await.expect("ingest on survey-submitted");

    for (principal, topic) in [
        (Principal::RECORDER, &topics.stock_decided),
        (Principal::SENDER, &topics.stock_decided),
        (Principal::INGEST, &topics.gift_dispatched),
        (Principal::STOCK, &topics.stock_released),
        (Principal::RECORDER, &topics.survey_submitted),
    ] {
        let refused = produce_as(&env, Some(principal), topic).await.expect_err("refused");
        assert!(refused.contains("uthoriz"), "{principal:?} on {topic}: {refused}");
    }
    produce_as(&env, Some(Principal::STOCK), &topics.stock_decided).await.expect("stock on stock-decided");
    produce_as(&env, Some(Principal::SENDER), &topics.stock_released).await.expect("sender on stock-released");

    // No login at all: the broker speaks SASL only.
    assert!(produce_as(&env, None, &topics.survey_submitted).await.is_err(), "an anonymous client produced");
}

/// Reads `topic` from its beginning as `settings`' principal, in `group`:
/// the first record, or the error the broker answers.
fn consume_first(settings: &platform::settings::KafkaSettings, group: &str, topic: &str) -> Result<(), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = platform::kafka::client_config(settings)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(topic, 0, Offset::Beginning).map_err(|e| e.to_string())?;
    consumer.assign(&partitions).map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return Ok(()),
            Some(Err(error)) => return Err(error.to_string()),
            None => {}
        }
    }
    Err("neither a record nor an error within 20 s".into())
}

/// The sender judges a WON without its entry forged only once the recorder
/// has read past it (`sender::entries`): its login may describe
/// `survey-submitted` and the recorder's group (watermarks, committed
/// offsets), never read an entry (nor describe another group: the unit
/// tests of `platform::kafka::acl`; librdkafka answers that with a timeout).
#[tokio::test]
async fn the_sender_describes_the_recorders_progress_and_reads_no_entry() {
    use platform::kafka::lag::group_lag;
    use schemas::topology::group;
    let env = TestEnv::builder().partitions(1).without_database().build().await;
    let topics = env.topics();
    produce_as(&env, Some(Principal::INGEST), &topics.survey_submitted).await.expect("ingest on survey-submitted");
    let sender = env.kafka_as(Principal::SENDER);

    let lag = group_lag(&sender, &env.group(group::RECORDING), &[&topics.survey_submitted])
        .await
        .expect("the sender reads where the recorder stands");
    assert_eq!(lag.len(), 1);
    assert_eq!((lag[0].committed, lag[0].end), (None, 1), "{lag:?}");

    // In its own group, which it may read: the entries topic is still refused.
    let topic = topics.survey_submitted.clone();
    let dispatch = env.group(group::DISPATCH);
    let read = tokio::task::spawn_blocking(move || consume_first(&sender, &dispatch, &topic)).await.expect("task");
    assert!(read.as_ref().is_err_and(|e| e.contains("uthoriz")), "the sender read an entry: {read:?}");
}

/// What `firstcome-lab cleanup-tests` does to a finished test's ACLs: exactly its
/// prefix's bindings go (another test's stay), and with them the right to write.
#[tokio::test]
async fn a_test_prefixs_acls_are_removed_exactly() {
    use platform::kafka::acl::{delete_acls, describe_acls, pipeline_acls};
    let finished = TestEnv::builder().partitions(1).without_database().build().await;
    let running = TestEnv::builder().partitions(1).without_database().build().await;
    let admin = finished.kafka_admin();
    let of = |acls: &[platform::kafka::acl::Acl], prefix: &str| -> Vec<platform::kafka::acl::Acl> {
        let mut mine: Vec<_> = acls.iter().filter(|a| a.name.contains(prefix)).cloned().collect();
        mine.sort();
        mine
    };
    // The test kit waited for its ACLs to be in effect.
    let before = describe_acls(&admin).await.expect("described");
    assert_eq!(of(&before, &finished.prefix), pipeline_acls(&finished.prefix), "the test kit's ACLs, as described");
    produce_as(&finished, Some(Principal::INGEST), &finished.topics().survey_submitted).await.expect("allowed before");

    let deleted = delete_acls(&admin, &pipeline_acls(&finished.prefix)).await.expect("deleted");
    assert_eq!(deleted, pipeline_acls(&finished.prefix).len());
    // The broker applies the deletion through its metadata log: wait for it to be described.
    let gone = testkit::wait_until(Duration::from_secs(30), || async {
        describe_acls(&admin).await.is_ok_and(|after| of(&after, &finished.prefix).is_empty())
    })
    .await;
    assert!(gone, "the finished test's ACLs are gone");
    let after = describe_acls(&admin).await.expect("described");
    assert_eq!(of(&after, &running.prefix), pipeline_acls(&running.prefix), "another test's ACLs stay");
    let refused = produce_as(&finished, Some(Principal::INGEST), &finished.topics().survey_submitted).await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("uthoriz")), "{refused:?}");
    assert_eq!(delete_acls(&admin, &pipeline_acls(&finished.prefix)).await.expect("deleted again"), 0, "idempotent");
}

/// Through the Sentinels (`stack up redis-sentinel`, `eval "$(stack/bin/stack env
/// redis-sentinel)"`): the data nodes have the same users, reached as each
/// service's. Skipped when no Sentinels are configured.
#[tokio::test]
async fn through_the_sentinels_each_service_is_its_own_user() {
    let env = TestEnv::builder().partitions(1).without_database().build().await;
    if env.redis.sentinel_addresses().is_empty() {
        eprintln!("no Sentinels configured (FIRSTCOME_REDIS__SENTINELS): skipped");
        return;
    }
    let ingest = set_stock_counter(&env, Some(Principal::INGEST)).await.expect_err("ingest: refused");
    assert!(ingest.contains("noperm"), "{ingest}");
    set_stock_counter(&env, Some(Principal::STOCK)).await.expect("the stock stage sets it through the Sentinels");
    assert!(set_stock_counter(&env, None).await.is_err(), "no user: refused");
}
