//! `firstcome event create`: PostgreSQL first (scheduled), then Redis, then
//! open; a create that failed in between is completed by running it again.

use platform::event_keys::{EventKeys, EventMeta, EventStatus};
use platform::settings::RedisSettings;

use firstcome_cli::commands::event::{self, NewEvent, DEFAULT_QUESTIONS};

use crate::helpers::{operator_settings, TestEnv};
use crate::pipeline_harness::seed_crowd;

fn new_event(product: &str) -> NewEvent {
    let now = chrono::Utc::now();
    NewEvent {
        event_id: format!("ev-{}", uuid::Uuid::new_v4()),
        name: "create test".into(),
        product_id: product.to_string(),
        total_stock: 4,
        safety_stock: 1,
        open_at: now - chrono::Duration::minutes(1),
        close_at: now + chrono::Duration::hours(1),
        questions: DEFAULT_QUESTIONS.map(String::from).to_vec(),
        line_depth: None,
    }
}

/// A Redis URL nothing listens on: a port the OS just handed out and took back.
fn closed_redis() -> RedisSettings {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    RedisSettings { url: format!("redis://127.0.0.1:{port}"), ..RedisSettings::default() }
}

async fn status(env: &TestEnv, event_id: &str) -> Option<String> {
    let pool = platform::db::pool(&env.admin_database()).expect("pool");
    let client = pool.get().await.expect("client");
    client
        .query_opt("SELECT status FROM events WHERE event_id = $1", &[&event_id])
        .await
        .expect("select")
        .map(|row| row.get(0))
}

async fn redis_keys(redis: &mut platform::redis::Connection, event_id: &str) -> i64 {
    let keys = EventKeys::new(event_id);
    redis::cmd("EXISTS").arg(&keys.all()[..]).query_async(redis).await.expect("EXISTS")
}

#[tokio::test]
async fn a_create_that_failed_at_redis_leaves_a_scheduled_row_and_completes_when_run_again() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 5, 2).await;
    // The line's depth given (`--line-depth`), kept in both stores.
    let event = NewEvent { line_depth: Some(2), ..new_event(&crowd.product) };
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");

    let mut broken = operator_settings(&env);
    broken.redis = closed_redis();
    let failed = event::create(&broken, &event).await;
    assert!(failed.is_err(), "Redis is unreachable: the create fails");
    assert_eq!(status(&env, &event.event_id).await.as_deref(), Some("scheduled"), "PostgreSQL first, as scheduled");
    assert_eq!(redis_keys(&mut redis, &event.event_id).await, 0, "nothing live in Redis");

    let eligible = event::create(&operator_settings(&env), &event).await.expect("the retry completes the create");
    assert_eq!(eligible, 5);
    assert_eq!(status(&env, &event.event_id).await.as_deref(), Some("open"));
    let meta = EventMeta::load(&mut redis, &event.event_id).await.expect("meta").expect("the event is live");
    assert_eq!((meta.for_sale, meta.line_depth, meta.status), (3, 2, EventStatus::Open));
    let pool = platform::db::pool(&env.admin_database()).expect("pool");
    let row = pool.get().await.expect("client");
    let kept = row.query_one("SELECT line_depth FROM events WHERE event_id = $1", &[&event.event_id]).await;
    assert_eq!(kept.expect("row").get::<_, Option<i32>>(0), Some(2), "a lost event is restored with it");
    let stock: i64 =
        redis::cmd("GET").arg(EventKeys::new(&event.event_id).stock).query_async(&mut redis).await.expect("GET");
    assert_eq!(stock, 3);
    let view = event::show(&operator_settings(&env), &event.event_id).await.expect("show");
    assert_eq!((view.total, view.for_sale, view.ledger_issued), (4, 3, 0), "one ledger");

    let again = event::create(&operator_settings(&env), &event).await;
    assert!(again.is_err(), "a live event is refused");
    assert_eq!(status(&env, &event.event_id).await.as_deref(), Some("open"));
}

#[tokio::test]
async fn a_create_that_stopped_before_opening_keeps_the_live_keys_and_opens_the_row() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 3, 0).await;
    let event = new_event(&crowd.product);
    event::create(&operator_settings(&env), &event).await.expect("create");
    let keys = EventKeys::new(&event.event_id);
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    // Step 2 done, step 3 lost; meanwhile a member won (ingest saw the live keys).
    let pool = platform::db::pool(&env.admin_database()).expect("pool");
    pool.get()
        .await
        .expect("client")
        .execute("UPDATE events SET status = 'scheduled' WHERE event_id = $1", &[&event.event_id])
        .await
        .expect("back to scheduled");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&keys.winners)
        .arg(&crowd.eligible[0])
        .arg(1)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&keys.winners)
        .arg(3_600_000)
        .ignore()
        .cmd("DECR")
        .arg(&keys.stock)
        .ignore()
        .query_async(&mut redis)
        .await
        .expect("a win");

    event::create(&operator_settings(&env), &event).await.expect("the retry completes the create");
    assert_eq!(status(&env, &event.event_id).await.as_deref(), Some("open"));
    let winners: i64 = redis::cmd("HLEN").arg(&keys.winners).query_async(&mut redis).await.expect("HLEN");
    let stock: i64 = redis::cmd("GET").arg(&keys.stock).query_async(&mut redis).await.expect("GET");
    assert_eq!((winners, stock), (1, 2), "the live keys are kept, not rewritten");
}

#[tokio::test]
async fn a_half_created_event_is_not_completed_with_other_parameters() {
    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 3, 0).await;
    let event = new_event(&crowd.product);
    let mut broken = operator_settings(&env);
    broken.redis = closed_redis();
    assert!(event::create(&broken, &event).await.is_err());

    let other = NewEvent { total_stock: 9, ..event.clone() };
    let refused = event::create(&operator_settings(&env), &other).await.expect_err("other parameters are refused");
    assert!(refused.to_string().contains("total stock"), "{refused:#}");
    assert_eq!(status(&env, &event.event_id).await.as_deref(), Some("scheduled"));
    let mut redis = platform::redis::connect(&env.redis_admin()).await.expect("redis");
    assert_eq!(redis_keys(&mut redis, &event.event_id).await, 0);

    event::create(&operator_settings(&env), &event).await.expect("the same parameters complete it");
    assert_eq!(status(&env, &event.event_id).await.as_deref(), Some("open"));
}
