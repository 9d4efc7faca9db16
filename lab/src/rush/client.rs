//! The open-loop firing: each shot leaves when the schedule says, over a
//! bounded set of keep-alive connections, and every answer is recorded in
//! a per-second timeline and HdrHistograms.
//!
//! A shot whose time has come while every connection is busy waits for one
//! at most `max_lateness` (the shots behind it wait too, and count as late);
//! past that it is counted as unsent and the schedule goes on, so a slow
//! server cannot turn the rush into a closed loop that waits for it. With
//! no `max_lateness` (the demo, the tests) every shot is sent, late or not.
//!
//! A member answered "in line" by the waiting room (429 `waiting`, 425 in the
//! pre-queue; [`super::line`]) gives the connection back, sleeps until its
//! `Retry-After` and asks again — a follow-up of the same arrival, not a new
//! one — until a final answer or the line's deadline (`line_deadline` from
//! the start), when it counts as still waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use super::line::{self, InLine, LineRecorder, Stay};
use super::schedule::Schedule;
use super::Accepted;

/// A shot sent this long after it was due counts as late.
pub const LATE: Duration = Duration::from_millis(10);

/// One request to fire.
#[derive(Debug, Clone)]
pub struct Shot {
    pub member: Arc<str>,
    /// `Bearer <token>`, built before the clock starts.
    pub authorization: Arc<str>,
}

/// What one second of the rush saw (answers by the second they came back).
#[derive(Debug)]
pub struct Second {
    pub by_status: BTreeMap<u16, u64>,
    /// Latency of the answers of this second, µs.
    pub latency: Histogram<u64>,
    pub sent: u64,
    pub unsent: u64,
}

impl Second {
    fn new() -> Self {
        Self { by_status: BTreeMap::new(), latency: new_histogram(), sent: 0, unsent: 0 }
    }
}

/// Latencies in µs, 1 µs to 2 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Everything the firing saw, shared by the connections.
#[derive(Debug)]
pub struct Recorded {
    pub seconds: Vec<Second>,
    pub latency: Histogram<u64>,
    /// Every answer, follow-ups of members in line included.
    pub by_status: BTreeMap<u16, u64>,
    pub by_error: BTreeMap<String, u64>,
    pub accepted: Vec<Accepted>,
    /// Arrivals sent (follow-ups are `line.retries`).
    pub sent: u64,
    pub unsent: u64,
    /// Sent more than [`LATE`] after they were due (every connection busy).
    pub late: u64,
    /// From the start: the last request sent (a follow-up too), the last answer received.
    pub last_sent: Duration,
    pub last_answer: Duration,
    /// The waiting room's line as the answers told it.
    pub line: LineRecorder,
}

