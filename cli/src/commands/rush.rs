//! `firstcome rush`: the opening-minute load generator.
//!
//! Fires one entry per member (plus duplicate retries from some members) at
//! one or more ingest instances with bounded concurrency, on loopback only,
//! and reports what came back: status counts, latency percentiles and
//! throughput. Tokens are minted before the clock starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::seq::SliceRandom;
use serde::Serialize;

/// What to fire.
#[derive(Debug, Clone)]
pub struct RushPlan {
    /// Ingest base URLs, used round-robin.
    pub base_urls: Vec<String>,
    pub event_id: String,
    /// (member id, bearer token) of every member who enters once.
    pub members: Vec<(String, String)>,
    /// Share of members who submit a second time (double clicks, retries).
    pub duplicate_ratio: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The survey answers sent.
    pub answers: Vec<(String, String)>,
    /// Per-request timeout: the drill stops by itself.
    pub request_timeout: Duration,
}

/// One 202.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Accepted {
    pub member: String,
    pub entry_id: String,
}

/// What the rush saw.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RushReport {
    pub requests: usize,
    /// HTTP status (0 = transport error) → count.
    pub by_status: BTreeMap<u16, usize>,
    /// Error code of non-202 answers → count.
    pub by_error: BTreeMap<String, usize>,
    pub accepted: Vec<Accepted>,
    pub elapsed_ms: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl RushReport {
    pub fn count(&self, status: u16) -> usize {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
}

struct Answer {
    status: u16,
    error: Option<String>,
    entry_id: Option<String>,
    member: String,
    latency: Duration,
}

/// Runs the rush and waits for every answer.
pub async fn run(plan: &RushPlan) -> anyhow::Result<RushReport> {
    anyhow::ensure!(!plan.base_urls.is_empty(), "no ingest URL");
    let client = reqwest::Client::builder()
        .timeout(plan.request_timeout)
        .pool_max_idle_per_host(plan.concurrency)
        .no_proxy()
        .build()?;
    let answers: Arc<serde_json::Map<String, serde_json::Value>> = Arc::new(
        plan.answers.iter().map(|(q, a)| (q.clone(), serde_json::Value::String(a.clone()))).collect(),
    );

    // Every member once, some twice; shuffled like a real crowd.
    let mut shots: Vec<&(String, String)> = plan.members.iter().collect();
    let duplicates = (plan.members.len() as f64 * plan.duplicate_ratio.clamp(0.0, 1.0)) as usize;
    shots.extend(plan.members.iter().take(duplicates));
    shots.shuffle(&mut rand::rng());

    let started = Instant::now();
    let results: Vec<Answer> = futures::stream::iter(shots.into_iter().enumerate())
        .map(|(i, (member, token))| {
            let client = client.clone();
            let answers = answers.clone();
            let url = format!(
                "{}/api/events/{}/entries",
                plan.base_urls[i % plan.base_urls.len()].trim_end_matches('/'),
                plan.event_id
            );
            async move { fire(&client, &url, member, token, &answers).await }
        })
        .buffer_unordered(plan.concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    Ok(summarise(results, elapsed))
}

async fn fire(
    client: &reqwest::Client,
    url: &str,
    member: &str,
    token: &str,
    answers: &serde_json::Map<String, serde_json::Value>,
) -> Answer {
    let body = serde_json::json!({ "answers": answers, "client": { "channel": "rush" } });
    let started = Instant::now();
    let response = client.post(url).bearer_auth(token).json(&body).send().await;
    let (status, json) = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
        Err(error) => (0, serde_json::json!({ "error": format!("transport: {error}") })),
    };
    Answer {
        status,
        error: json.get("error").and_then(|e| e.as_str()).map(str::to_owned),
        entry_id: json.get("entry_id").and_then(|e| e.as_str()).map(str::to_owned),
        member: member.to_string(),
        latency: started.elapsed(),
    }
}

fn summarise(results: Vec<Answer>, elapsed: Duration) -> RushReport {
    let mut report = RushReport { requests: results.len(), elapsed_ms: elapsed.as_millis() as u64, ..Default::default() };
    let mut latencies: Vec<f64> = results.iter().map(|r| r.latency.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    for result in results {
        *report.by_status.entry(result.status).or_default() += 1;
        if let Some(error) = result.error {
            *report.by_error.entry(error).or_default() += 1;
        }
        if result.status == 202 {
            if let Some(entry_id) = result.entry_id {
                report.accepted.push(Accepted { member: result.member, entry_id });
            }
        }
    }
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index.min(latencies.len() - 1)]
    };
    report.p50_ms = pct(0.50);
    report.p90_ms = pct(0.90);
    report.p99_ms = pct(0.99);
    report.max_ms = latencies.last().copied().unwrap_or(0.0);
    report.requests_per_sec = report.requests as f64 / elapsed.as_secs_f64().max(1e-9);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, ms: u64) -> Answer {
        Answer {
            status,
            error: (status != 202).then(|| "x".to_string()),
            entry_id: (status == 202).then(|| format!("e{ms}")),
            member: format!("m{ms}"),
            latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn the_summary_counts_statuses_and_ranks_latencies() {
        let results = (1..=100).map(|ms| answer(if ms % 10 == 0 { 409 } else { 202 }, ms)).collect();
        let report = summarise(results, Duration::from_secs(2));
        assert_eq!(report.count(202), 90);
        assert_eq!(report.count(409), 10);
        assert_eq!(report.accepted.len(), 90);
        assert_eq!(report.by_error.get("x"), Some(&10));
        assert!((report.p50_ms - 51.0).abs() < 1.01, "{}", report.p50_ms);
        assert_eq!(report.max_ms, 100.0);
        assert_eq!(report.requests_per_sec, 50.0);
    }
}
