//! Running one target and reading what libFuzzer prints.

use std::{
    io::{BufRead, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{corpus_root, workspace};

/// How long a run goes on; libFuzzer stops at whichever comes first.
pub struct Budget {
    pub runs: Option<u64>,
    pub seconds: Option<u64>,
}

/// One run's figures, as libFuzzer printed them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub target: String,
    /// `stat::number_of_executed_units`.
    pub executions: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// `stat::average_exec_per_sec`.
    pub exec_per_sec: u64,
    /// Edges covered (`cov:`) and features (`ft:`) at the end.
    pub coverage: u64,
    pub features: u64,
    /// Inputs in the corpus at the end (`corp:`), the seeds among them.
    pub corpus: u64,
    pub seeds: u64,
    /// `stat::peak_rss_mb`.
    pub peak_rss_mb: u64,
    /// Inputs libFuzzer saved as crashes, leaks or timeouts.
    pub crashes: Vec<String>,
    /// Stopped before its budget (Ctrl-C, or read back from a cut log).
    #[serde(default)]
    pub interrupted: bool,
}

impl Stats {
    pub fn summary(&self) -> String {
        format!(
            "{}: {} executions in {:.0} s ({} exec/s), cov {} ft {}, corpus {} ({} seeds), {}",
            self.target,
            self.executions,
            self.seconds,
            self.exec_per_sec,
            self.coverage,
            self.features,
            self.corpus,
            self.seeds,
            match self.crashes.len() {
                0 => "no crash".to_owned(),
                n => format!("{n} crashes: {}", self.crashes.join(", ")),
            }
        )
    }

    /// Reads one line of libFuzzer's output.
    fn read(&mut self, line: &str) {
        if let Some(stat) = line.strip_prefix("stat::") {
            let Some((key, value)) = stat.split_once(':') else {
                return;
            };
            let value = value.trim().parse().unwrap_or(0);
            match key {
                "number_of_executed_units" => self.executions = value,
                "average_exec_per_sec" => self.exec_per_sec = value,
                "peak_rss_mb" => self.peak_rss_mb = value,
                _ => {}
            }
        } else if let Some(progress) = line.strip_prefix('#') {
            // `#4096  pulse  cov: 312 ft: 1024 corp: 40/2Kb exec/s: ... rss: ...`
            // (the final `stat::` lines, when there are some, say it last).
            let mut words = progress.split_whitespace();
            if let Some(Ok(n)) = words.next().map(str::parse) {
                self.executions = self.executions.max(n);
            }
            while let Some(word) = words.next() {
                let value = || words.clone().next().unwrap_or("");
                match word {
                    "exec/s:" => self.exec_per_sec = value().parse().unwrap_or(self.exec_per_sec),
                    "cov:" => self.coverage = value().parse().unwrap_or(self.coverage),
                    "ft:" => self.features = value().parse().unwrap_or(self.features),
                    "corp:" => {
                        let count = value().split('/').next().unwrap_or("");
                        self.corpus = count.parse().unwrap_or(self.corpus);
                    }
                    _ => {}
                }
            }
        } else if line.contains("libFuzzer: run interrupted") {
            self.interrupted = true;
        } else if let Some(rest) = line.split("Test unit written to ").nth(1) {
            self.crashes.push(rest.trim().to_owned());
        }
    }
}

/// Runs `target` over its committed seeds, adding what it finds to
/// target/fuzz/corpus/TARGET (kept across runs when `keep_corpus`).
pub fn run(bins: &Path, target: &str, budget: &Budget, keep_corpus: bool) -> Result<Stats> {
    let fuzz_dir = workspace().join("target/fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    if !keep_corpus && corpus.exists() {
        std::fs::remove_dir_all(&corpus)?;
    }
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let seeds_dir = corpus_root().join(target);
    let seeds = std::fs::read_dir(&seeds_dir)
        .with_context(|| format!("reading {}", seeds_dir.display()))?
        .count() as u64;
    let mut cmd = Command::new(bins.join(target));
    cmd.arg(&corpus)
        .arg(&seeds_dir)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_len={}", max_len(target)))
        .args(["-print_final_stats=1", "-timeout=10"])
        .args(["-rss_limit_mb=2048", "-print_pcs=0"])
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=1:symbolize=1:detect_stack_use_after_return=0",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(runs) = budget.runs {
        cmd.arg(format!("-runs={runs}"));
    }
    if let Some(seconds) = budget.seconds {
        cmd.arg(format!("-max_total_time={seconds}"));
    }
    eprintln!("xtask: fuzzing {target}");
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting the fuzz target {target}"))?;
    let mut stats = Stats {
        target: target.to_owned(),
        seeds,
        ..Stats::default()
    };
    // Everything libFuzzer says, as it says it (progress lines included).
    let log = fuzz_dir.join(format!("{target}.log"));
    let mut log_file = std::fs::File::create(&log)?;
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line?;
        stats.read(&line);
        writeln!(log_file, "{line}")?;
        // Crashes are worth seeing whole; progress lines only in the log.
        if !line.starts_with('#') && !line.starts_with("INFO:") {
            eprintln!("  {line}");
        }
    }
    let status = child.wait()?;
    stats.seconds = start.elapsed().as_secs_f64();
    if !status.success() && stats.crashes.is_empty() && !stats.interrupted {
        stats.crashes.push(format!(
            "exit {status}, no input saved (see {})",
            log.display()
        ));
    }
    Ok(stats)
}

/// The longest input worth trying: what the kernel can hand over, or the
/// size of the real files.
fn max_len(target: &str) -> usize {
    match target {
        // The capture copies at most 512 bytes (DNS_CAPTURE_MAX).
        "dns_answer" => 512,
        // The peek reads 12 bytes; a little more shows it reads no further.
        "http_status_line" => 64,
        // The ring selector and a few records of either ring.
        "kernel_records" => 2048,
        "config_file" => 2048,
        _ => 8192,
    }
}

/// The figures of a run whose report was not written (stopped at a
/// deadline), read back from its log, target/fuzz/TARGET.log.
pub fn from_log(target: &str) -> Result<Stats> {
    let log = workspace()
        .join("target/fuzz")
        .join(format!("{target}.log"));
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let mut stats = Stats {
        target: target.to_owned(),
        seeds: std::fs::read_dir(corpus_root().join(target))?.count() as u64,
        ..Stats::default()
    };
    for line in text.lines() {
        stats.read(line);
    }
    stats.interrupted |= !text.contains("stat::number_of_executed_units");
    // libFuzzer's rate is the whole run's average.
    stats.seconds = stats.executions as f64 / stats.exec_per_sec.max(1) as f64;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_output() {
        let mut stats = Stats::default();
        for line in [
            "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#1048576\tpulse  cov: 312 ft: 1024 corp: 40/2Kb lim: 4096 exec/s: 349525 rss: 60Mb",
            "==1== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='a/'; Test unit written to a/crash-0123",
            "stat::number_of_executed_units: 10000000",
            "stat::average_exec_per_sec:     123456",
            "stat::peak_rss_mb:              61",
        ] {
            stats.read(line);
        }
        assert_eq!(
            (stats.coverage, stats.features, stats.corpus),
            (312, 1024, 40)
        );
        assert_eq!(
            (stats.executions, stats.exec_per_sec, stats.peak_rss_mb),
            (10_000_000, 123_456, 61)
        );
        assert_eq!(stats.crashes, vec!["a/crash-0123".to_owned()]);
    }
}
