//! Injecting each fault of the schedule into the running world: service
//! processes (SIGKILL, SIGSTOP), the three-broker Kafka and the
//! Sentinel-managed Redis (through `stack/bin/stack`), the chaos database,
//! and the event's Redis keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use platform::event_keys::EventKeys;
use platform::kafka::lag;
use testkit::sentinel;

use super::load::InFlight;
use super::schedule::{Fault, Planned};
use crate::services::ServiceProcess;

/// How long a restarted service may take to answer `/healthz`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);
/// How long a conditional fault (open transaction, pending mark) is tried.
const CONDITION_WITHIN: Duration = Duration::from_secs(40);

/// What one fault did.
#[derive(Debug, Clone, Serialize)]
pub struct Injected {
    pub planned_at_ms: u64,
    pub started_at_ms: u64,
    pub took_ms: u64,
    pub fault: Fault,
    pub label: String,
    /// What was seen (the open transaction, the pending marks, the new primary…).
    pub detail: String,
    /// For the conditional faults: whether the condition was caught.
    pub condition_met: Option<bool>,
    pub error: Option<String>,
}

/// The running world the faults act on.
pub struct World {
    pub services: HashMap<String, ServiceProcess>,
    pub stack_bin: PathBuf,
    pub brokers: String,
    /// The run's Kafka settings (the admin's login: the probes read every topic).
    pub kafka: platform::settings::KafkaSettings,
    /// `stock-decided` behind the run's prefix.
    pub decided_topic: String,
    pub event_keys: EventKeys,
    pub event_id: String,
    /// The run's settings, for `firstcome rebuild redis` as an operator runs it.
    pub settings: firstcome_cli::CliSettings,
    pub redis: platform::redis::Connection,
    /// A pool on the server's `postgres` database (to refuse and terminate
    /// the chaos database's connections).
    pub admin: deadpool_postgres::Pool,
    pub database: String,
    pub in_flight: InFlight,
    /// Ingest instance name → its index in the load plan's URLs.
    pub ingest_index: HashMap<String, usize>,
    /// Restarts still under way (a broker takes tens of seconds to be
    /// ready): the next faults do not wait for them; [`World::settle`] does.
    pub background: Vec<(String, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl World {
    /// Runs `planned` at its time (from `rush_started`); returns what it did.
    pub async fn inject(&mut self, planned: &Planned, rush_started: Instant) -> Injected {
        let at = Duration::from_millis(planned.at_ms);
        tokio::time::sleep_until(tokio::time::Instant::from_std(rush_started + at)).await;
        let started = Instant::now();
        let started_at_ms = rush_started.elapsed().as_millis() as u64;
        let label = planned.fault.label();
        crate::say!("  [{:>7.1} s] {label}", started_at_ms as f64 / 1000.0);
        let result = self.run(&planned.fault).await;
        let (detail, condition_met, error) = match result {
            Ok((detail, met)) => (detail, met, None),
            Err(error) => (String::new(), None, Some(format!("{error:#}"))),
        };
        if let Some(error) = &error {
            crate::say!("              FAILED: {error}");
        } else if !detail.is_empty() {
            crate::say!("              {detail}");
        }
        Injected {
            planned_at_ms: planned.at_ms,
            started_at_ms,
            took_ms: started.elapsed().as_millis() as u64,
            fault: planned.fault.clone(),
            label,
            detail,
            condition_met,
            error,
        }
    }

    async fn run(&mut self, fault: &Fault) -> anyhow::Result<(String, Option<bool>)> {
        match fault {
            Fault::KillConsumer { service, down_ms } => {
                self.kill_and_restart(service, *down_ms).await?;
                Ok((String::new(), None))
            }
            Fault::KillStockInTransaction { services, down_ms } => {
                self.kill_stock_in_transaction(services, *down_ms).await
            }
            Fault::KillIngestBeforeAck { service, down_ms } => self.kill_ingest_before_ack(service, *down_ms).await,
            Fault::KillBroker { node, down_ms } => {
                let unit = format!("kafka3-{node}");
                self.stack(&["kill", &unit]).await?;
                tokio::time::sleep(Duration::from_millis(*down_ms)).await;
                // Started now; ready (log recovery, back in the ISR) later,
                // while the next faults strike.
                let bin = self.stack_bin.clone();
                let starting = unit.clone();
                let task = tokio::spawn(async move { stack(&bin, &["up", &starting]).await });
                self.background.push((format!("start {unit}"), task));
                Ok((format!("{unit} starting again (ready in the background)"), None))
            }
            Fault::KillRedis { down_ms } => self.kill_redis(*down_ms).await,
            Fault::LoseRedisWrites { lost_ms } => self.lose_writes(*lost_ms).await,
            Fault::RedisFailover => self.failover().await,
            Fault::RebuildRedis => {
                let report = firstcome_cli::commands::rebuild::redis::rebuild(&self.settings, &self.event_id).await?;
                Ok((
                    format!(
                        "rebuilt: stock {:?} → {}, {} units held, {} answers kept from Redis, decisions held {} ms",
                        report.stock_before,
                        report.stock_after,
                        report.units_held,
                        report.decisions_only_in_redis,
                        report.held_ms
                    ),
                    None,
                ))
            }
            Fault::RestartPostgres { down_ms } => self.restart_postgres(*down_ms).await,
            Fault::ProviderUnreachable { down_ms } => {
                let provider = self.service("provider-sim")?;
                provider.signal("STOP").await?;
                tokio::time::sleep(Duration::from_millis(*down_ms)).await;
                self.service("provider-sim")?.signal("CONT").await?;
                Ok((String::new(), None))
            }
        }
    }

    /// Waits for the restarts still under way; the ones that failed.
    pub async fn settle(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for (what, task) in self.background.drain(..) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failed.push(format!("{what}: {error:#}")),
                Err(error) => failed.push(format!("{what}: {error}")),
            }
        }
        failed
    }

