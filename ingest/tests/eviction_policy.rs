//! Redis must not evict an event's keys (first-entry marks, eligibility,
//! the event's state all carry a TTL): ingest refuses to start on a server
//! whose `maxmemory-policy` can evict, and its `/healthz` names the check
//! that fails when the policy changes under it (the reason is logged; the
//! public answer carries no error text).
//!
//! Against the stack's real Redis: the policy is set with the admin user
//! and put back by a guard, also when an assertion fails; each window with
//! an evicting policy lasts a moment (other tests share this Redis). Its own
//! test binary, so no other test of the same `cargo test` run meets it.

use std::time::Duration;

use ingest::{Application, Error, Settings};
use platform::settings::{HttpSettings, Principal, RedisSettings};
use redis::IntoConnectionInfo;
use testkit::wait_for;
use tokio_util::sync::CancellationToken;

const EVICTING: &str = "allkeys-lru";

/// A blocking admin connection to the stack's Redis (usable in `Drop`).
fn admin_connection(settings: &RedisSettings) -> redis::Connection {
    let info = settings.url.as_str().into_connection_info().expect("redis url");
    let redis = info.redis_settings().clone().set_username("admin").set_password(Principal::ADMIN.local_password());
    let client = redis::Client::open(info.set_redis_settings(redis)).expect("redis client");
    client.get_connection_with_timeout(Duration::from_secs(2)).expect("the stack's Redis, as admin")
}

fn set_policy(conn: &mut redis::Connection, policy: &str) -> redis::RedisResult<()> {
    redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(policy).query(conn)
}

/// Sets the policy back to `noeviction` when dropped.
struct PolicyGuard {
    conn: redis::Connection,
}

impl PolicyGuard {
    fn set(&mut self, policy: &str) {
        set_policy(&mut self.conn, policy).expect("CONFIG SET");
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        if set_policy(&mut self.conn, "noeviction").is_err() {
            let _ = set_policy(&mut admin_connection(&testkit::redis_admin()), "noeviction");
        }
    }
}

async fn healthz(ops_url: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("{ops_url}/healthz")).await.expect("GET /healthz");
    (response.status().as_u16(), response.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_a_redis_that_can_evict_and_its_healthz_names_the_check() {
    let env = testkit::TestEnv::new().await;
    assert!(
        env.redis.sentinel_addresses().is_empty(),
        "this test sets the policy on redis.url; run it without Sentinels"
    );
    let settings = Settings {
        http: HttpSettings::on_port(0),
        ops: HttpSettings::on_port(0),
        kafka: env.kafka.clone(),
        registry: env.registry.clone(),
        redis: env.redis.clone(),
        database: env.database.clone(),
        ..Default::default()
    };
    let mut guard = PolicyGuard { conn: admin_connection(&env.redis) };
    let before: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query(&mut guard.conn).expect("CONFIG GET");
    assert_eq!(
        before.get(1).map(String::as_str),
        Some("noeviction"),
        "the stack's Redis runs noeviction (stack/redis/)"
    );

    guard.set(EVICTING);
    let refused = Application::build(settings.clone()).await;
    guard.set("noeviction");
    match refused {
        Err(Error::EvictionPolicy(error)) => assert_eq!(error.policy, EVICTING),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("ingest started on a Redis with maxmemory-policy {EVICTING}"),
    }

    let app = Application::build(settings).await.expect("ingest starts on noeviction");
    let ops_url = app.ops_url();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let (status, body) = healthz(&ops_url).await;
    assert_eq!((status, &body["checks"]["redis_eviction_policy"]), (200, &"ok".into()), "{body}");

    // The policy changed under it: unavailable once the cached answer (1 s) is renewed.
    guard.set(EVICTING);
    let down = std::sync::Mutex::new(serde_json::Value::Null);
    let seen = testkit::wait_until(Duration::from_secs(10), || async {
        let (status, body) = healthz(&ops_url).await;
        let is_down = status == 503 && body["checks"]["redis_eviction_policy"] == "down";
        *down.lock().expect("body") = body;
        is_down
    })
    .await;
    guard.set("noeviction");
    let body = down.lock().expect("body").clone();
    assert!(seen, "/healthz did not report the evicting policy: {body}");
    assert_eq!(body["checks"]["redis"], "ok", "Redis itself answers: {body}");
    wait_for("/healthz healthy again", Duration::from_secs(10), || async { healthz(&ops_url).await.0 == 200 }).await;

    shutdown.cancel();
    running.await.expect("ingest task").expect("ingest stops cleanly");
    drop(guard);
}