impl Recorded {
    fn second(&mut self, at: Duration) -> &mut Second {
        let index = at.as_secs() as usize;
        while self.seconds.len() <= index {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[index]
    }
}

/// What one answer carried.
struct Answer {
    status: u16,
    error: Option<String>,
    entry_id: Option<String>,
    /// The waiting room's "in line" answer.
    in_line: Option<InLine>,
}

/// After an answer: done, or ask again at this time from the start.
enum Next {
    Done,
    RetryAt(Duration),
}

/// Fires `shots[k]` at `schedule.due(k)` from `started`, round-robin over
/// `urls`, at most `connections` in flight; returns when every sent request
/// was answered (or timed out) and no member is left in line (or the
/// `line_deadline`, from `started`, passed).
#[allow(clippy::too_many_arguments)] // the drill's knobs, each passed once by `rush::run` (and a test)
pub async fn fire(
    client: &reqwest::Client,
    urls: &[String],
    body: &'static str,
    shots: Vec<Shot>,
    schedule: &Schedule,
    connections: usize,
    max_lateness: Option<Duration>,
    line_deadline: Duration,
    started: Instant,
    progress: &indicatif::ProgressBar,
) -> Recorded {
    let recorded = Arc::new(Mutex::new(Recorded {
        seconds: Vec::new(),
        latency: new_histogram(),
        by_status: BTreeMap::new(),
        by_error: BTreeMap::new(),
        accepted: Vec::new(),
        sent: 0,
        unsent: 0,
        late: 0,
        last_sent: Duration::ZERO,
        last_answer: Duration::ZERO,
        line: LineRecorder::default(),
    }));
    let slots = Arc::new(Semaphore::new(connections.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (k, shot) in shots.into_iter().enumerate() {
        let due = schedule.due(k);
        let now = started.elapsed();
        if due > now + Duration::from_millis(1) {
            tokio::time::sleep(due - now).await;
        }
        if k % 256 == 0 {
            progress.set_position(k as u64);
            // Reap finished tasks now and then: the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        // A free connection now, or within the allowed lateness; the shots
        // behind wait meanwhile, and those already too late go unsent.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => match max_lateness {
                None => slots.clone().acquire_owned().await.ok(),
                Some(lateness) => {
                    let deadline = tokio::time::Instant::from_std(started + due + lateness);
                    tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await.ok().and_then(Result::ok)
                }
            },
        };
        let Some(slot) = slot else {
            let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
            r.unsent += 1;
            r.second(due).unsent += 1;
            continue;
        };
        if started.elapsed() > due + LATE {
            recorded.lock().unwrap_or_else(|p| p.into_inner()).late += 1;
        }
        let url = urls[k % urls.len()].clone();
        let client = client.clone();
        let recorded = recorded.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            let mut slot = Some(slot);
            let mut stay = Stay::default();
            let mut follow_up = false;
            loop {
                let sent_at = started.elapsed();
                let answer = send(&client, &url, &shot.authorization, body).await;
                let answered_at = started.elapsed();
                // In line, the member holds no connection while it waits.
                drop(slot.take());
                let next = {
                    let mut r = recorded.lock().unwrap_or_else(|p| p.into_inner());
                    record(&mut r, &shot, &answer, sent_at, answered_at, follow_up);
                    let in_line = stay.answered(&mut r.line, answered_at, answer.in_line.as_ref());
                    match answer.in_line {
                        Some(place) if in_line => {
                            let retry_at = answered_at + place.retry_after;
                            if retry_at >= line_deadline {
                                stay.stopped(&mut r.line);
                                Next::Done
                            } else {
                                Next::RetryAt(retry_at)
                            }
                        }
                        _ => Next::Done,
                    }
                };
                let Next::RetryAt(retry_at) = next else { break };
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + retry_at)).await;
                let deadline = tokio::time::Instant::from_std(started + line_deadline);
                match tokio::time::timeout_at(deadline, slots.clone().acquire_owned()).await {
                    Ok(Ok(free)) => slot = Some(free),
                    _ => {
                        stay.stopped(&mut recorded.lock().unwrap_or_else(|p| p.into_inner()).line);
                        break;
                    }
                }
                follow_up = true;
            }
        });
    }
    progress.set_position(schedule.requests as u64);
    progress.set_message("waiting for the last answers");
    while tasks.join_next().await.is_some() {}
    match Arc::try_unwrap(recorded) {
        Ok(mutex) => mutex.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(_) => unreachable!("every task has finished"),
    }
}

/// Counts one answer: a new arrival's (`follow_up` false) or a follow-up of a member in line.
fn record(r: &mut Recorded, shot: &Shot, answer: &Answer, sent_at: Duration, answered_at: Duration, follow_up: bool) {
    let micros = (answered_at.saturating_sub(sent_at).as_micros() as u64).clamp(1, 120_000_000);
    if follow_up {
        r.line.retries += 1;
    } else {
        r.sent += 1;
        r.second(sent_at).sent += 1;
    }
    r.last_sent = r.last_sent.max(sent_at);
    r.last_answer = r.last_answer.max(answered_at);
    let second = r.second(answered_at);
    *second.by_status.entry(answer.status).or_default() += 1;
    let _ = second.latency.record(micros);
    let _ = r.latency.record(micros);
    *r.by_status.entry(answer.status).or_default() += 1;
    if let Some(error) = &answer.error {
        *r.by_error.entry(error.clone()).or_default() += 1;
    }
    if answer.status == 202 {
        if let Some(entry_id) = &answer.entry_id {
            r.accepted.push(Accepted { member: shot.member.to_string(), entry_id: entry_id.clone() });
        }
    }
}

