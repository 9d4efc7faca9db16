//! The chaos suite with a fixed seed (docs/chaos.md): `firstcome-lab
//! chaos` runs every service as its own process on the three-broker Kafka
//! and the Sentinel-managed Redis, fires a rush of 20,000 entries from
//! 15,000 members at 2,000 units while processes, a broker, Redis,
//! PostgreSQL and the provider fail at the seed's moments, and checks every
//! invariant after the drain. Its own test binary, so it runs alone:
//! `cargo test -p firstcome-tests --test chaos` (after `cargo build --bins`;
//! `scripts/test.sh` builds everything first). `bash scripts/chaos.sh
//! [seed]` runs the same suite without the test harness.
//!
//! The suite takes `kafka3` and `redis-sentinel` for itself while it runs
//! (it starts them if they are down) and leaves both up and healthy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The seed of the CI run: the same schedule every time.
const SEED: u64 = 8;
/// The whole run (setup, rush, faults, drain, checks) ends well inside this.
const RUN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// `target/debug/firstcome-lab`, beside this test's folder (`target/debug/deps`).
fn firstcome_lab() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join("firstcome-lab");
    assert!(
        bin.exists(),
        "{} not built: cargo build --bins (scripts/test.sh and scripts/chaos.sh build it)",
        bin.display()
    );
    for service in ["ingest", "stock-processor", "recorder", "sender", "provider-sim"] {
        assert!(dir.join(service).exists(), "{service} not built beside firstcome-lab: cargo build --bins");
    }
    bin
}

/// The settings of `stack env kafka3 redis-sentinel` (`export K=V` lines).
async fn stack_env() -> Vec<(String, String)> {
    let output = tokio::process::Command::new(repo().join("stack/bin/stack"))
        .args(["env", "kafka3", "redis-sentinel"])
        .output()
        .await
        .expect("stack env runs");
    assert!(output.status.success(), "stack env: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

#[tokio::test]
async fn every_invariant_holds_through_the_seeded_faults() {
    let artifacts = repo().join(".stack/chaos");
    let mut command = tokio::process::Command::new(firstcome_lab());
    command
        .current_dir(repo())
        .envs(stack_env().await)
        .args(["chaos", "--seed", &SEED.to_string(), "--artifacts"])
        .arg(&artifacts)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("the chaos run did not end within {RUN_TIMEOUT:?}; logs in {}", artifacts.display()))
        .expect("firstcome-lab chaos runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    let dir = artifacts.join(SEED.to_string());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap_or_else(|e| {
            panic!("no report in {} ({e}): {}", dir.display(), String::from_utf8_lossy(&output.stderr))
        }))
        .expect("the report is JSON");

    let broken: Vec<String> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["holds"] != true)
        .map(|c| format!("{}: {}", c["name"], c["detail"]))
        .collect();
    assert!(broken.is_empty(), "broken: {broken:#?}; report and service logs in {}", dir.display());
    assert!(report["error"].is_null(), "{}; logs in {}", report["error"], dir.display());
    assert_eq!(report["drained"], true, "not drained; logs in {}", dir.display());
    assert!(output.status.success(), "firstcome-lab chaos failed; logs in {}", dir.display());

    // The suite's default sizes, and every kind of fault injected.
    let load = &report["load"];
    assert!(load["shots"].as_u64().unwrap_or(0) >= 20_000, "{load}");
    assert!(report["members"].as_u64().unwrap_or(0) >= 15_000);
    assert_eq!(report["for_sale"], 2_000);
    let kinds: std::collections::BTreeSet<&str> =
        report["faults"].as_array().expect("faults").iter().filter_map(|f| f["fault"]["kind"].as_str()).collect();
    for kind in [
        "kill_consumer",
        "kill_stock_in_transaction",
        "kill_ingest_before_ack",
        "kill_broker",
        "kill_redis",
        "lose_redis_writes",
        "redis_failover",
        "rebuild_redis",
        "restart_postgres",
        "provider_unreachable",
    ] {
        assert!(kinds.contains(kind), "{kind} injected: {kinds:?}");
    }
    let tally = &report["invariants"]["tally"];
    assert!(tally["provider_gifts"].as_i64().unwrap_or(i64::MAX) <= 2_000, "{tally}");
    assert_eq!(tally["sent"], tally["provider_gifts"], "{tally}");
    assert_eq!(tally["phantom_successes"], 0, "members told \"won\" and never paid: {tally}");
}
