//! The instrumented build: what cargo-fuzz does, without needing cargo-fuzz.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use super::workspace;

/// The host triple, given explicitly so RUSTFLAGS reach only the target's
/// crates, not build scripts and proc macros (and not the eBPF build that
/// tracer's build script runs: aya-build sets its own flags).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// SanitizerCoverage as libFuzzer wants it (inline 8-bit counters, the PC
/// table, comparison tracing), AddressSanitizer, and the checks of a debug
/// build (debug assertions, overflow checks) in an optimised one.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "--cfg fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
    "-Zsanitizer=address",
    "-Cforce-frame-pointers",
];

/// Builds every target; returns the directory holding the binaries.
pub fn instrumented() -> Result<PathBuf> {
    let root = workspace();
    let target_dir = root.join("target/fuzz");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--package", "tracer-fuzz", "--bins"])
        .args(["--target", TRIPLE])
        .arg("--target-dir")
        .arg(&target_dir)
        // `-Zsanitizer` is unstable; stable rustc takes it with this.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo build for the fuzz targets")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok(target_dir.join(TRIPLE).join("release"))
}
