//! Redis must not evict an event's keys: the stage refuses to start on a
//! server whose `maxmemory-policy` can evict (they carry a TTL, and
//! `volatile-lru`, a common managed default, evicts exactly those), and its
//! `/healthz` says why when the policy changes under a running stage.
//!
//! Against the stack's real Redis: the policy is set with the admin user
//! and put back by a guard, also when an assertion fails. The stage logs in
//! as its own user, which may not run CONFIG: it reads the policy from
//! `INFO memory`. Each window with an evicting policy lasts a moment (other
//! tests share this Redis); its own test binary, so no other test of the
//! same `cargo test` run meets it.

mod common;

use std::time::Duration;

use platform::redis::{EvictionPolicy, NO_EVICTION};
use platform::settings::{Environment, Principal, RedisSettings};
use redis::IntoConnectionInfo;
use stock_processor::{Application, Error};
use testkit::TestEnv;
use tokio_util::sync::CancellationToken;

const EVICTING: &str = "volatile-lru";

/// A blocking admin connection to the stack's Redis (usable in `Drop`).
fn admin_connection(settings: &RedisSettings) -> redis::Connection {
    let info = settings.url.as_str().into_connection_info().expect("redis url");
    let redis = info.redis_settings().clone().set_username("admin").set_password(Principal::ADMIN.local_password());
    let client = redis::Client::open(info.set_redis_settings(redis)).expect("redis client");
    client.get_connection_with_timeout(Duration::from_secs(2)).expect("the stack's Redis, as admin")
}

fn policy(conn: &mut redis::Connection) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query(conn).expect("CONFIG GET");
    pair.get(1).cloned().expect("a maxmemory-policy")
}

fn set_policy(conn: &mut redis::Connection, policy: &str) {
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(policy).query(conn).expect("CONFIG SET");
}

/// Puts back the policy found at creation when dropped.
struct PolicyGuard {
    conn: redis::Connection,
    original: String,
}

impl PolicyGuard {
    fn new(settings: &RedisSettings) -> Self {
        let mut conn = admin_connection(settings);
        let original = policy(&mut conn);
        assert_eq!(original, NO_EVICTION, "the stack's Redis runs noeviction (stack/redis/)");
        Self { conn, original }
    }

    fn set(&mut self, policy: &str) {
        set_policy(&mut self.conn, policy);
    }

    fn restore(&mut self) {
        let original = self.original.clone();
        set_policy(&mut self.conn, &original);
    }
}

impl Drop for PolicyGuard {
    fn drop(&mut self) {
        let original = self.original.clone();
        if redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg(&original).query::<()>(&mut self.conn).is_err() {
            // The connection may be what failed: a fresh one.
            let _ = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(&original)
                .query::<()>(&mut admin_connection(&testkit::redis_admin()));
        }
    }
}

async fn healthz(port: u16) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.expect("GET /healthz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stage_refuses_a_redis_that_can_evict_and_its_healthz_says_why() {
    let env = TestEnv::builder().without_database().build().await;
    assert!(
        env.redis.sentinel_addresses().is_empty(),
        "this test sets the policy on redis.url; run it without Sentinels"
    );
    let mut guard = PolicyGuard::new(&env.redis);

    // The stage's own user may not run CONFIG: the policy comes from INFO.
    let own = platform::redis::connect(&env.redis.for_principal(Environment::Local, Principal::STOCK))
        .await
        .expect("stock logs in");
    let admin = platform::redis::connect(&env.redis_admin()).await.expect("admin logs in");
    assert_eq!(own.eviction_policy().await, EvictionPolicy::NoEviction);

    // An evicting policy: the stage does not start, and says what to set.
    guard.set(EVICTING);
    let refused = Application::build(common::stage_settings(&env)).await;
    let (own_view, admin_view) = (own.eviction_policy().await, admin.eviction_policy().await);
    guard.restore();
    match refused {
        Err(Error::EvictionPolicy(error)) => {
            assert_eq!(error.policy, EVICTING);
            let text = error.to_string();
            assert!(text.contains(EVICTING) && text.contains("maxmemory-policy noeviction"), "{text}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("the stage started on a Redis with maxmemory-policy {EVICTING}"),
    }
    assert_eq!(own_view, EvictionPolicy::Evicts(EVICTING.into()), "read from INFO memory by the stock user");
    assert_eq!(admin_view, EvictionPolicy::Evicts(EVICTING.into()), "read with CONFIG GET by the admin");

    // noeviction: it starts, and /healthz reports the policy.
    let app = Application::build(common::stage_settings(&env)).await.expect("the stage starts on noeviction");
    let port = app.ops_port();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let (status, body) = healthz(port).await;
    assert_eq!((status, &body["checks"]["redis_eviction_policy"]), (200, &"ok".into()), "{body}");

    // The policy changed under the running stage: unavailable, and why.
    guard.set(EVICTING);
    let (status, body) = healthz(port).await;
    guard.restore();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let why = body["checks"]["redis_eviction_policy"].as_str().unwrap_or_default();
    assert!(why.contains(EVICTING) && why.contains("noeviction"), "{body}");
    assert_eq!(body["checks"]["redis"], "ok", "Redis itself answers: {body}");

    let (status, _) = healthz(port).await;
    assert_eq!(status, 200, "healthy again once the policy is back");
    shutdown.cancel();
    running.await.expect("stage task").expect("the stage stops cleanly");
    drop(guard);
    env.delete_topics().await;
}
