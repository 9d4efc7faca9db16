//! The provider contract (CONTRACT.md), checked over HTTP against the
//! simulator started in-process on a random port.

use std::time::Duration;

use provider_sim::{Application, Faults, Gift, Settings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct Sim {
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), provider_sim::Error>>,
}

async fn spawn_sim(faults: Faults, seed: u64) -> Sim {
    let app = Application::build(Settings::ephemeral(faults, seed)).await.expect("simulator starts");
    let url = app.base_url();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = keyed().timeout(Duration::from_secs(10)).build().unwrap();
    Sim { url, http, shutdown, handle }
}

/// A client that sends the simulator's local API key, as the sender does.
fn keyed() -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(provider_sim::API_KEY_HEADER, provider_sim::settings::DEV_API_KEY.parse().unwrap());
    reqwest::Client::builder().default_headers(headers).no_proxy()
}

impl Sim {
    async fn issue(&self, key: &str, phone: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/gifts", self.url))
            .json(&json!({ "idempotency_key": key, "phone": phone, "product": "coffee-10000", "amount": 10000 }))
            .send()
            .await
            .expect("request sent")
    }

    async fn lookup(&self, key: &str) -> reqwest::Response {
        self.http.get(format!("{}/v1/gifts/{key}", self.url)).send().await.expect("request sent")
    }

    async fn count(&self) -> u64 {
        let body: Value = self.http.get(format!("{}/v1/gifts", self.url)).send().await.unwrap().json().await.unwrap();
        let count = body["count"].as_u64().expect("count");
        assert_eq!(body["gifts"].as_array().map(Vec::len), Some(count as usize), "count matches the list");
        count
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), self.handle).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "the simulator stops within 5 s: {stopped:?}");
    }
}

