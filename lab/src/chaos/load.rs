//! The chaos rush: every member enters once, some twice, in a seeded order,
//! at a steady planned pace (open loop: a shot leaves at its planned time
//! whatever the answers before it), round-robin over the ingest instances.
//! Each shot is a client that honours the service: on a transport error,
//! 503, 429 or 409 `entry_in_progress` it waits (`Retry-After`, capped) and
//! tries again on the next instance, until a final answer or its deadline.
//!
//! What the faults need from here: which members have a request in flight
//! at which instance right now ([`InFlight`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use audit::Accepted;

/// What to fire.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub base_urls: Vec<String>,
    pub event_id: String,
    /// (member, token) of every member; each enters once.
    pub members: Vec<(String, String)>,
    /// Total requests (first entries + second entries of random members).
    pub requests: usize,
    /// How long the shots are spread over.
    pub rush: Duration,
    /// Requests in flight at most (a shot waits for a slot).
    pub concurrency: usize,
    pub seed: u64,
    /// A shot gives up retrying after this long.
    pub shot_deadline: Duration,
}

/// Members with a request in flight, per ingest instance (index).
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<usize, HashMap<String, usize>>>>);

impl InFlight {
    fn enter(&self, instance: usize, member: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(instance).or_default().entry(member.to_string()).or_default() += 1;
    }

    fn leave(&self, instance: usize, member: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(members) = map.get_mut(&instance) {
            if let Some(n) = members.get_mut(member) {
                *n -= 1;
                if *n == 0 {
                    members.remove(member);
                }
            }
        }
    }

    /// Members in flight at `instance` and at no other instance.
    pub fn only_at(&self, instance: usize) -> Vec<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(here) = map.get(&instance) else { return Vec::new() };
        here.keys()
            .filter(|m| map.iter().all(|(i, members)| *i == instance || !members.contains_key(*m)))
            .cloned()
            .collect()
    }
}

/// What the rush saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub shots: usize,
    /// HTTP requests sent, retries included.
    pub requests: usize,
    /// Final status per shot (0: gave up on transport errors).
    pub finals: BTreeMap<u16, usize>,
    /// Every answer, retries included.
    pub answers: BTreeMap<u16, usize>,
    /// Error codes of final non-202 answers.
    pub final_errors: BTreeMap<String, usize>,
    pub accepted: Vec<Accepted>,
    pub elapsed_ms: u64,
    /// When the last request of the rush was sent.
    pub last_request_at: Option<DateTime<Utc>>,
}

/// The order of the shots: every member once and `requests - members`
/// second entries of random members, shuffled by `seed`.
pub fn shots(members: usize, requests: usize, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0x10ad));
    let mut order: Vec<usize> = (0..members).collect();
    let mut again: Vec<usize> = (0..members).collect();
    again.shuffle(&mut rng);
    order.extend(again.into_iter().cycle().take(requests.saturating_sub(members)));
    order.shuffle(&mut rng);
    order
}

struct Tally {
    report: LoadReport,
}

/// Fires the rush and waits for every shot's final answer.
pub async fn run(plan: &LoadPlan, in_flight: &InFlight) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(!plan.base_urls.is_empty(), "no ingest URL");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(plan.concurrency)
        .no_proxy()
        .build()?;
    let order = shots(plan.members.len(), plan.requests, plan.seed);
    let tally = Arc::new(Mutex::new(Tally { report: LoadReport { shots: order.len(), ..Default::default() } }));
    let slots = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let gap = plan.rush.as_secs_f64() / order.len().max(1) as f64;
    let started = Instant::now();
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, member_index) in order.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(gap * i as f64)).await;
        let slot = slots.clone().acquire_owned().await?;
        let (member, token) = plan.members[member_index].clone();
        let urls: Vec<String> = plan
            .base_urls
            .iter()
            .map(|u| format!("{}/api/events/{}/entries", u.trim_end_matches('/'), plan.event_id))
            .collect();
        let (client, tally, in_flight, deadline) =
            (client.clone(), tally.clone(), in_flight.clone(), plan.shot_deadline);
        tasks.spawn(async move {
            shot(&client, &urls, i, &member, &token, deadline, &in_flight, &tally).await;
            drop(slot);
        });
        // Reap finished shots as we go (the set stays small).
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut report = std::mem::take(&mut tally.lock().unwrap_or_else(|p| p.into_inner()).report);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn shot(
    client: &reqwest::Client,
    urls: &[String],
    i: usize,
    member: &str,
    token: &str,
    deadline: Duration,
    in_flight: &InFlight,
    tally: &Mutex<Tally>,
) {
    let body = serde_json::json!({
        "answers": { "satisfaction": "5", "recommend": "yes" },
        "client": { "channel": "chaos" },
    });
    let give_up = Instant::now() + deadline;
    let mut attempt = 0usize;
    loop {
        let instance = (i + attempt) % urls.len();
        attempt += 1;
        in_flight.enter(instance, member);
        let sent_at = Utc::now();
        let response = client.post(&urls[instance]).bearer_auth(token).json(&body).send().await;
        let (status, retry_after, json) = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                (status, retry_after, response.json::<serde_json::Value>().await.unwrap_or_default())
            }
            Err(_) => (0, None, serde_json::Value::Null),
        };
        in_flight.leave(instance, member);
        let error = json.get("error").and_then(|e| e.as_str()).map(str::to_owned);
        let retry = match status {
            0 | 503 | 429 => true,
            409 => error.as_deref() == Some("entry_in_progress"),
            _ => false,
        };
        let done = {
            let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
            t.report.requests += 1;
            *t.report.answers.entry(status).or_default() += 1;
            if t.report.last_request_at.is_none_or(|last| last < sent_at) {
                t.report.last_request_at = Some(sent_at);
            }
            let done = !retry || Instant::now() >= give_up;
            if done {
                *t.report.finals.entry(status).or_default() += 1;
                if status == 202 {
                    if let Some(entry_id) = json.get("entry_id").and_then(|e| e.as_str()) {
                        t.report.accepted.push(Accepted { member: member.to_string(), entry_id: entry_id.to_string() });
                    }
                } else if let Some(error) = error {
                    *t.report.final_errors.entry(error).or_default() += 1;
                }
            }
            done
        };
        if done {
            return;
        }
        // Retry-After is in seconds; a client in a rush retries sooner, never later than 2 s.
        let wait = retry_after
            .map(|s| Duration::from_secs(s).min(Duration::from_secs(2)))
            .unwrap_or(Duration::from_millis(250));
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_enters_and_the_order_replays() {
        let order = shots(100, 130, 9);
        assert_eq!(order.len(), 130);
        assert!((0..100).all(|m| order.contains(&m)));
        assert_eq!(order, shots(100, 130, 9));
        assert_ne!(order, shots(100, 130, 10));
    }

    #[test]
    fn in_flight_members_are_told_apart_by_instance() {
        let f = InFlight::default();
        f.enter(0, "a");
        f.enter(0, "b");
        f.enter(1, "b");
        assert_eq!(f.only_at(0), vec!["a".to_string()]);
        f.leave(1, "b");
        let mut at0 = f.only_at(0);
        at0.sort();
        assert_eq!(at0, vec!["a".to_string(), "b".to_string()]);
    }
}
