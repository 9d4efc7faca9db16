//! Every metric ingest exposes, described when it is built
//! (`platform::metrics`): help text, unit, and the series known before the
//! first request at zero (the entries route's outcomes, the accept path's
//! stages, the waiting room's turns, the event states).

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