#[tokio::test]
async fn a_repeated_key_issues_one_gift_and_replays_it() {
    let sim = spawn_sim(Faults::default(), 1).await;
    let first = sim.issue("entry-1", "010-0000-0001").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Gift = first.json().await.unwrap();
    assert_eq!(first.status, "ISSUED");
    assert_eq!(first.idempotency_key, "entry-1");

    let again = sim.issue("entry-1", "010-0000-0001").await;
    assert_eq!(again.status(), StatusCode::OK);
    let again: Gift = again.json().await.unwrap();
    assert_eq!(again, first, "a replay returns the same gift");

    let found = sim.lookup("entry-1").await;
    assert_eq!(found.status(), StatusCode::OK);
    assert_eq!(found.json::<Gift>().await.unwrap(), first);
    assert_eq!(sim.count().await, 1);
    sim.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_identical_calls_issue_exactly_one_gift() {
    let sim = spawn_sim(Faults { latency_ms: 5, jitter_ms: 20, ..Faults::default() }, 2).await;
    let calls = (0..50).map(|_| sim.issue("entry-race", "010-0000-0002"));
    let responses = futures::future::join_all(calls).await;
    let mut created = 0;
    let mut gift_ids = std::collections::HashSet::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected status {other}"),
        }
        gift_ids.insert(response.json::<Gift>().await.unwrap().gift_id);
    }
    assert_eq!(created, 1, "exactly one call issues");
    assert_eq!(gift_ids.len(), 1, "every call sees the same gift");
    assert_eq!(sim.count().await, 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_repeated_key_with_another_phone_is_a_conflict() {
    let sim = spawn_sim(Faults::default(), 3).await;
    assert_eq!(sim.issue("entry-2", "010-0000-0003").await.status(), StatusCode::CREATED);
    let conflict = sim.issue("entry-2", "010-9999-9999").await;
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert_eq!(sim.count().await, 1, "no second gift");
    sim.stop().await;
}

#[tokio::test]
async fn a_refused_phone_is_422_and_issues_nothing() {
    let faults = Faults {
        refused_phones: vec!["010-1234-5678".into()],
        refused_phone_suffixes: vec!["-0000".into()],
        ..Faults::default()
    };
    let sim = spawn_sim(faults, 4).await;
    for (key, phone) in [("entry-3", "010-1234-5678"), ("entry-4", "010-7777-0000")] {
        let refused = sim.issue(key, phone).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.json::<Value>().await.unwrap()["error"], "phone_refused");
        assert_eq!(sim.lookup(key).await.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(sim.issue("entry-5", "010-7777-0001").await.status(), StatusCode::CREATED);
    assert_eq!(sim.count().await, 1);
    sim.stop().await;
}

#[tokio::test]
async fn a_timeout_after_issue_leaves_the_gift_issued() {
    let faults = Faults { timeout_after_issue_rate: 1.0, hang_ms: 3_000, ..Faults::default() };
    let sim = spawn_sim(faults, 5).await;
    let impatient = keyed().timeout(Duration::from_millis(300)).build().unwrap();
    let outcome = impatient
        .post(format!("{}/v1/gifts", sim.url))
        .json(&json!({ "idempotency_key": "entry-6", "phone": "010-0000-0006", "product": "coffee-10000", "amount": 10000 }))
        .send()
        .await;
    let error = outcome.expect_err("the client times out");
    assert!(error.is_timeout(), "a timeout, not {error}");

    let found = sim.lookup("entry-6").await;
    assert_eq!(found.status(), StatusCode::OK, "the gift was issued anyway");
    assert_eq!(found.json::<Gift>().await.unwrap().idempotency_key, "entry-6");
    // Held responses do not delay shutdown.
    sim.stop().await;
}

#[tokio::test]
async fn a_transient_failure_happens_before_issuing() {
    let sim = spawn_sim(Faults { transient_failure_rate: 1.0, ..Faults::default() }, 6).await;
    assert_eq!(sim.issue("entry-7", "010-0000-0007").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.lookup("entry-7").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.count().await, 0);
    sim.stop().await;
}

#[tokio::test]
async fn beyond_the_rate_limit_calls_get_429_with_retry_after() {
    let sim = spawn_sim(Faults { rate_limit_per_sec: Some(2), ..Faults::default() }, 7).await;
    let statuses = [
        sim.issue("entry-8", "010-0000-0008").await,
        sim.issue("entry-9", "010-0000-0009").await,
        sim.issue("entry-10", "010-0000-0010").await,
    ];
    assert_eq!(statuses[0].status(), StatusCode::CREATED);
    assert_eq!(statuses[1].status(), StatusCode::CREATED);
    assert_eq!(statuses[2].status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after =
        statuses[2].headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(matches!(retry_after, Some(1)), "Retry-After in whole seconds: {retry_after:?}");
    assert_eq!(sim.count().await, 2);
    sim.stop().await;
}

#[tokio::test]
async fn faults_change_at_runtime_and_bad_ones_are_refused() {
    let sim = spawn_sim(Faults::default(), 8).await;
    let url = format!("{}/admin/faults", sim.url);
    let bad = sim.http.put(&url).json(&json!({ "transient_failure_rate": 1.5 })).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let typo = sim.http.put(&url).json(&json!({ "transient_rate": 0.5 })).send().await.unwrap();
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);

    let set = sim.http.put(&url).json(&json!({ "refused_phones": ["010-5555-5555"] })).send().await.unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    let now: Faults = sim.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(now, Faults { refused_phones: vec!["010-5555-5555".into()], ..Faults::default() });
    assert_eq!(sim.issue("entry-11", "010-5555-5555").await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let cleared = sim.http.put(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(sim.issue("entry-11", "010-5555-5555").await.status(), StatusCode::CREATED);
    sim.stop().await;
}

#[tokio::test]
async fn the_same_seed_injects_the_same_faults() {
    let faults = Faults { transient_failure_rate: 0.5, ..Faults::default() };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = spawn_sim(faults.clone(), 42).await;
        let mut statuses = Vec::new();
        for i in 0..24 {
            statuses.push(sim.issue(&format!("entry-seed-{i}"), "010-0000-0042").await.status().as_u16());
        }
        sim.stop().await;
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "a fixed seed repeats the run");
    assert!(runs[0].contains(&503) && runs[0].contains(&201), "both outcomes occur: {:?}", runs[0]);
}

#[tokio::test]
async fn malformed_requests_are_400_and_unknown_keys_404() {
    let sim = spawn_sim(Faults::default(), 9).await;
    let missing = sim.http.post(format!("{}/v1/gifts", sim.url)).json(&json!({ "phone": "010" })).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let not_found = sim.lookup("nobody").await;
    assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
    assert_eq!(not_found.json::<Value>().await.unwrap(), json!({ "error": "not_found" }));
    let health = sim.http.get(format!("{}/healthz", sim.url)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    sim.stop().await;
}

#[tokio::test]
async fn issue_and_lookup_need_the_api_key() {
    let sim = spawn_sim(Faults::default(), 10).await;
    let order =
        json!({ "idempotency_key": "entry-k", "phone": "010-0000-0010", "product": "coffee-10000", "amount": 10000 });
    let bare = reqwest::Client::builder().no_proxy().build().unwrap();
    let wrong = {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(provider_sim::API_KEY_HEADER, "not-the-key".parse().unwrap());
        reqwest::Client::builder().default_headers(headers).no_proxy().build().unwrap()
    };
    for client in [&bare, &wrong] {
        let issued = client.post(format!("{}/v1/gifts", sim.url)).json(&order).send().await.unwrap();
        assert_eq!(issued.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(issued.json::<Value>().await.unwrap(), json!({ "error": "unauthorized" }));
        let looked = client.get(format!("{}/v1/gifts/entry-k", sim.url)).send().await.unwrap();
        assert_eq!(looked.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(sim.issue("entry-k", "010-0000-0010").await.status(), StatusCode::CREATED);
    sim.stop().await;
}
