//! ingest's hot path, piece by piece: token verify, body parse + validation,
//! the request span under the JSON log layer, and the admit script against
//! the stack's Redis (`eval "$(stack/bin/stack env)"`).
//!
//! `cargo bench -p ingest --bench hot_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ingest::admission::{Admission, Admitter};
use ingest::submission::EntryBody;
use ingest::{AuthSettings, Limits, MemberId};
use platform::event_keys::{write_event, EventKeys};

const BODY: &[u8] =
    br#"{"answers":{"satisfaction":"5","recommend":"yes"},"client":{"channel":"web","user_agent":"Mozilla/5.0"}}"#;

fn token_verify(c: &mut Criterion) {
    let auth = AuthSettings::default();
    let token = ingest::mint(&auth.token_secret, "m0000001", Duration::from_secs(3600)).expect("mint");
    let verifier = auth.verifier();
    c.bench_function("ingest/token_verify", |b| b.iter(|| verifier.verify(black_box(&token)).expect("valid")));
    // Wave 1: the key and the validation rules built for every request.
    c.bench_function("ingest/token_verify_rules_per_request", |b| {
        b.iter(|| auth.verifier().verify(black_box(&token)).expect("valid"))
    });
}

fn body_parse_and_validate(c: &mut Criterion) {
    let limits = Limits::default();
    let questions = vec!["satisfaction".to_string(), "recommend".to_string()];
    c.bench_function("ingest/body_parse_validate", |b| {
        b.iter(|| {
            let body: EntryBody = serde_json::from_slice(black_box(BODY)).expect("parses");
            body.validate(&questions, &limits, Some("curl/8")).expect("valid")
        })
    });
}

/// One request's span as the accept path makes it (created with its fields,
/// five recorded later, entered for the handler, closed), under the JSON log
/// layer at INFO, no line written: with `tracing-subscriber`'s JSON fields
/// (each `record` re-parses and re-serialises the span's object, the layer
/// before) and with `platform::telemetry::SpanFields` (kept as given).
fn request_span(c: &mut Criterion) {
    use tracing::field::Empty;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::Layer as _;

    fn one_request() {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!(
            "request",
            method = "POST",
            path = "/api/events/bench-event/entries",
            otel.name = Empty,
            otel.kind = "server",
            correlation_id = correlation_id.as_str(),
            trace_id = Empty,
            event_id = Empty,
            user_id = Empty,
            entry_id = Empty,
            status = Empty,
        );
        span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
        span.in_scope(|| {
            let current = tracing::Span::current();
            current.record("event_id", "bench-event");
            current.record("user_id", "m0000001");
            current.record("entry_id", "0193a6f4-7b1c-7d2e-9f00-1234567890ab");
            tracing::debug!(outcome = "accepted", "entry accepted");
        });
        span.record("status", 202_u16);
        black_box(span);
    }

    let before = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new("info")),
    );
    tracing::subscriber::with_default(before, || {
        c.bench_function("ingest/request_span_json_fields", |b| b.iter(one_request));
    });
    let after = tracing_subscriber::registry()
        .with(platform::telemetry::json_logs(std::io::sink).with_filter(tracing_subscriber::EnvFilter::new("info")));
    tracing::subscriber::with_default(after, || {
        c.bench_function("ingest/request_span_kept_fields", |b| b.iter(one_request));
    });
}

/// One request's metrics (its counter and its histogram) as the
/// middleware recorded them before (a key built, label strings allocated
/// and looked up in the recorder per call) and now (handles taken once per
/// thread, `ingest::metrics::request_answered`).
fn request_metrics(c: &mut Criterion) {
    let _ = platform::metrics::handle();
    let route = ingest::metrics::ENTRIES_ROUTE;
    let took = Duration::from_millis(3);
    c.bench_function("ingest/request_metrics_by_key", |b| {
        b.iter(|| {
            let (route, status) = (black_box(route).to_string(), 202_u16.to_string());
            metrics::counter!("firstcome_ingest_requests_total", "outcome" => "accepted", "route" => route.clone(), "status" => status.clone())
                .increment(1);
            metrics::histogram!("firstcome_ingest_request_seconds", "route" => route, "status" => status)
                .record(took.as_secs_f64());
        })
    });
    c.bench_function("ingest/request_metrics_cached", |b| {
        b.iter(|| ingest::metrics::request_answered(black_box(route), 202, "accepted", took))
    });
}

