//! The fault schedule: which fault strikes when, drawn from the seed alone,
//! so the same seed and sizes replay the same schedule (the offsets are
//! planned; a fault runs late when the one before it took longer).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One fault the suite injects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL a consumer service process, restart it after `down_ms`.
    KillConsumer { service: String, down_ms: u64 },
    /// SIGKILL a stock-stage instance while its Kafka transaction is open
    /// (its records are in `stock-decided`, not committed), then restart it.
    /// The instances are tried in turn (from the first named) until one is
    /// caught inside a transaction.
    KillStockInTransaction { services: Vec<String>, down_ms: u64 },
    /// SIGKILL an ingest instance while it holds a first-entry mark it has
    /// not answered (between the mark and the broker's ack), then restart it.
    KillIngestBeforeAck { service: String, down_ms: u64 },
    /// SIGKILL one broker of the three-broker Kafka, start it after `down_ms`.
    KillBroker { node: u8, down_ms: u64 },
    /// SIGKILL both Redis nodes and start them again from their AOF files.
    KillRedis { down_ms: u64 },
    /// Redis forgets `lost_ms` of the event's writes (DUMP, then RESTORE).
    LoseRedisWrites { lost_ms: u64 },
    /// `SENTINEL FAILOVER`: the replica is promoted.
    RedisFailover,
    /// `firstcome rebuild redis <event>` while the pipeline runs.
    RebuildRedis,
    /// The chaos database goes away for `down_ms`: every connection is
    /// terminated and new ones are refused.
    RestartPostgres { down_ms: u64 },
    /// The provider stops answering (SIGSTOP) for `down_ms`.
    ProviderUnreachable { down_ms: u64 },
}

impl Fault {
    pub fn label(&self) -> String {
        match self {
            Fault::KillConsumer { service, down_ms } => format!("SIGKILL {service}, restart after {down_ms} ms"),
            Fault::KillStockInTransaction { services, down_ms } => {
                format!(
                    "SIGKILL {} inside an open Kafka transaction, restart after {down_ms} ms",
                    services.join(" or ")
                )
            }
            Fault::KillIngestBeforeAck { service, down_ms } => {
                format!("SIGKILL {service} between a first-entry mark and the broker's ack, restart after {down_ms} ms")
            }
            Fault::KillBroker { node, down_ms } => format!("SIGKILL broker kafka3-{node}, start after {down_ms} ms"),
            Fault::KillRedis { down_ms } => format!("SIGKILL both Redis nodes, restart from AOF after {down_ms} ms"),
            Fault::LoseRedisWrites { lost_ms } => {
                format!("Redis loses {lost_ms} ms of the event's writes (DUMP/RESTORE)")
            }
            Fault::RedisFailover => "SENTINEL FAILOVER (replica promoted)".to_string(),
            Fault::RebuildRedis => {
                "firstcome rebuild redis (the event's stock state from the log, mid-rush)".to_string()
            }
            Fault::RestartPostgres { down_ms } => {
                format!("PostgreSQL: the chaos database's connections terminated, refused for {down_ms} ms")
            }
            Fault::ProviderUnreachable { down_ms } => format!("provider unreachable (SIGSTOP) for {down_ms} ms"),
        }
    }
}

/// A fault and when it is planned, from the start of the rush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub at_ms: u64,
    pub fault: Fault,
}

/// What the schedule is drawn for.
#[derive(Debug, Clone)]
pub struct Shape {
    pub rush: Duration,
    /// After the rush, faults keep coming this long (the drain).
    pub drain_window: Duration,
    pub ingest: usize,
    pub stock: usize,
    pub recorders: usize,
    pub senders: usize,
    /// Plain kills of each consumer instance.
    pub kills_per_consumer: usize,
}

/// Consumer services are named `<role>-<n>` (1-based).
pub fn name(role: &str, n: usize) -> String {
    format!("{role}-{}", n + 1)
}

