//! Every metric ingest exposes, described when it is built
//! (`platform::metrics`): help text, unit, and the series known before the
//! first request at zero (the entries route's outcomes, the accept path's
//! stages, the waiting room's turns, the event states); and the handles of
//! the per-request series, taken once per thread ([`request_answered`],
//! [`stage_done`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use platform::metrics::{Metric, Unit};

/// The entries route as it is labelled (`route`: the matched path).
pub const ENTRIES_ROUTE: &str = "/api/events/{event_id}/entries";

/// Ingest's own metrics (beside platform's producer and Redis ones).
pub const METRICS: &[Metric] = &[
    Metric::counter(
        "firstcome_ingest_requests_total",
        "API requests answered, by outcome (accepted, or the refusal's code), route and status",
    )
    .labels(&["outcome", "route", "status"])
    .known(&[&["accepted", ENTRIES_ROUTE, "202"], &["resumed", ENTRIES_ROUTE, "202"]]),
    Metric::seconds("firstcome_ingest_request_seconds", "Time to answer an API request, by route and status")
        .labels(&["route", "status"])
        .known(&[&[ENTRIES_ROUTE, "202"]]),
    Metric::seconds(
        "firstcome_ingest_stage_seconds",
        "Time of one step of the accept path: the admit script, the produce to the broker's ack, the accept mark",
    )
    .labels(&["stage"])
    .known(&[&["admit"], &["produce"], &["mark_accepted"]]),
    Metric::counter("firstcome_ingest_produce_failures_total", "Entries whose produce failed (answered 503)"),
    Metric::counter(
        "firstcome_ingest_holes_announced_total",
        "Admitted entries never acknowledged by their deadline, announced as holes so their places pass on",
    ),
    Metric::counter(
        "firstcome_ingest_fence_refusals_total",
        "Admit calls whose writes did not reach the replicas in time (their members answered 503; replica_acks)",
    ),
    Metric::counter(
        "firstcome_ingest_settle_waits_total",
        "Requests told to wait while a ticket counter Redis set back is raised to every instance's floor",
    ),
    Metric::counter(
        "firstcome_ingest_settle_holds_total",
        "Times new admissions were held because Redis forgot tickets of an admit call still in flight here",
    ),
    Metric::counter("firstcome_ingest_rate_limited_total", "Requests refused by a member's rate limit (429)"),
    Metric::counter(
        "firstcome_ingest_address_refused_total",
        "Requests refused because their address spent its budget of costly refusals",
    ),
    Metric::counter(
        "firstcome_ingest_connections_saturated_total",
        "Times the API listener was at its most connections and left new ones in the backlog",
    ),
    Metric::counter(
        "firstcome_ingest_rate_limit_evictions_total",
        "Members forgotten by the rate limiter to keep its memory bounded",
    ),
    Metric::counter(
        "firstcome_ingest_dashboard_refused_total",
        "Operations dashboard calls refused (no or a wrong operator token)",
    ),
    Metric::counter("firstcome_ingest_state_resubscribes_total", "Subscriptions to the event-state channel made again"),
    Metric::counter(
        "firstcome_ingest_state_changes_total",
        "Event-state messages received, by status (open, sold_out, closed, malformed)",
    )
    .labels(&["status"])
    .known(&[&["open"], &["sold_out"], &["closed"], &["malformed"]]),
    Metric::counter(
        "firstcome_ingest_waiting_room_total",
        "Members held by the waiting room, by turn (pre_queue, wait)",
    )
    .labels(&["turn"])
    .known(&[&["pre_queue"], &["wait"]]),
    Metric::gauge("firstcome_ingest_waiting_line", Unit::Count, "Members waiting in an event's line")
        .labels(&["event_id"]),
];

/// Describes ingest's metrics, platform's producer and Redis ones with them.
pub fn describe() {
    platform::metrics::describe(platform::metrics::PRODUCER);
    platform::metrics::describe(platform::metrics::REDIS);
    platform::metrics::describe(METRICS);
}

/// A step of the accept path, `firstcome_ingest_stage_seconds{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The admit script.
    Admit,
    /// The produce, to the broker's acknowledgement.
    Produce,
    /// The accept mark.
    MarkAccepted,
}

