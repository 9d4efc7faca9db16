//! The sender's payout claim (PostgreSQL, one transaction per batch) by
//! batch size, on a fresh migrated database of the stack's PostgreSQL
//! (testkit's `TestEnv`): each iteration claims a batch of new WONs of new
//! members of an event whose stock does not run out within the run.
//!
//! `cargo bench -p sender --bench claim -- --warm-up-time 1 --measurement-time 3`

use std::sync::atomic::{AtomicI32, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sender::payout_guard::PayoutGuard;
use sender::store::WonEntry;

fn claim(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let env = runtime.block_on(testkit::TestEnv::new());
    let event_id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    runtime.block_on(async {
        env.pool()
            .get()
            .await
            .expect("connection")
            .execute(
                "INSERT INTO events (event_id, name, product_id, total_stock, safety_stock, open_at, close_at, gift_product, gift_amount)
                 VALUES ($1, 'bench', 'survey-product', 100000000, 0, now(), now() + interval '1 hour', 'coffee', 10000)",
                &[&event_id],
            )
            .await
            .expect("event row");
    });
    let guard = PayoutGuard::new(env.pool().clone());
    let next = AtomicI32::new(0);
    let mut group = c.benchmark_group("sender/claim");
    for size in [1usize, 10, 100] {
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.to_async(&runtime).iter_batched(
                || {
                    (0..size)
                        .map(|_| {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            WonEntry {
                                event_id: event_id.clone(),
                                entry_id: uuid::Uuid::now_v7(),
                                user_id: format!("b{n:07}"),
                                unit_no: n + 1,
                            }
                        })
                        .collect::<Vec<_>>()
                },
                |entries| {
                    let guard = &guard;
                    async move {
                        let refs: Vec<&WonEntry> = entries.iter().collect();
                        guard.claim_all(&refs).await.expect("claimed")
                    }
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, claim);
criterion_main!(benches);