/// The schedule of `seed` for `shape`, sorted by time.
pub fn plan(seed: u64, shape: &Shape) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rush_ms = shape.rush.as_millis() as u64;
    let end_ms = rush_ms + shape.drain_window.as_millis() as u64;
    let mut planned = Vec::new();

    // The two faults that need entries flowing strike first, early in the
    // rush, before the event sells out: the ingest kill (caught at once
    // while requests flow), then the stock stage's (caught while it decides).
    let down = |rng: &mut StdRng, low: u64, high: u64| rng.random_range(low..=high);
    let ingest = name("ingest", rng.random_range(0..shape.ingest));
    let ingest_at = rng.random_range(rush_ms / 40..=rush_ms / 25);
    planned.push(Planned {
        at_ms: ingest_at,
        fault: Fault::KillIngestBeforeAck { service: ingest, down_ms: down(&mut rng, 300, 1_500) },
    });
    let first_stock = rng.random_range(0..shape.stock);
    let services = (0..shape.stock).map(|n| name("stock", (first_stock + n) % shape.stock)).collect();
    let stock_at = ingest_at + rng.random_range(1..=rush_ms / 40 + 1);
    planned.push(Planned {
        at_ms: stock_at,
        fault: Fault::KillStockInTransaction { services, down_ms: down(&mut rng, 300, 1_500) },
    });

    // The faults of the stock core strike while units remain (the event sells
    // out within the first tenth of the rush): a failover, a lost second and a
    // rebuild with batches in flight — after sell-out no unit is decided and
    // they would test nothing.
    let mut early = vec![Fault::RedisFailover, Fault::LoseRedisWrites { lost_ms: 1_000 }, Fault::RebuildRedis];
    early.shuffle(&mut rng);
    let mut at = stock_at;
    for fault in early {
        at += rng.random_range(rush_ms / 200 + 1..=rush_ms / 80 + 1);
        planned.push(Planned { at_ms: at, fault });
    }

    // The rest anywhere in the rush and the drain.
    let mut rest = Vec::new();
    for (role, count) in [("stock", shape.stock), ("recorder", shape.recorders), ("sender", shape.senders)] {
        for n in 0..count {
            for _ in 0..shape.kills_per_consumer {
                rest.push(Fault::KillConsumer { service: name(role, n), down_ms: down(&mut rng, 200, 3_000) });
            }
        }
    }
    rest.push(Fault::KillBroker { node: rng.random_range(1..=3), down_ms: down(&mut rng, 3_000, 8_000) });
    rest.push(Fault::KillRedis { down_ms: down(&mut rng, 500, 2_000) });
    rest.push(Fault::RestartPostgres { down_ms: down(&mut rng, 2_000, 5_000) });
    rest.push(Fault::ProviderUnreachable { down_ms: down(&mut rng, 3_000, 8_000) });
    rest.shuffle(&mut rng);
    let first = stock_at + 1;
    for fault in rest {
        planned.push(Planned { at_ms: rng.random_range(first..end_ms.max(first + 1)), fault });
    }
    planned.sort_by_key(|p| p.at_ms);
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            rush: Duration::from_secs(40),
            drain_window: Duration::from_secs(40),
            ingest: 2,
            stock: 2,
            recorders: 1,
            senders: 1,
            kills_per_consumer: 2,
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_schedule() {
        assert_eq!(plan(7, &shape()), plan(7, &shape()));
        assert_ne!(plan(7, &shape()), plan(8, &shape()));
    }

    #[test]
    fn every_fault_kind_is_planned_inside_the_window() {
        let planned = plan(42, &shape());
        let kinds: std::collections::BTreeSet<&str> = planned
            .iter()
            .map(|p| match p.fault {
                Fault::KillConsumer { .. } => "consumer",
                Fault::KillStockInTransaction { .. } => "stock-txn",
                Fault::KillIngestBeforeAck { .. } => "ingest-ack",
                Fault::KillBroker { .. } => "broker",
                Fault::KillRedis { .. } => "redis-kill",
                Fault::LoseRedisWrites { .. } => "redis-lost",
                Fault::RedisFailover => "failover",
                Fault::RebuildRedis => "rebuild",
                Fault::RestartPostgres { .. } => "postgres",
                Fault::ProviderUnreachable { .. } => "provider",
            })
            .collect();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        // Every consumer instance twice, the stock stage once more in a transaction.
        let kills = planned.iter().filter(|p| matches!(p.fault, Fault::KillConsumer { .. })).count();
        assert_eq!(kills, 2 * (2 + 1 + 1));
        assert!(planned.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(planned.iter().all(|p| p.at_ms < 80_000));
    }

    /// The failover, the lost second and the rebuild strike early in the
    /// rush, while units remain (the event sells out in its first tenth).
    #[test]
    fn the_stock_core_faults_strike_while_units_remain() {
        for seed in 0..50 {
            let planned = plan(seed, &shape());
            for fault in [Fault::RedisFailover, Fault::LoseRedisWrites { lost_ms: 1_000 }, Fault::RebuildRedis] {
                let at = planned.iter().find(|p| p.fault == fault).map(|p| p.at_ms);
                assert!(at.is_some_and(|at| at < 4_000), "seed {seed}: {fault:?} at {at:?}");
            }
        }
    }
}
