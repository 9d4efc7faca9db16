//! The recorder's batch upsert (one transaction per batch) by batch size, on
//! a fresh migrated database of the stack's PostgreSQL (testkit's `TestEnv`):
//! each iteration records a batch of new entries (submission and WON decision).
//!
//! `cargo bench -p recorder --bench upsert -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recorder::facts::{Decision, EntryChanges, EntryKey, Submission};
use recorder::store::Store;
use schemas::Outcome;

fn batch(event_id: &str, size: usize, unit: &mut i32) -> Vec<EntryChanges> {
    let now = chrono::Utc::now();
    (0..size)
        .map(|i| {
            *unit += 1;
            EntryChanges {
                key: EntryKey {
                    entry_id: uuid::Uuid::now_v7(),
                    event_id: event_id.to_string(),
                    user_id: format!("b{i:07}"),
                },
                submission: Some(Submission {
                    answers: serde_json::json!([{"question": "satisfaction", "answer": "5"}]),
                    client_channel: "web".into(),
                    submitted_at: now,
                    accepted_at: now,
                    ticket: None,
                }),
                decision: Some(Decision { outcome: Outcome::Won, unit_no: Some(*unit), decided_at: now, ticket: None }),
                dispatch: None,
            }
        })
        .collect()
}

fn upsert(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let env = runtime.block_on(testkit::TestEnv::new());
    let store = Store::live(env.pool().clone());
    let event_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut unit = 0;
    let mut group = c.benchmark_group("recorder/batch_upsert");
    for size in [10usize, 100, 500] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.to_async(&runtime).iter_batched(
                || batch(&event_id, size, &mut unit),
                |changes| {
                    let store = &store;
                    async move { store.record(&changes).await.expect("recorded") }
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, upsert);
criterion_main!(benches);
