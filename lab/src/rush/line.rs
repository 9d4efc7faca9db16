//! The waiting room as the drill sees it (the line's length and
//! wait times the drill reports).
//!
//! With ingest's waiting room on, past the admission rate a member is
//! answered 429 `waiting` and, before the opening, 425 with a place in the
//! pre-queue; both carry `{"line": {"position", "waiting", …},
//! "retry_after_ms"}` and a `Retry-After` header (ingest/src/error.rs). Such
//! a member is in line, not refused: the drill asks again when told, as the
//! page does, until a final answer or the run's deadline. Here are the pure
//! parts: reading such an answer ([`parse`]), one arrival's stay in line
//! ([`Stay`]) and what the whole line did ([`LineRecorder`] → [`LineReport`]).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use super::client::new_histogram;

/// The shortest wait before asking again, whatever the answer said: a
/// `retry_after_ms` of 0 must not turn the drill into a hot loop.
pub const MIN_RETRY: Duration = Duration::from_millis(50);

/// An answer that puts the member in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InLine {
    /// 425 in the pre-queue (before the opening), else 429 in the line.
    pub prequeue: bool,
    /// 1 = next through the gate.
    pub position: i64,
    /// Members in the line (pre-queue) not yet let through: the line's length.
    pub waiting: i64,
    /// When to ask again.
    pub retry_after: Duration,
}

/// Reads an answer: `Some` for a 429 `waiting` or a 425 carrying a place in
/// line; `None` for every other answer (final, or a plain 425 / 429
/// `rate_limited` without a line, which the drill does not retry). The wait
/// is `retry_after_ms` of the body (finer), else the `Retry-After` header
/// (whole seconds), else 1 s; at least [`MIN_RETRY`].
pub fn parse(status: u16, retry_after_header: Option<&str>, body: &Value) -> Option<InLine> {
    let prequeue = match (status, body.get("error").and_then(Value::as_str)) {
        (429, Some("waiting")) => false,
        (425, _) => true,
        _ => return None,
    };
    let line = body.get("line")?;
    let position = line.get("position")?.as_i64()?;
    let waiting = line.get("waiting").and_then(Value::as_i64).unwrap_or(0).max(0);
    let retry_after = body
        .get("retry_after_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .or_else(|| retry_after_header.and_then(|h| h.trim().parse::<u64>().ok()).map(Duration::from_secs))
        .unwrap_or(Duration::from_secs(1))
        .max(MIN_RETRY);
    Some(InLine { prequeue, position, waiting, retry_after })
}

/// What the whole line did during a rush (times from the start of the rush).
#[derive(Debug)]
pub struct LineRecorder {
    /// Per second (by the second the answer came back): the longest line
    /// (`waiting`) an answer of that second reported; `None`: no answer in line.
    pub seconds: Vec<Option<i64>>,
    pub max_waiting: i64,
    /// Answers 429 `waiting` / 425 with a place in the pre-queue.
    pub waiting_answers: u64,
    pub prequeue_answers: u64,
    /// Follow-up requests of members in line (not new arrivals).
    pub retries: u64,
    /// Arrivals that were in line at least once.
    pub waited: u64,
    /// Of them, those who got a final answer.
    pub served: u64,
    /// Of them, those still in line when the run stopped.
    pub still_waiting: u64,
    /// From the first in-line answer to the final answer, µs.
    pub wait: Histogram<u64>,
}

impl Default for LineRecorder {
    fn default() -> Self {
        Self {
            seconds: Vec::new(),
            max_waiting: 0,
            waiting_answers: 0,
            prequeue_answers: 0,
            retries: 0,
            waited: 0,
            served: 0,
            still_waiting: 0,
            wait: new_histogram(),
        }
    }
}

impl LineRecorder {
    /// An in-line answer that came back at `at`: the line's length sample.
    fn saw(&mut self, at: Duration, answer: &InLine) {
        if answer.prequeue {
            self.prequeue_answers += 1;
        } else {
            self.waiting_answers += 1;
        }
        self.max_waiting = self.max_waiting.max(answer.waiting);
        let index = at.as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, None);
        }
        let sample = &mut self.seconds[index];
        *sample = Some(sample.unwrap_or(0).max(answer.waiting));
    }

    /// The line's length seen in second `index`, if any answer said.
    pub fn at_second(&self, index: usize) -> Option<i64> {
        self.seconds.get(index).copied().flatten()
    }

    pub fn report(&self) -> LineReport {
        let h = &self.wait;
        let ms = |micros: u64| micros as f64 / 1_000.0;
        let q = |quantile: f64| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(quantile)) };
        LineReport {
            waited: self.waited,
            served: self.served,
            still_waiting: self.still_waiting,
            waiting_answers: self.waiting_answers,
            prequeue_answers: self.prequeue_answers,
            retries: self.retries,
            max_waiting: self.max_waiting,
            wait_p50_ms: q(0.5),
            wait_p99_ms: q(0.99),
            wait_max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
        }
    }
}

