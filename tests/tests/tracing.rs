//! One entry is one trace: a member's request that carries its
//! own `traceparent` is followed through ingest, the stock decision, the
//! recorder, the dispatch and the provider call into the provider
//! simulator, and every span of it reaches a real OTLP receiver — Jaeger,
//! built from its Go module by `stack/otel/jaeger.sh` — under the request's
//! trace id, as one tree.
//!
//! A test binary of its own: the OpenTelemetry exporter hangs off the
//! process' global subscriber (`platform::telemetry::init`), installed once.

#[allow(dead_code)]
#[path = "e2e/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "e2e/pipeline_harness.rs"]
mod pipeline_harness;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use platform::settings::TelemetrySettings;
use platform::trace_context::TraceParent;
use serde_json::Value;

use crate::helpers::{wait_until, TestEnv};
use crate::pipeline_harness::{open_event, seed_crowd, Pipeline, Topology};

/// The Jaeger of `stack/otel/jaeger.sh`: started if it is not running.
struct Jaeger {
    otlp_endpoint: String,
    query_url: String,
}

impl Jaeger {
    fn up() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stack/otel/jaeger.sh");
        let status = std::process::Command::new("bash").arg(&script).arg("up").status().expect("run jaeger.sh up");
        assert!(status.success(), "stack/otel/jaeger.sh up failed");
        let out = std::process::Command::new("bash").arg(&script).arg("env").output().expect("run jaeger.sh env");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} in jaeger.sh env: {text}"))
                .to_string()
        };
        Self { otlp_endpoint: value("OTEL_EXPORTER_OTLP_ENDPOINT"), query_url: value("FIRSTCOME_JAEGER_QUERY_URL") }
    }

    /// The spans Jaeger holds for `trace_id` (empty until they arrive).
    async fn spans(&self, http: &reqwest::Client, trace_id: &str) -> Vec<Value> {
        let url = format!("{}/api/traces/{trace_id}", self.query_url);
        let Ok(response) = http.get(&url).send().await else { return Vec::new() };
        let Ok(body) = response.json::<Value>().await else { return Vec::new() };
        body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|trace| trace["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn name(span: &Value) -> &str {
    span["operationName"].as_str().unwrap_or_default()
}

/// The span's parent span id (its CHILD_OF reference), if any.
fn parent(span: &Value) -> Option<&str> {
    span["references"].as_array()?.iter().find(|r| r["refType"] == "CHILD_OF").and_then(|r| r["spanID"].as_str())
}

/// What must be in the trace: a name prefix, and how many spans at least.
const STAGES: &[(&str, usize)] = &[
    ("ingest POST /api/events/{event_id}/entries", 1),
    ("produce ", 3), // survey-submitted, stock-decided, gift-dispatched
    ("stock-processor consume", 1),
    ("stock decide", 1),
    ("recorder consume", 3), // the entry, its decision, its dispatch
    ("sender consume", 1),
    ("dispatch", 1),
    ("provider call POST /v1/gifts", 1),
    ("provider-sim POST /v1/gifts", 1),
];

fn missing(spans: &[Value]) -> Vec<String> {
    STAGES
        .iter()
        .filter_map(|(prefix, at_least)| {
            let found = spans.iter().filter(|s| name(s).starts_with(prefix)).count();
            (found < *at_least).then(|| format!("{prefix}: {found} of {at_least}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entry_is_one_trace_across_ingest_stock_recording_dispatch_and_the_provider() {
    let jaeger = Jaeger::up();
    // As `OTEL_EXPORTER_OTLP_ENDPOINT` would (the environment is left alone).
    platform::telemetry::init_exporting(
        "firstcome-tracing-test",
        &TelemetrySettings { log_filter: "warn,rdkafka=off".into(), ..Default::default() },
        "firstcome-tracing-test",
        Some(&jaeger.otlp_endpoint),
    );

    let env = TestEnv::new().await;
    let crowd = seed_crowd(&env, 1, 0).await;
    let event_id = open_event(&env, &crowd, 1, 0).await;
    let pipeline = Pipeline::start(&env, Topology::default()).await.expect("pipeline started");
    let member = &crowd.eligible[0];

    // The member's client starts the trace.
    let client_trace = TraceParent::new_root();
    let trace_id = client_trace.trace_id_hex();
    let secret = ingest::Settings::default().auth.token_secret;
    let token = ingest::mint(&secret, member, Duration::from_secs(600)).expect("token");
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build().expect("http");
    let response = http
        .post(format!("{}/api/events/{event_id}/entries", pipeline.ingest_urls[0]))
        .bearer_auth(token)
        .header("traceparent", client_trace.to_string())
        .json(&serde_json::json!({ "answers": { "satisfaction": "5", "recommend": "yes" } }))
        .send()
        .await
        .expect("entry posted");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED, "{:?}", response.text().await);

    // The gift is sent and recorded (the stock of 1 is this member's).
    let pool = env.pool().clone();
    let sent = wait_until(Duration::from_secs(90), || {
        let pool = pool.clone();
        async move {
            let Ok(client) = pool.get().await else { return false };
            client
                .query_opt("SELECT 1 FROM event_entries WHERE user_id = $1 AND status = 'sent'", &[member])
                .await
                .is_ok_and(|row| row.is_some())
        }
    })
    .await;
    assert!(sent, "the entry of {member} was not recorded as sent");

    // Every stage's spans reach Jaeger under the client's trace id.
    let found = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let complete = testkit::poll_until(Duration::from_secs(60), Duration::from_millis(500), || {
        platform::telemetry::flush();
        let (jaeger, http, trace_id, found) = (&jaeger, &http, &trace_id, found.clone());
        async move {
            let spans = jaeger.spans(http, trace_id).await;
            let done = missing(&spans).is_empty();
            *found.lock().unwrap_or_else(|e| e.into_inner()) = spans;
            done
        }
    })
    .await;
    let spans = std::mem::take(&mut *found.lock().unwrap_or_else(|e| e.into_inner()));
    pipeline.stop().await;
    let names: Vec<&str> = spans.iter().map(name).collect();
    assert!(complete, "missing in trace {trace_id}: {:?}; spans: {names:?}", missing(&spans));

    // One trace: every span carries the client's trace id…
    for span in &spans {
        assert_eq!(span["traceID"].as_str(), Some(trace_id.as_str()), "{}", name(span));
    }
    // …and they form one tree: each span's parent is in the trace, but the
    // request's, whose parent is the client's span.
    let ids: HashSet<&str> = spans.iter().filter_map(|s| s["spanID"].as_str()).collect();
    let client_span = hex_of(&client_trace.span_id);
    let roots: Vec<&Value> = spans.iter().filter(|s| !parent(s).is_some_and(|p| ids.contains(p))).collect();
    assert_eq!(roots.len(), 1, "one root span, the request: {:?}", roots.iter().map(|s| name(s)).collect::<Vec<_>>());
    assert!(name(roots[0]).starts_with("ingest POST"), "the root is the ingest request: {}", name(roots[0]));
    assert_eq!(parent(roots[0]), Some(client_span.as_str()), "the request continues the client's span");

    // The hops in order: the provider simulator's span hangs under the
    // provider call, under the dispatch, under the sender's consume.
    let by_id: HashMap<&str, &Value> = spans.iter().filter_map(|s| Some((s["spanID"].as_str()?, s))).collect();
    let sim = spans.iter().find(|s| name(s).starts_with("provider-sim POST")).expect("provider-sim span");
    let mut chain = Vec::new();
    let mut at: Option<&Value> = Some(sim);
    while let Some(span) = at {
        chain.push(name(span).to_string());
        at = parent(span).and_then(|p| by_id.get(p).copied());
    }
    let expected_order = [
        "provider-sim POST",
        "provider call",
        "dispatch",
        "sender consume",
        "produce",
        "stock decide",
        "stock-processor consume",
        "produce",
        "ingest POST",
    ];
    let mut position = 0;
    for step in expected_order {
        let found = chain[position..].iter().position(|n| n.starts_with(step)).map(|i| i + position);
        assert!(found.is_some(), "{step} is not on the path from the provider back to the request: {chain:?}");
        position = found.unwrap_or(position) + 1;
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