    fn service(&mut self, name: &str) -> anyhow::Result<&mut ServiceProcess> {
        self.services.get_mut(name).with_context(|| format!("no service {name}"))
    }

    async fn kill_and_restart(&mut self, name: &str, down_ms: u64) -> anyhow::Result<()> {
        let service = self.service(name)?;
        service.kill9().await;
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        service.restart()?;
        service.wait_healthy(HEALTHY_WITHIN).await
    }

    /// Freezes one instance (SIGSTOP) and looks at `stock-decided`: a
    /// partition whose last stable offset stays below its high watermark
    /// while the instance is frozen holds a transaction it left open (the
    /// other instance commits in milliseconds). Then SIGKILL; else thaw and
    /// try again, on the next instance.
    async fn kill_stock_in_transaction(
        &mut self,
        names: &[String],
        down_ms: u64,
    ) -> anyhow::Result<(String, Option<bool>)> {
        anyhow::ensure!(!names.is_empty(), "no stock instance");
        let probe = Watermarks::new(&self.kafka)?;
        let topic = self.decided_topic.clone();
        let give_up = Instant::now() + CONDITION_WITHIN;
        let mut tries = 0;
        loop {
            let name = names[tries % names.len()].clone();
            tries += 1;
            self.service(&name)?.signal("STOP").await?;
            tokio::time::sleep(Duration::from_millis(150)).await;
            let looked = async {
                let first = probe.open_transactions(&topic, None).await?;
                if first.is_empty() {
                    return anyhow::Ok(Vec::new());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                let partitions: Vec<i32> = first.iter().map(|(p, _, _)| *p).collect();
                let second = probe.open_transactions(&topic, Some(&partitions)).await?;
                Ok(first
                    .iter()
                    .filter(|(p, lso, _)| second.iter().any(|(q, lso2, _)| q == p && lso2 == lso))
                    .map(|(p, lso, high)| format!("partition {p}: stable offset {lso} < high watermark {high}"))
                    .collect())
            }
            .await;
            let held: Vec<String> = match looked {
                Ok(held) => held,
                Err(error) => {
                    // Never leave it frozen.
                    self.service(&name)?.signal("CONT").await?;
                    return Err(error);
                }
            };
            let caught = !held.is_empty();
            if caught || Instant::now() >= give_up {
                let service = self.service(&name)?;
                service.kill9().await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                service.restart()?;
                service.wait_healthy(HEALTHY_WITHIN).await?;
                let detail = if caught {
                    format!("{name} killed holding an open transaction while frozen (try {tries}): {}", held.join(", "))
                } else {
                    format!("no open transaction caught in {tries} tries; {name} killed anyway")
                };
                return Ok((detail, Some(caught)));
            }
            self.service(&name)?.signal("CONT").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes the instance and asks Redis about the members it is serving
    /// (in flight there, nowhere else): a `P|` first-entry mark is an entry
    /// it marked and has not answered — it has no ack (or has not acted on
    /// it). Then SIGKILL; else thaw and try again.
    async fn kill_ingest_before_ack(&mut self, name: &str, down_ms: u64) -> anyhow::Result<(String, Option<bool>)> {
        let index = *self.ingest_index.get(name).with_context(|| format!("no ingest {name}"))?;
        let give_up = Instant::now() + CONDITION_WITHIN;
        let mut tries = 0;
        loop {
            tries += 1;
            self.service(name)?.signal("STOP").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let members = self.in_flight.only_at(index);
            let mut pending = Vec::new();
            if !members.is_empty() {
                let marks: Result<Vec<Option<String>>, _> =
                    redis::cmd("HMGET").arg(&self.event_keys.entered).arg(&members).query_async(&mut self.redis).await;
                let marks = match marks {
                    Ok(marks) => marks,
                    Err(error) => {
                        // Never leave it frozen.
                        self.service(name)?.signal("CONT").await?;
                        return Err(error).context("HMGET entered");
                    }
                };
                pending = members
                    .iter()
                    .zip(marks)
                    .filter(|(_, mark)| mark.as_deref().is_some_and(|m| m.starts_with("P|")))
                    .map(|(member, _)| member.clone())
                    .collect();
            }
            let caught = !pending.is_empty();
            if caught || Instant::now() >= give_up {
                let service = self.service(name)?;
                service.kill9().await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                service.restart()?;
                service.wait_healthy(HEALTHY_WITHIN).await?;
                let detail = if caught {
                    let shown: Vec<&str> = pending.iter().take(3).map(String::as_str).collect();
                    format!(
                        "killed holding {} pending marks of {} requests in flight (try {tries}), e.g. {}",
                        pending.len(),
                        members.len(),
                        shown.join(", ")
                    )
                } else {
                    format!("no pending mark caught in {tries} tries; killed anyway")
                };
                return Ok((detail, Some(caught)));
            }
            self.service(name)?.signal("CONT").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Both nodes die at once; the primary comes back first, from its AOF
    /// (the Sentinels had no replica to promote), then the replica.
    async fn kill_redis(&mut self, down_ms: u64) -> anyhow::Result<(String, Option<bool>)> {
        let primary = master_port().await?;
        let primary_unit = format!("redis-s{}", primary - sentinel::DATA_PORT_BASE);
        self.stack(&["kill", "redis-s1", "redis-s2"]).await?;
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        self.stack(&["up", &primary_unit]).await?;
        self.stack(&["up", "redis-sentinel"]).await?;
        let healthy = wait_redis_healthy(Duration::from_secs(60)).await;
        let now = master_port().await?;
        if !healthy {
            bail!("the Sentinels do not see a healthy primary ({now}) and replica 60 s after the restart");
        }
        Ok((format!("primary {primary} before, {now} after, both nodes back from their AOF"), None))
    }

    /// The event's keys as they were `lost_ms` ago, put back atomically: the
    /// lost second of `appendfsync everysec` (docs/defence-in-depth.md).
    async fn lose_writes(&mut self, lost_ms: u64) -> anyhow::Result<(String, Option<bool>)> {
        let keys: Vec<String> = self.event_keys.all().iter().map(|k| k.to_string()).collect();
        let mut dump = redis::pipe();
        dump.atomic();
        for key in &keys {
            dump.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
        }
        // The connection may still be finding the primary after an earlier
        // Redis fault: a few tries.
        let mut tries = 0;
        let values: Vec<redis::Value> = loop {
            tries += 1;
            match dump.query_async(&mut self.redis).await {
                Ok(values) => break values,
                Err(error) if tries >= 20 => return Err(error).context("DUMP"),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        tokio::time::sleep(Duration::from_millis(lost_ms)).await;
        let mut restore = redis::pipe();
        restore.atomic();
        let mut restored = 0;
        for (key, pair) in keys.iter().zip(values.chunks(2)) {
            match (&pair[0], &pair[1]) {
                (redis::Value::BulkString(bytes), ttl) => {
                    let ttl = match ttl {
                        redis::Value::Int(ms) if *ms > 0 => *ms,
                        _ => 0,
                    };
                    restore.cmd("RESTORE").arg(key).arg(ttl).arg(bytes.as_slice()).arg("REPLACE").ignore();
                    restored += 1;
                }
                _ => {
                    restore.cmd("DEL").arg(key).ignore();
                }
            }
        }
        let mut tries = 0;
        loop {
            tries += 1;
            match restore.query_async::<()>(&mut self.redis).await {
                Ok(()) => break,
                Err(error) if tries >= 20 => return Err(error).context("RESTORE"),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        let replicas: i64 = redis::cmd("WAIT").arg(1).arg(5_000).query_async(&mut self.redis).await.unwrap_or(0);
        Ok((format!("{restored} keys put back {lost_ms} ms; {replicas} replica(s) have the loss"), None))
    }

    async fn failover(&mut self) -> anyhow::Result<(String, Option<bool>)> {
        wait_redis_healthy(Duration::from_secs(60)).await;
        let before = master_port().await?;
        sentinel::failover().await.context("SENTINEL FAILOVER")?;
        let moved = platform::wait::wait_until(Duration::from_secs(30), || async {
            master_port().await.is_ok_and(|port| port != before)
        })
        .await;
        let replica = wait_redis_healthy(Duration::from_secs(60)).await;
        let after = master_port().await?;
        if !moved {
            bail!("the Sentinels did not promote the replica within 30 s (primary still {after})");
        }
        Ok((format!("primary {before} -> {after}; replica in sync again: {replica}"), None))
    }

    /// Refuses new connections to the chaos database, terminates every one
    /// it has, and lets them back after `down_ms`: what the services see of
    /// a PostgreSQL restart, without restarting the server others share.
    async fn restart_postgres(&mut self, down_ms: u64) -> anyhow::Result<(String, Option<bool>)> {
        let db = self.admin.get().await?;
        let quoted = format!("\"{}\"", self.database.replace('"', "\"\""));
        db.batch_execute(&format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")).await?;
        let terminated = db
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.database],
            )
            .await;
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        db.batch_execute(&format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")).await?;
        let terminated = terminated?.len();
        Ok((format!("{terminated} connections terminated, none accepted for {down_ms} ms"), None))
    }

    async fn stack(&self, args: &[&str]) -> anyhow::Result<()> {
        stack(&self.stack_bin, args).await
    }
}

/// Runs `stack/bin/stack <args>`; fails with its output. `up` is tried
/// three times: it is idempotent, and right after a SIGKILL its readiness
/// check can read the dead process' pid file and give up too early.
pub async fn stack(bin: &PathBuf, args: &[&str]) -> anyhow::Result<()> {
    let tries = if args.first() == Some(&"up") { 3 } else { 1 };
    let mut failure = String::new();
    for _ in 0..tries {
        let output = tokio::process::Command::new(bin)
            .args(args)
            .output()
            .await
            .with_context(|| format!("Failed to run {}", bin.display()))?;
        if output.status.success() {
            return Ok(());
        }
        failure = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("stack {} failed: {failure}", args.join(" "))
}

/// The primary's port as the Sentinels see it.
async fn master_port() -> anyhow::Result<u16> {
    sentinel::master_port().await.with_context(|| format!("no Sentinel knows the primary of {}", sentinel::MASTER_NAME))
}

/// Waits until the Sentinels see a healthy primary and replica.
pub async fn wait_redis_healthy(timeout: Duration) -> bool {
    sentinel::wait_healthy(timeout).await
}

/// The high watermark of a partition as a `read_committed` reader sees it
/// (the last stable offset) and as a `read_uncommitted` one does.
struct Watermarks {
    committed: Arc<BaseConsumer>,
    uncommitted: Arc<BaseConsumer>,
}

impl Watermarks {
    fn new(kafka: &platform::settings::KafkaSettings) -> anyhow::Result<Self> {
        let consumer = |isolation: &str| -> anyhow::Result<Arc<BaseConsumer>> {
            Ok(Arc::new(
                platform::kafka::client_config(kafka)
                    .set("group.id", format!("chaos-probe-{}", uuid::Uuid::new_v4().simple()))
                    .set("enable.auto.commit", "false")
                    .set("isolation.level", isolation)
                    .create()?,
            ))
        };
        Ok(Self { committed: consumer("read_committed")?, uncommitted: consumer("read_uncommitted")? })
    }

    /// (partition, last stable offset, high watermark) of every partition
    /// of `topic` (or of `only` those) with an open transaction.
    async fn open_transactions(&self, topic: &str, only: Option<&[i32]>) -> anyhow::Result<Vec<(i32, i64, i64)>> {
        let (committed, uncommitted, topic) = (self.committed.clone(), self.uncommitted.clone(), topic.to_string());
        let only = only.map(<[i32]>::to_vec);
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64, i64)>> {
            let timeout = Duration::from_secs(5);
            let partitions: Vec<i32> = match only {
                Some(only) => only,
                None => lag::partitions(uncommitted.as_ref(), &topic, timeout)?,
            };
            let mut open = Vec::new();
            for partition in partitions {
                // read_committed sees the last stable offset as its high watermark.
                let stable = lag::watermark(committed.as_ref(), &topic, partition, timeout)?.high;
                let high = lag::watermark(uncommitted.as_ref(), &topic, partition, timeout)?.high;
                if stable < high {
                    open.push((partition, stable, high));
                }
            }
            Ok(open)
        })
        .await?
    }
}
