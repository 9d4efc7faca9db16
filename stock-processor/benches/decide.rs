//! The stock decision script by batch size, against the stack's Redis
//! (`eval "$(stack/bin/stack env)"`): one `decide` call per iteration, a
//! batch of new entries of eligible members of an event whose stock does
//! not run out within the run (WON decisions, the expensive path). Past the
//! eligible members the entries are second entries (the first's standing).
//!
//! `cargo bench -p stock-processor --bench decide -- --warm-up-time 1 --measurement-time 3`
//!
//! `stock/fence`: the failover fence's cost, side by side in one run — a batch
//! of 100 on the Sentinel-managed primary (`stack/bin/stack up redis-sentinel`;
//! skipped when it is not up), then `WAIT 1` for its replica, as the stage does
//! with `replica_acks = 1`, against the same batch without it.

use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use platform::event_keys::{write_event, EventKeys};
use stock_processor::store::{EntryRef, StockStore};

const MEMBERS: usize = 300_000;

fn decide(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The stack's Redis as its administrator (the default user cannot log in).
    let settings = testkit::redis_admin();
    let event_id = format!("t-bench-{}", uuid::Uuid::new_v4().simple());
    let members: Vec<String> = (0..MEMBERS).map(|n| format!("b{n:07}")).collect();
    let store = runtime.block_on(async {
        let mut conn = platform::redis::connect(&settings).await.expect("the stack's Redis");
        let meta = testkit::open_event(&event_id, 100_000_000);
        write_event(&mut conn, &meta, &members).await.expect("event keys");
        let store = StockStore::new(conn);
        store.load().await.expect("scripts load");
        store
    });
    let entry_ids: Vec<String> = (0..MEMBERS).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let next = AtomicUsize::new(0);
    let mut group = c.benchmark_group("stock/decide_batch");
    for batch in [1usize, 10, 100, 500] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.to_async(&runtime).iter(|| {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                let accepted_at_ms = schemas::now_millis();
                let entries: Vec<EntryRef<'_>> = (start..start + batch)
                    .map(|i| EntryRef {
                        entry_id: &entry_ids[i % MEMBERS],
                        user_id: &members[i % MEMBERS],
                        accepted_at_ms,
                        ticket: 0,
                        hole: false,
                    })
                    .collect();
                let store = &store;
                let event_id = &event_id;
                async move { store.decide(event_id, &entries).await.expect("decide") }
            })
        });
    }
    group.finish();
    runtime.block_on(async {
        let mut conn = store.connection();
        let keys = EventKeys::new(&event_id);
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut conn).await;
    });
}

/// The Sentinel-managed Redis of the stack (`stack/redis/sentinel.sh`).
const SENTINELS: &str = "127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382";