/// One arrival's stay in line: the follow-ups of one arrival share it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stay {
    /// When the first in-line answer came back.
    first: Option<Duration>,
}

impl Stay {
    /// Records the answer that came back at `at` (`in_line`: what [`parse`]
    /// read); returns whether the member is (still) in line and should ask
    /// again. A final answer after a stay records the wait.
    pub fn answered(&mut self, line: &mut LineRecorder, at: Duration, in_line: Option<&InLine>) -> bool {
        match in_line {
            Some(answer) => {
                if self.first.is_none() {
                    self.first = Some(at);
                    line.waited += 1;
                }
                line.saw(at, answer);
                true
            }
            None => {
                if let Some(first) = self.first.take() {
                    let micros = (at.saturating_sub(first).as_micros() as u64).clamp(1, 120_000_000);
                    let _ = line.wait.record(micros);
                    line.served += 1;
                }
                false
            }
        }
    }

    /// The run stopped (deadline) while the member was in line.
    pub fn stopped(&mut self, line: &mut LineRecorder) {
        if self.first.take().is_some() {
            line.still_waiting += 1;
        }
    }
}

/// The line in the rush's report.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct LineReport {
    /// Arrivals answered 429 `waiting` or 425 in the pre-queue at least once.
    pub waited: u64,
    /// Of them: a final answer came (202, 409, 403, 410, …).
    pub served: u64,
    /// Of them: still in line when the run stopped (`--max-wait-secs`).
    pub still_waiting: u64,
    pub waiting_answers: u64,
    pub prequeue_answers: u64,
    /// Follow-up requests of members in line (not counted as arrivals).
    pub retries: u64,
    /// The longest line an answer reported (per second: the timeline's `line_waiting`).
    pub max_waiting: i64,
    /// Wait per member, first in-line answer to final answer (HdrHistogram).
    pub wait_p50_ms: f64,
    pub wait_p99_ms: f64,
    pub wait_max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_waiting_answer_is_read_with_its_place_and_retry() {
        let body = json!({
            "error": "waiting", "message": "waiting in line at position 7",
            "line": {"position": 7, "waiting": 1200, "order": "shuffle"}, "retry_after_ms": 350
        });
        let answer = parse(429, Some("1"), &body).expect("in line");
        assert_eq!(
            answer,
            InLine { prequeue: false, position: 7, waiting: 1200, retry_after: Duration::from_millis(350) }
        );
        // Without retry_after_ms: the header's seconds.
        let body = json!({"error": "waiting", "line": {"position": 2, "waiting": 3}});
        assert_eq!(parse(429, Some("2"), &body).map(|a| a.retry_after), Some(Duration::from_secs(2)));
        // Neither: 1 s; a 0 never makes a hot loop.
        assert_eq!(parse(429, None, &body).map(|a| a.retry_after), Some(Duration::from_secs(1)));
        let zero = json!({"error": "waiting", "line": {"position": 1, "waiting": 1}, "retry_after_ms": 0});
        assert_eq!(parse(429, Some("1"), &zero).map(|a| a.retry_after), Some(MIN_RETRY));
    }

    #[test]
    fn a_pre_queue_answer_is_in_line_and_other_refusals_are_final() {
        let body = json!({"error": "too_early", "line": {"position": 40, "waiting": 90, "order": "fifo"}, "retry_after_ms": 4000});
        let answer = parse(425, Some("4"), &body).expect("pre-queued");
        assert!(answer.prequeue);
        assert_eq!((answer.position, answer.waiting), (40, 90));
        // The waiting room off: a plain 425 has no place and is final.
        assert_eq!(parse(425, Some("4"), &json!({"error": "too_early", "message": "…"})), None);
        // The member's own rate limit, overload, and the final answers are not a line.
        assert_eq!(parse(429, Some("1"), &json!({"error": "rate_limited"})), None);
        assert_eq!(parse(503, Some("1"), &json!({"error": "overloaded"})), None);
        for status in [202, 409, 403, 410] {
            assert_eq!(parse(status, None, &json!({"line": {"position": 1, "waiting": 1}})), None);
        }
    }

    fn place(waiting: i64) -> InLine {
        InLine { prequeue: false, position: 1, waiting, retry_after: Duration::from_secs(1) }
    }

    #[test]
    fn a_wait_runs_from_the_first_in_line_answer_to_the_final_one() {
        let mut line = LineRecorder::default();
        // A member waits 3 answers (0.5 s, 1.5 s, 2.5 s) then is admitted at 3.5 s.
        let mut waiter = Stay::default();
        assert!(waiter.answered(&mut line, Duration::from_millis(500), Some(&place(10))));
        assert!(waiter.answered(&mut line, Duration::from_millis(1_500), Some(&place(40))));
        assert!(waiter.answered(&mut line, Duration::from_millis(2_500), Some(&place(5))));
        assert!(!waiter.answered(&mut line, Duration::from_millis(3_500), None));
        // A member admitted at once never counts as waiting.
        let mut direct = Stay::default();
        assert!(!direct.answered(&mut line, Duration::from_millis(700), None));
        // A member still in line when the run stops.
        let mut left = Stay::default();
        assert!(left.answered(&mut line, Duration::from_millis(1_200), Some(&InLine { prequeue: true, ..place(30) })));
        left.stopped(&mut line);
        // Stopping a member who is not in line changes nothing.
        direct.stopped(&mut line);

        let report = line.report();
        assert_eq!(report.waited, 2);
        assert_eq!(report.served, 1);
        assert_eq!(report.still_waiting, 1);
        assert_eq!(report.waiting_answers, 3);
        assert_eq!(report.prequeue_answers, 1);
        assert_eq!(report.max_waiting, 40);
        assert!((report.wait_max_ms - 3_000.0).abs() < 3.0, "{}", report.wait_max_ms);
        assert!((report.wait_p50_ms - 3_000.0).abs() < 3.0, "{}", report.wait_p50_ms);
        // Per second: the longest line reported in that second.
        assert_eq!(line.at_second(0), Some(10));
        assert_eq!(line.at_second(1), Some(40));
        assert_eq!(line.at_second(2), Some(5));
        assert_eq!(line.at_second(3), None);
    }

    #[test]
    fn wait_percentiles_rank_the_members_waits() {
        let mut line = LineRecorder::default();
        for ms in 1..=100u64 {
            let mut stay = Stay::default();
            stay.answered(&mut line, Duration::ZERO, Some(&place(1)));
            stay.answered(&mut line, Duration::from_millis(ms * 10), None);
        }
        let report = line.report();
        assert_eq!(report.waited, 100);
        assert!((report.wait_p50_ms - 500.0).abs() < 1.0, "{}", report.wait_p50_ms);
        assert!((report.wait_p99_ms - 990.0).abs() < 1.0, "{}", report.wait_p99_ms);
        assert!((report.wait_max_ms - 1_000.0).abs() < 1.0, "{}", report.wait_max_ms);
    }
}