/// A correlation id made up for a request that came without one: uuid's
/// `new_v4` (a `getrandom` syscall each) and the thread's generator (now).
fn correlation_id(c: &mut Criterion) {
    c.bench_function("ingest/correlation_id_getrandom", |b| b.iter(|| uuid::Uuid::new_v4().to_string()));
    c.bench_function("ingest/correlation_id_thread_rng", |b| {
        b.iter(|| ingest::request_context::CorrelationId::from_header(None))
    });
}

/// One admit script call per iteration, each for a new eligible member of an
/// event whose stock never runs out (the accept path: the pending mark and
/// the entry are written). Past the eligible members it cycles back, and
/// the calls become `in_progress` answers (a read-only path).
fn admit_script(c: &mut Criterion) {
    const MEMBERS: usize = 200_000;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The stack's Redis as its administrator (the default user cannot log in).
    let settings = testkit::redis_admin();
    let event_id = format!("t-bench-{}", uuid::Uuid::new_v4().simple());
    let members: Vec<MemberId> =
        (0..MEMBERS).map(|n| MemberId::parse(&format!("b{n:07}")).expect("member id")).collect();
    let conn = runtime.block_on(async {
        let mut conn = platform::redis::connect(&settings).await.expect("the stack's Redis");
        let meta = testkit::open_event(&event_id, 1_000_000_000);
        let eligible: Vec<String> = members.iter().map(|m| m.as_str().to_string()).collect();
        write_event(&mut conn, &meta, &eligible).await.expect("event keys");
        conn
    });
    let admitter = Admitter::new(Duration::from_secs(60));
    let next = AtomicUsize::new(0);
    c.bench_function("ingest/admit_script", |b| {
        b.to_async(&runtime).iter(|| {
            let mut conn = conn.clone();
            let member = &members[next.fetch_add(1, Ordering::Relaxed) % MEMBERS];
            let entry_id = uuid::Uuid::now_v7().to_string();
            let admitter = &admitter;
            let event_id = &event_id;
            async move {
                let admission = admitter.admit(&mut conn, event_id, member, &entry_id, true).await.expect("admit");
                black_box(matches!(admission, Admission::Accept { .. }))
            }
        })
    });
    // 64 requests at once through the grouped path (what ingest does under
    // load): a few script calls for all of them. Throughput in admissions/s.
    let mut group = c.benchmark_group("ingest/admit_grouped");
    group.throughput(criterion::Throughput::Elements(64));
    group.bench_function("64_requests", |b| {
        b.to_async(&runtime).iter(|| {
            let asks: Vec<_> = (0..64)
                .map(|_| {
                    let member = members[next.fetch_add(1, Ordering::Relaxed) % MEMBERS].clone();
                    let (admitter, conn, event_id) = (admitter.clone(), conn.clone(), event_id.clone());
                    async move {
                        let entry_id = uuid::Uuid::now_v7().to_string();
                        admitter.admit_grouped(&conn, &event_id, &member, &entry_id, true).await.expect("admit")
                    }
                })
                .collect();
            async move { black_box(futures::future::join_all(asks).await.len()) }
        })
    });
    group.finish();
    runtime.block_on(async {
        let mut conn = conn.clone();
        let keys = EventKeys::new(&event_id);
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut conn).await;
    });
}

criterion_group!(
    benches,
    token_verify,
    body_parse_and_validate,
    request_span,
    request_metrics,
    correlation_id,
    admit_script
);
criterion_main!(benches);
