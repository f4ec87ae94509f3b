//! `cargo xtask fuzz`: the libFuzzer targets of `tracer/fuzz/`, built
//! instrumented (coverage, comparisons, AddressSanitizer) into target/fuzz so
//! the normal build is never invalidated, and run over the committed seed
//! corpora of `tracer/fuzz/corpus/TARGET/`.

mod build;
mod libfuzzer;
mod record;
mod report;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub use build::rustc_wrapper;
pub use libfuzzer::Budget;

/// Every target: one per parser of untrusted input.
pub const TARGETS: &[&str] = &[
    "dns_answer",
    "http_status_line",
    "kernel_records",
    "config_file",
    "tracepoint_format",
];

/// The CI run: each target over its corpus plus this many seconds, at most
/// this many inputs.
const CI_SECONDS: u64 = 10;
const CI_RUNS: u64 = 2_000_000;

pub struct Options {
    pub target: Option<String>,
    pub budget: Budget,
    /// Write bench/results/fuzz.{json,md} from what libFuzzer printed.
    pub report: bool,
}

pub fn run(options: &Options) -> Result<()> {
    let targets = selected(options.target.as_deref())?;
    let bins = build::instrumented()?;
    let mut crashed = Vec::new();
    for target in targets {
        let stats = libfuzzer::run(&bins, target, &options.budget, true)?;
        println!("{}", stats.summary());
        if options.report {
            report::record(&stats)?;
        }
        if !stats.crashes.is_empty() {
            crashed.push(target);
        }
    }
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: see target/fuzz/artifacts/",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// The short run `cargo xtask test` makes: (passed, failed), one per target.
pub fn ci() -> Result<(u64, u64)> {
    let bins = build::instrumented()?;
    let budget = Budget {
        runs: Some(CI_RUNS),
        seconds: Some(CI_SECONDS),
    };
    let (mut passed, mut failed) = (0, 0);
    for target in TARGETS {
        // The working corpus starts from the committed seeds only, so every
        // CI run does the same work.
        let stats = libfuzzer::run(&bins, target, &budget, false)?;
        println!("fuzz {}", stats.summary());
        if stats.crashes.is_empty() {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    Ok((passed, failed))
}

/// Writes the report of a run stopped before it could (from its log).
pub fn report_from_log(target: Option<&str>) -> Result<()> {
    for target in selected(target)? {
        let stats = libfuzzer::from_log(target)?;
        println!("{}", stats.summary());
        report::record(&stats)?;
    }
    Ok(())
}

/// Regenerates the seed corpora from real traffic and real files.
pub fn record_corpus() -> Result<()> {
    record::all(&corpus_root())
}

fn selected(target: Option<&str>) -> Result<Vec<&'static str>> {
    match target {
        None => Ok(TARGETS.to_vec()),
        Some(name) => match TARGETS.iter().find(|t| **t == name) {
            Some(t) => Ok(vec![*t]),
            None => bail!("no fuzz target `{name}` (targets: {})", TARGETS.join(", ")),
        },
    }
}

/// `tracer/fuzz/corpus/`: the committed seeds.
fn corpus_root() -> PathBuf {
    workspace().join("tracer/fuzz/corpus")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}