impl Stage {
    const ALL: [Stage; 3] = [Stage::Admit, Stage::Produce, Stage::MarkAccepted];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Admit => "admit",
            Stage::Produce => "produce",
            Stage::MarkAccepted => "mark_accepted",
        }
    }
}

/// The request metrics of one answer kind: its counter and its histogram.
struct RequestSeries {
    requests: metrics::Counter,
    seconds: metrics::Histogram,
}

/// The request series by route, then by (status, outcome).
type RequestHandles = HashMap<String, HashMap<(u16, &'static str), RequestSeries>>;

// Handles registered once per worker thread: `counter!` with labels builds
// its key (the label strings allocated) and looks it up in the recorder's
// registry on every call, three times per accepted entry. A handle is the
// series itself; the sets are bounded (routes are the router's, statuses
// HTTP's, outcomes static).
thread_local! {
    static STAGES: [metrics::Histogram; 3] = {
        // The recorder must be global before a handle is taken, or the
        // handle records nowhere.
        let _ = platform::metrics::handle();
        Stage::ALL.map(|stage| metrics::histogram!("firstcome_ingest_stage_seconds", "stage" => stage.label()))
    };
    static REQUESTS: RefCell<RequestHandles> = {
        let _ = platform::metrics::handle();
        RefCell::new(HashMap::new())
    };
}

/// Records the time one step of the accept path took.
pub fn stage_done(stage: Stage, took: Duration) {
    STAGES.with(|stages| stages[stage as usize].record(took.as_secs_f64()));
}

/// Counts one answered API request and records its time
/// (`firstcome_ingest_requests_total`, `firstcome_ingest_request_seconds`).
pub fn request_answered(route: &str, status: u16, outcome: &'static str, took: Duration) {
    REQUESTS.with(|requests| {
        let mut requests = requests.borrow_mut();
        let by_answer = match requests.get_mut(route) {
            Some(by_answer) => by_answer,
            None => requests.entry(route.to_string()).or_default(),
        };
        let series = by_answer.entry((status, outcome)).or_insert_with(|| {
            let (route, status) = (route.to_string(), status.to_string());
            RequestSeries {
                requests: metrics::counter!(
                    "firstcome_ingest_requests_total",
                    "outcome" => outcome, "route" => route.clone(), "status" => status.clone()
                ),
                seconds: metrics::histogram!("firstcome_ingest_request_seconds", "route" => route, "status" => status),
            }
        });
        series.requests.increment(1);
        series.seconds.record(took.as_secs_f64());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(page: &'a str, start: &str, has: &[&str]) -> Option<&'a str> {
        page.lines().find(|l| l.starts_with(start) && has.iter().all(|h| l.contains(h)))
    }

    #[test]
    fn cached_handles_count_each_answer_in_its_own_series() {
        let route = "/test/cached-handles";
        for _ in 0..3 {
            request_answered(route, 202, "accepted", Duration::from_millis(2));
        }
        request_answered(route, 410, "sold_out", Duration::from_millis(1));
        // Another thread has its own handles on the same series.
        std::thread::spawn(move || request_answered(route, 202, "accepted", Duration::from_millis(2))).join().unwrap();
        stage_done(Stage::MarkAccepted, Duration::from_millis(1));
        let page = platform::metrics::render();
        let accepted = line(&page, "firstcome_ingest_requests_total{", &[route, r#"outcome="accepted""#]);
        assert!(accepted.is_some_and(|l| l.ends_with(" 4")), "{accepted:?}");
        let sold_out = line(&page, "firstcome_ingest_requests_total{", &[route, r#"status="410""#]);
        assert!(sold_out.is_some_and(|l| l.ends_with(" 1")), "{sold_out:?}");
        let seconds = line(&page, "firstcome_ingest_request_seconds_count{", &[route, r#"status="202""#]);
        assert!(seconds.is_some_and(|l| l.ends_with(" 4")), "{seconds:?}");
        let stage = line(&page, "firstcome_ingest_stage_seconds_count{", &[r#"stage="mark_accepted""#]);
        assert!(stage.is_some(), "{page}");
    }
}