async fn send(client: &reqwest::Client, url: &str, authorization: &str, body: &'static str) -> Answer {
    let response = client
        .post(url)
        .header(reqwest::header::AUTHORIZATION, authorization)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after =
                response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let json = response.json::<serde_json::Value>().await.unwrap_or_default();
            Answer {
                status,
                error: json.get("error").and_then(|e| e.as_str()).map(str::to_owned),
                entry_id: json.get("entry_id").and_then(|e| e.as_str()).map(str::to_owned),
                in_line: line::parse(status, retry_after.as_deref(), &json),
            }
        }
        Err(error) => Answer { status: 0, error: Some(transport_error(&error)), entry_id: None, in_line: None },
    }
}

/// A short, bounded label for a transport failure.
fn transport_error(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "transport: timeout".into()
    } else if error.is_connect() {
        "transport: connect".into()
    } else {
        "transport: other".into()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;
    use crate::rush::Shape;

    /// A stand-in for ingest's HTTP answers (the client's loop is under test,
    /// not ingest): member `a` waits twice then is accepted, `b` is in line
    /// for ever, `c` is accepted at once. One request per connection.
    async fn waiting_room_server() -> (String, Arc<Mutex<HashMap<String, u32>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/api/events/ev/entries", listener.local_addr().expect("addr"));
        let asked: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let counts = asked.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let (mut member, mut length) = (String::new(), 0usize);
                    loop {
                        let mut header = String::new();
                        if read.read_line(&mut header).await.unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                        let lower = header.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("authorization: bearer ") {
                            member = v.trim().to_string();
                        } else if let Some(v) = lower.strip_prefix("content-length: ") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    let _ = read.read_exact(&mut body).await;
                    let n = {
                        let mut c = counts.lock().unwrap();
                        let n = c.entry(member.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let (status, json) = match (member.as_str(), n) {
                        ("a", 1..=2) | ("b", _) => (
                            "429 Too Many Requests",
                            format!(
                                r#"{{"error":"waiting","line":{{"position":{n},"waiting":{}}},"retry_after_ms":100}}"#,
                                10 - n
                            ),
                        ),
                        _ => ("202 Accepted", format!(r#"{{"entry_id":"e-{member}"}}"#)),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                        json.len()
                    );
                    let _ = write.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, asked)
    }

    fn shot(member: &str) -> Shot {
        Shot { member: Arc::from(member), authorization: Arc::from(format!("Bearer {member}")) }
    }

    #[tokio::test]
    async fn a_member_in_line_asks_again_until_answered_or_the_deadline() {
        let (url, asked) = waiting_room_server().await;
        let schedule = Schedule::fit(Shape { peak_rate: 100.0, ramp: Duration::ZERO, decline: Duration::ZERO }, 3);
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        let started = Instant::now();
        let recorded = fire(
            &client,
            &[url],
            "{}",
            vec![shot("a"), shot("b"), shot("c")],
            &schedule,
            4,
            None,
            Duration::from_millis(900),
            started,
            &indicatif::ProgressBar::hidden(),
        )
        .await;
        // Three arrivals; the follow-ups are not arrivals.
        assert_eq!(recorded.sent, 3);
        let asked = asked.lock().unwrap().clone();
        assert_eq!(asked["a"], 3, "a asked again twice, then was accepted");
        assert_eq!(asked["c"], 1);
        assert!(asked["b"] >= 3, "b kept asking until the deadline: {asked:?}");
        assert_eq!(recorded.line.retries, u64::from(asked["a"] + asked["b"] - 2));
        let mut accepted: Vec<&str> = recorded.accepted.iter().map(|a| a.member.as_str()).collect();
        accepted.sort_unstable();
        assert_eq!(accepted, ["a", "c"]);
        let line = recorded.line.report();
        assert_eq!((line.waited, line.served, line.still_waiting), (2, 1, 1), "{line:?}");
        assert_eq!(line.max_waiting, 9);
        // a waited two Retry-Afters of 100 ms (the body's, not the header's 1 s).
        assert!(line.wait_max_ms >= 200.0 && line.wait_max_ms < 800.0, "{line:?}");
        assert_eq!(recorded.by_status[&202], 2);
        assert_eq!(recorded.by_status[&429], u64::from(asked["a"] + asked["b"] - 1));
        assert!(started.elapsed() < Duration::from_secs(3), "the deadline stopped b");
    }
}
