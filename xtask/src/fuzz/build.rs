//! The instrumented build: what cargo-fuzz does, without needing cargo-fuzz.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use super::workspace;

/// The host triple, given explicitly so RUSTFLAGS reach only the target's
/// crates, not build scripts and proc macros (and not the eBPF build that
/// tracer's build script runs: aya-build sets its own flags).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// AddressSanitizer and the checks of a debug build (debug assertions,
/// overflow checks) in an optimised one, for every crate of the targets.
const RUSTFLAGS: &[&str] = &[
    "--cfg fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
    "-Zsanitizer=address",
    "-Cforce-frame-pointers",
];

/// SanitizerCoverage as libFuzzer wants it (inline 8-bit counters, the PC
/// table, comparison tracing), only for the crates that parse: libFuzzer
/// scans every counter after each input, and instrumenting the whole
/// dependency tree (Kubernetes client, HTTP server) made that scan the
/// largest cost per input and bloated the features with unreachable code.
const COVERAGE: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
];

/// The crates whose code the targets exercise (generic code is compiled,
/// and so instrumented, where it is used).
const COVERED_CRATES: &[&str] = &[
    "tracer",
    "tracer_common",
    "tracer_fuzz",
    "hickory_proto",
    "toml",
    "toml_parser",
    "toml_datetime",
    "serde_spanned",
    "ipnet",
    "humantime",
];

/// Set when xtask runs as cargo's rustc wrapper.
const WRAPPER_ENV: &str = "CONNTRACER_FUZZ_RUSTC_WRAPPER";

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
        // This very binary adds the coverage flags to the covered crates.
        .env("RUSTC_WRAPPER", std::env::current_exe()?)
        .env(WRAPPER_ENV, "1")
        .status()
        .context("running cargo build for the fuzz targets")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok(target_dir.join(TRIPLE).join("release"))
}

/// When cargo runs us as its rustc wrapper (`xtask RUSTC ARGS…`): runs rustc,
/// with the coverage flags for a covered crate built for the fuzz target's
/// triple (not build scripts, proc macros, or the eBPF programs tracer's
/// build script builds). Returns `None` when not running as the wrapper.
pub fn rustc_wrapper() -> Option<i32> {
    std::env::var_os(WRAPPER_ENV)?;
    let mut args = std::env::args_os().skip(1);
    let rustc = args.next()?;
    let args: Vec<std::ffi::OsString> = args.collect();
    let value = |flag: &str| {
        args.windows(2)
            .find(|w| w[0] == flag)
            .and_then(|w| w[1].to_str())
    };
    let covered = value("--target") == Some(TRIPLE)
        && value("--crate-name").is_some_and(|name| COVERED_CRATES.contains(&name));
    let mut cmd = Command::new(rustc);
    cmd.args(&args);
    if covered {
        cmd.args(COVERAGE);
    }
    Some(match cmd.status() {
        Ok(status) => status.code().unwrap_or(1),
        Err(e) => {
            eprintln!("xtask: running rustc: {e}");
            1
        }
    })
}
