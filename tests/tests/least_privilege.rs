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
    // The dashboard on its ops listener: an operator's close, dispatch counts only.
    allowed(&env, Principal::INGEST, "UPDATE events SET status = 'closed', closed_at = now() WHERE false").await;
    allowed(&env, Principal::INGEST, "SELECT * FROM dispatch_figures('e', 60)").await;
    for sql in [
        "SELECT count(*) FROM members",
        "SELECT count(*) FROM purchases",
        "SELECT count(*) FROM gift_dispatches",
        "SELECT count(*) FROM payout_claims",
        "SELECT count(*) FROM outbox",
        "INSERT INTO event_entries (entry_id, event_id, user_id) VALUES (gen_random_uuid(), 'e', 'm')",
        "UPDATE events SET total_stock = 0",
        "UPDATE events SET payout_claimed = 0",
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
        "SELECT count(*) FROM members",
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
        "SELECT count(*) FROM members",
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
    allowed(&env, Principal::STOCK, "SELECT event_id, product_id, total_stock, safety_stock, open_at, close_at, questions, status FROM events").await;
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
        "SELECT count(*) FROM members",
        "SELECT count(*) FROM purchases",
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
    let mut conn = platform::redis::connect(&env.redis.for_principal(Environment::Local, Principal::INGEST)).await.expect("ingest logs in");
    let keys = platform::event_keys::EventKeys::new(&format!("acl-{}", env.id));
    let _: Option<String> = redis::cmd("GET").arg(&keys.stock).query_async(&mut conn).await.expect("ingest reads the counter");
    let _: () = redis::cmd("HSET").arg(&keys.entered).arg("m-1").arg("P|e|0").query_async(&mut conn).await.expect("ingest marks");
    let flush: Result<(), _> = redis::cmd("FLUSHALL").query_async(&mut conn).await;
    assert!(flush.unwrap_err().to_string().to_lowercase().contains("noperm"));
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
    let refused = produce_as(&env, Some(Principal::INGEST), &topics.stock_decided).await.expect_err("ingest on stock-decided");
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

/// What `firstcome cleanup-tests` does to a finished test's ACLs: exactly its
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
