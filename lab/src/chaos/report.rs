//! The chaos run's report: printed for people, written as JSON beside the
//! service logs (the artifacts of a failing run).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::faults::Injected;
use super::load::LoadReport;
use super::schedule::Planned;
use audit::{Check, Fidelity, InvariantReport, LogTally};

#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub event_id: String,
    pub topic_prefix: String,
    pub database: String,
    pub members: usize,
    pub eligible: usize,
    pub for_sale: i32,
    pub schedule: Vec<Planned>,
    pub faults: Vec<Injected>,
    pub load: LoadReport,
    /// 202s seen by the rush (`load.accepted` holds them).
    pub accepted: usize,
    pub drained: bool,
    /// From the end of the rush to the end of the last fault (the faults of
    /// the drain window, and those that ran late).
    pub rush_to_last_fault_ms: u64,
    /// From the end of the last fault to the drain's end.
    pub drain_ms: u64,
    pub invariants: Option<InvariantReport>,
    pub log: Option<LogTally>,
    /// Every check: the stores' five, the log's, and the faults' conditions.
    pub checks: Vec<Check>,
    pub fidelity: Option<Fidelity>,
    /// From the last request of the rush to the provider's last gift.
    pub last_request_to_last_gift_ms: Option<i64>,
    pub duration_ms: u64,
    pub artifacts: String,
    pub error: Option<String>,
}

/// Beside a failed run's report (see [`prepare_dir`]).
const FAILED_MARK: &str = "FAILED";

/// Makes a seed's folder ready for a new run: a failed run's folder is kept
/// apart beside it as `<seed>-failed-<unix seconds of the failure>` (its
/// report and logs are what a failure is read from), any other is replaced.
/// Returns where a failed run was kept.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mark = dir.join(FAILED_MARK);
    let kept = match std::fs::metadata(&mark) {
        Ok(metadata) => {
            let failed_at = metadata.modified().unwrap_or_else(|_| std::time::SystemTime::now());
            let secs = failed_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let kept = dir.with_file_name(format!("{name}-failed-{secs}"));
            std::fs::rename(dir, &kept)?;
            Some(kept)
        }
        Err(_) => {
            let _ = std::fs::remove_dir_all(dir);
            None
        }
    };
    std::fs::create_dir_all(dir)?;
    Ok(kept)
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.drained && !self.checks.is_empty() && self.checks.iter().all(|c| c.holds)
    }

    /// Writes `report.json`, and for a failed run the mark that keeps its
    /// folder from being replaced by the seed's next run ([`prepare_dir`]).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        if !self.passed() {
            std::fs::write(dir.join(FAILED_MARK), "")?;
        }
        Ok(())
    }

    pub fn print(&self) {
        let l = &self.load;
        crate::say!("\nchaos seed {} — event {}", self.seed, self.event_id);
        crate::say!(
            "  rush: {} shots ({} members, {} eligible), {} requests with retries in {:.1} s; final answers {:?}",
            l.shots,
            self.members,
            self.eligible,
            l.requests,
            l.elapsed_ms as f64 / 1000.0,
            l.finals
        );
        crate::say!("  every answer {:?}; final errors {:?}", l.answers, l.final_errors);
        let conditions = self.faults.iter().filter(|f| f.condition_met == Some(true)).count();
        crate::say!(
            "  faults: {} injected ({} failed to inject; {} conditional caught)",
            self.faults.len(),
            self.faults.iter().filter(|f| f.error.is_some()).count(),
            conditions
        );
        for f in &self.faults {
            crate::say!(
                "    planned {:>6.1} s, at {:>6.1} s, {:>5.1} s: {}{}",
                f.planned_at_ms as f64 / 1000.0,
                f.started_at_ms as f64 / 1000.0,
                f.took_ms as f64 / 1000.0,
                f.label,
                f.error.as_ref().map(|e| format!(" — FAILED: {e}")).unwrap_or_default()
            );
        }
        if let Some(report) = &self.invariants {
            let t = &report.tally;
            crate::say!(
                "  outcome: {} entries, {} sent, {} failed (unit returned), {} lost, {} won-waiting, {} phantom successes; ledger {} issued / {} returned; provider {} gifts; {} for sale",
                t.entries, t.sent, t.failed, t.lost, t.won_waiting(), t.phantom_successes, t.ledger_issued, t.ledger_returned, t.provider_gifts, t.for_sale
            );
        }
        crate::say!(
            "  drained: {} ({:.1} s after the last fault, which ended {:.1} s after the rush)",
            self.drained,
            self.drain_ms as f64 / 1000.0,
            self.rush_to_last_fault_ms as f64 / 1000.0
        );
        if let Some(f) = &self.fidelity {
            crate::say!(
                "  FCFS fidelity: {} of the first {} accepted entries won ({:.1} %)",
                f.winners_among_first_n,
                f.first_n,
                f.share * 100.0
            );
        }
        if let Some(ms) = self.last_request_to_last_gift_ms {
            crate::say!("  last request -> last gift: {:.1} s", ms as f64 / 1000.0);
        }
        crate::say!("  checks:");
        for check in &self.checks {
            let mark = if check.holds { "HOLDS " } else { "BROKEN" };
            crate::say!("    [{mark}] {:<58} {}", check.name, check.detail);
        }
        if let Some(error) = &self.error {
            crate::say!("  error: {error}");
        }
        crate::say!("  duration {:.1} s; report and logs in {}", self.duration_ms as f64 / 1000.0, self.artifacts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_runs_folder_is_kept_apart_and_a_passed_ones_replaced() {
        let root = std::env::temp_dir().join(format!("chaos-artifacts-{}", uuid::Uuid::new_v4()));
        let dir = root.join("8");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stock-1.log"), "passed run").unwrap();
        assert_eq!(prepare_dir(&dir).unwrap(), None);
        assert!(!dir.join("stock-1.log").exists(), "a passed run's folder is replaced");

        std::fs::write(dir.join("stock-1.log"), "failed run").unwrap();
        std::fs::write(dir.join(FAILED_MARK), "").unwrap();
        let kept = prepare_dir(&dir).unwrap().expect("kept apart");
        assert!(kept.file_name().unwrap().to_string_lossy().starts_with("8-failed-"), "{}", kept.display());
        assert_eq!(std::fs::read_to_string(kept.join("stock-1.log")).unwrap(), "failed run");
        assert!(dir.is_dir() && std::fs::read_dir(&dir).unwrap().next().is_none(), "a fresh folder for the new run");
        let _ = std::fs::remove_dir_all(&root);
    }
}