fn fence(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let settings = platform::settings::RedisSettings {
        sentinels: SENTINELS.into(),
        master_name: "firstcome".into(),
        ..Default::default()
    }
    .for_principal(platform::settings::Environment::Local, platform::settings::Principal::ADMIN);
    let connecting =
        async { tokio::time::timeout(std::time::Duration::from_secs(5), platform::redis::connect(&settings)).await };
    let Ok(Ok(conn)) = runtime.block_on(connecting) else {
        eprintln!("stock/fence: the Sentinel-managed Redis is not up (`stack/bin/stack up redis-sentinel`): skipped");
        return;
    };
    let event_id = format!("t-bench-{}", uuid::Uuid::new_v4().simple());
    let members: Vec<String> = (0..MEMBERS).map(|n| format!("b{n:07}")).collect();
    let store = runtime.block_on(async {
        let mut conn = conn;
        write_event(&mut conn, &testkit::open_event(&event_id, 100_000_000), &members).await.expect("event keys");
        let store = StockStore::new(conn);
        store.load().await.expect("scripts load");
        store
    });
    let entry_ids: Vec<String> = (0..MEMBERS).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let next = AtomicUsize::new(0);
    let batch = 100usize;
    let mut group = c.benchmark_group("stock/fence");
    group.throughput(Throughput::Elements(batch as u64));
    for replicas in [0u32, 1] {
        let name = if replicas == 0 { "off" } else { "wait_1_replica" };
        group.bench_function(BenchmarkId::new("decide_batch_100", name), |b| {
            b.to_async(&runtime).iter(|| {
                let start = next.fetch_add(batch, Ordering::Relaxed);
                let accepted_at_ms = schemas::now_millis();
                let entries: Vec<EntryRef<'_>> = (start..start + batch)
                    .map(|i| EntryRef {
                        entry_id: &entry_ids[i % MEMBERS],
                        user_id: &members[i % MEMBERS],
                        accepted_at_ms,
                        ticket: 0,
                        hole: false,
                    })
                    .collect();
                let (store, event_id) = (&store, &event_id);
                async move {
                    store.decide(event_id, &entries).await.expect("decide");
                    if replicas > 0 {
                        let mut conn = store.connection();
                        let acked: u32 =
                            redis::cmd("WAIT").arg(replicas).arg(1_000).query_async(&mut conn).await.expect("WAIT");
                        assert_eq!(acked, replicas, "the replica did not acknowledge");
                    }
                }
            })
        });
    }
    group.finish();

    // Criterion reports means and medians; the stage's tail matters too:
    // rounds of 200 batches each way, interleaved so both see the same
    // machine, per-batch latency into one histogram per mode.
    let mut histograms = [
        hdrhistogram::Histogram::<u64>::new(3).expect("histogram"),
        hdrhistogram::Histogram::new(3).expect("histogram"),
    ];
    let mut busy = [std::time::Duration::ZERO; 2];
    runtime.block_on(async {
        for _round in 0..10 {
            for (mode, replicas) in [0u32, 1].into_iter().enumerate() {
                for _ in 0..200 {
                    let start = next.fetch_add(batch, Ordering::Relaxed);
                    let accepted_at_ms = schemas::now_millis();
                    let entries: Vec<EntryRef<'_>> = (start..start + batch)
                        .map(|i| EntryRef {
                            entry_id: &entry_ids[i % MEMBERS],
                            user_id: &members[i % MEMBERS],
                            accepted_at_ms,
                            ticket: 0,
                            hole: false,
                        })
                        .collect();
                    let began = std::time::Instant::now();
                    store.decide(&event_id, &entries).await.expect("decide");
                    if replicas > 0 {
                        let mut conn = store.connection();
                        let _: u32 =
                            redis::cmd("WAIT").arg(replicas).arg(1_000).query_async(&mut conn).await.expect("WAIT");
                    }
                    let took = began.elapsed();
                    busy[mode] += took;
                    histograms[mode].record(took.as_micros() as u64).expect("record");
                }
            }
        }
    });
    let line = |mode: usize| {
        let h = &histograms[mode];
        format!(
            "{:.0} batches/s, p50 {:.2} ms, p99 {:.2} ms",
            h.len() as f64 / busy[mode].as_secs_f64(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        )
    };
    println!("stock/fence side by side (2,000 batches of 100 each, interleaved rounds):");
    println!("  fence off:               {}", line(0));
    println!("  fence on (WAIT 1):       {}", line(1));
    println!(
        "  ratio on/off: {:.2} batches/s, {:.2} p99",
        (histograms[1].len() as f64 / busy[1].as_secs_f64()) / (histograms[0].len() as f64 / busy[0].as_secs_f64()),
        histograms[1].value_at_quantile(0.99) as f64 / histograms[0].value_at_quantile(0.99) as f64
    );
    runtime.block_on(async {
        let mut conn = store.connection();
        let keys = EventKeys::new(&event_id);
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys.all()[..]).query_async(&mut conn).await;
    });
}

criterion_group!(benches, decide, fence);
criterion_main!(benches);
