//! The chaos run's report: printed for people, written as JSON beside the
//! service logs (the artifacts of a failing run).

use std::path::Path;

use serde::Serialize;

use super::super::invariants::{Check, Fidelity, InvariantReport, LogTally};
use super::faults::Injected;
use super::load::LoadReport;
use super::schedule::Planned;

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

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.drained && !self.checks.is_empty() && self.checks.iter().all(|c| c.holds)
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    pub fn print(&self) {
        let l = &self.load;
        println!("\nchaos seed {} — event {}", self.seed, self.event_id);
        println!(
            "  rush: {} shots ({} members, {} eligible), {} requests with retries in {:.1} s; final answers {:?}",
            l.shots,
            self.members,
            self.eligible,
            l.requests,
            l.elapsed_ms as f64 / 1000.0,
            l.finals
        );
        println!("  every answer {:?}; final errors {:?}", l.answers, l.final_errors);
        let conditions = self.faults.iter().filter(|f| f.condition_met == Some(true)).count();
        println!(
            "  faults: {} injected ({} failed to inject; {} conditional caught)",
            self.faults.len(),
            self.faults.iter().filter(|f| f.error.is_some()).count(),
            conditions
        );
        for f in &self.faults {
            println!(
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
            println!(
                "  outcome: {} entries, {} sent, {} failed (unit returned), {} lost, {} won-waiting; ledger {} issued / {} returned; provider {} gifts; {} for sale",
                t.entries, t.sent, t.failed, t.lost, t.won_waiting(), t.ledger_issued, t.ledger_returned, t.provider_gifts, t.for_sale
            );
        }
        println!(
            "  drained: {} ({:.1} s after the last fault, which ended {:.1} s after the rush)",
            self.drained,
            self.drain_ms as f64 / 1000.0,
            self.rush_to_last_fault_ms as f64 / 1000.0
        );
        if let Some(f) = &self.fidelity {
            println!(
                "  FCFS fidelity: {} of the first {} accepted entries won ({:.1} %)",
                f.winners_among_first_n,
                f.first_n,
                f.share * 100.0
            );
        }
        if let Some(ms) = self.last_request_to_last_gift_ms {
            println!("  last request -> last gift: {:.1} s", ms as f64 / 1000.0);
        }
        println!("  checks:");
        for check in &self.checks {
            let mark = if check.holds { "HOLDS " } else { "BROKEN" };
            println!("    [{mark}] {:<58} {}", check.name, check.detail);
        }
        if let Some(error) = &self.error {
            println!("  error: {error}");
        }
        println!("  duration {:.1} s; report and logs in {}", self.duration_ms as f64 / 1000.0, self.artifacts);
    }
}
