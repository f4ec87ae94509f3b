//! The soak's samples, checks and report.

use std::time::Duration;

use serde_json::{Value, json};

/// Samples this long after a daemon's start are past its warm-up.
const WARM_UP: Duration = Duration::from_secs(15);
/// How much a warm daemon's RSS may grow over the run and still count as flat.
const FLAT_RSS_MIB: f64 = 8.0;
/// One sample of the daemon under load.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Sample {
    pub(super) seconds: f64,
    /// Which daemon (1 before the restart, 2 after).
    pub(super) daemon: u8,
    pub(super) rss_mib: f64,
    /// Of one core, userspace and kernel time of the process.
    pub(super) cpu_percent: f64,
    /// BPF program run time, as a share of one core.
    pub(super) bpf_percent: f64,
    pub(super) tracked_connections: f64,
    pub(super) socket_map_entries: Option<u64>,
    pub(super) events_lost: f64,
    pub(super) churn_per_second: f64,
}

#[derive(Default)]
pub(super) struct Verdict {
    /// (sample, time since its daemon was ready).
    pub(super) samples: Vec<(Sample, Duration)>,
    pub(super) lines: Vec<String>,
    pub(super) failed: Vec<String>,
    pub(super) restart_seconds: Option<f64>,
    /// From the kill to the second daemon's readiness: nothing watched.
    pub(super) unwatched: Option<(std::time::SystemTime, std::time::SystemTime)>,
    pub(super) after_restart_base: (u64, f64),
    pub(super) load: Value,
}

impl Verdict {
    pub(super) fn check(&mut self, ok: bool, line: String) {
        println!("soak: {} {line}", if ok { "ok:" } else { "FAILED:" });
        if !ok {
            self.failed.push(line.clone());
        }
        self.lines.push(line);
    }

    /// Each daemon's RSS over its warm samples grows by at most FLAT_RSS_MIB.
    pub(super) fn rss_checks(&mut self) {
        for daemon in [1, 2] {
            let warm: Vec<f64> = self
                .samples
                .iter()
                .filter(|(s, since)| s.daemon == daemon && *since >= WARM_UP)
                .map(|(s, _)| s.rss_mib)
                .collect();
            let (Some(first), Some(max)) =
                (warm.first().copied(), warm.iter().copied().reduce(f64::max))
            else {
                self.lines
                    .push(format!("daemon {daemon}: no sample after warm-up"));
                continue;
            };
            self.check(
                max - first <= FLAT_RSS_MIB,
                format!(
                    "daemon {daemon} RSS after warm-up: {first:.1} → max {max:.1} MiB over {} samples (flat within {FLAT_RSS_MIB} MiB)",
                    warm.len()
                ),
            );
        }
    }

    pub(super) fn report(&self, seconds: u64) -> (Value, String) {
        let samples: Vec<&Sample> = self.samples.iter().map(|(s, _)| s).collect();
        let json = json!({
            "seconds": seconds,
            "passed": self.failed.is_empty(),
            "checks": self.lines,
            "failed": self.failed,
            "restart_seconds": self.restart_seconds,
            "load": self.load,
            "samples": samples,
        });
        let mut md = format!(
            "# Soak: {seconds} s of mixed load, SIGKILL and restart at {} s\n\n",
            seconds * 2 / 3
        );
        md += &format!("Load: {}\n\n", self.load);
        md += "| s | daemon | RSS MiB | CPU % | BPF % | tracked | socket map | lost | churn/s |\n";
        md += "|---|---|---|---|---|---|---|---|---|\n";
        for s in &samples {
            md += &format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.0} |\n",
                s.seconds,
                s.daemon,
                s.rss_mib,
                s.cpu_percent,
                s.bpf_percent,
                s.tracked_connections,
                s.socket_map_entries.map_or("-".into(), |n| n.to_string()),
                s.events_lost,
                s.churn_per_second
            );
        }
        md += "\nChecks:\n\n";
        for line in &self.lines {
            let mark = if self.failed.contains(line) {
                "FAILED"
            } else {
                "ok"
            };
            md += &format!("- {mark}: {line}\n");
        }
        if let Some(r) = self.restart_seconds {
            md += &format!("\nRestart: killed → ready again in {r:.1} s.\n");
        }
        (json, md)
    }
}
