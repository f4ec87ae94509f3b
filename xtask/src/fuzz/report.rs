//! bench/results/fuzz.{json,md}: the figures of the dedicated runs, one
//! entry per target, written from what libFuzzer printed.

use std::path::PathBuf;

use anyhow::Result;

use super::{TARGETS, libfuzzer::Stats, workspace};

fn results() -> PathBuf {
    workspace().join("bench/results")
}

/// Replaces `stats.target`'s entry and rewrites both files.
pub fn record(stats: &Stats) -> Result<()> {
    let json = results().join("fuzz.json");
    let mut all: Vec<Stats> = match std::fs::read(&json) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(_) => Vec::new(),
    };
    all.retain(|s| s.target != stats.target);
    all.push(stats.clone());
    all.sort_by_key(|s| TARGETS.iter().position(|t| *t == s.target));
    std::fs::create_dir_all(results())?;
    std::fs::write(&json, serde_json::to_string_pretty(&all)? + "\n")?;
    std::fs::write(results().join("fuzz.md"), markdown(&all))?;
    println!("xtask: wrote {} and fuzz.md", json.display());
    Ok(())
}

fn markdown(all: &[Stats]) -> String {
    let mut out = String::from(
        "# Fuzzing: one dedicated run per target\n\n\
         Written by `cargo xtask fuzz --target T --runs 10000000 --report` from\n\
         libFuzzer's output (one target at a time, `nice -n 10`, on a 2-CPU\n\
         machine shared with other jobs: exec/s is indicative only).\n\n\
         | target | executions | seconds | exec/s | corpus (seeds) | cov | ft | peak RSS MB | crashes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for s in all {
        out.push_str(&format!(
            "| `{}` | {} | {:.0} | {} | {} ({}) | {} | {} | {} | {} |\n",
            s.target,
            s.executions,
            s.seconds,
            s.exec_per_sec,
            s.corpus,
            s.seeds,
            s.coverage,
            s.features,
            s.peak_rss_mb,
            match (s.crashes.is_empty(), s.interrupted) {
                (true, false) => "none".to_owned(),
                (true, true) => "none (stopped at the time limit)".to_owned(),
                (false, _) => s.crashes.join(", "),
            },
        ));
    }
    out
}
