//! `cargo xtask test`: everything CI runs.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Result, bail};

use crate::{cargo, clippy_ebpf, setup};

pub fn all(lint: bool) -> Result<()> {
    setup::all()?;
    if !setup::is_root() {
        bail!("the kernel tests load eBPF programs and create network namespaces: run as root");
    }
    if lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        // Default members here; the eBPF crate is linted for its own target.
        cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
        // The fuzz targets are outside the default members.
        cargo(&[
            "clippy",
            "--package",
            "tracer-fuzz",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
        clippy_ebpf()?;
    }
    // Default members: the eBPF crate only builds for the bpf target (tracer/build.rs).
    let mut totals = cargo_test(&["test", "--", "--test-threads", "2"], &[])?;
    // The kernel tests again with the sources older kernels use (activity
    // and resets from packets, DNS at devices) forced on this one.
    println!("kernel tests with older kernels' sources forced ({OLD_SOURCES}):");
    let forced = cargo_test(
        &[
            "test",
            "-p",
            "tracer",
            "--test",
            "trace_kernel",
            "--test",
            "daemon",
            "--test",
            "seeded",
            // h2c and TLS requests are told from packets there too.
            "--test",
            "protocols",
            "--test",
            "dual_stack",
            "--",
            "--test-threads",
            "2",
        ],
        &[("CONNTRACER_FORCE_SOURCES", OLD_SOURCES)],
    )?;
    totals.passed += forced.passed;
    totals.failed += forced.failed;
    // Each fuzz target briefly over its seeds: one test each.
    let (fuzz_passed, fuzz_failed) = crate::fuzz::ci()?;
    println!("fuzz: {fuzz_passed} targets passed, {fuzz_failed} crashed");
    totals.passed += fuzz_passed;
    totals.failed += fuzz_failed;
    if totals.failed > 0 || totals.passed == 0 {
        println!("tests: {} passed, {} failed", totals.passed, totals.failed);
        bail!("{} tests failed, {} passed", totals.failed, totals.passed);
    }
    // deploy/: manifests and alert rules, with the real validators.
    let (deploy_passed, deploy_failed) = crate::deploy::check()?;
    if deploy_failed > 0 {
        println!(
            "tests: {} passed, {deploy_failed} failed",
            totals.passed + deploy_passed as u64
        );
        bail!("{deploy_failed} deploy checks failed");
    }
    // The lab: every root cause reproduced with real Envoy.
    let (lab_passed, lab_failed) = crate::lab::run_scenarios(None, true)?;
    let passed = totals.passed + deploy_passed as u64 + lab_passed as u64;
    if lab_failed > 0 {
        println!("tests: {passed} passed, {lab_failed} failed");
        bail!("{lab_failed} lab scenarios failed");
    }
    // The reduced bench, so it cannot rot: its figures are reported, never
    // judged, and it is not counted as a test.
    crate::bench::run(true, false)?;
    println!("bench --quick: ran (figures above are reported, not judged; not counted)");
    // The short soak: nothing lost, nothing stuck, a SIGKILL survived.
    println!("\n=== soak (60 s): mixed load, SIGKILL and restart, sampled every 10 s");
    if !crate::soak::run(60, false)? {
        println!("tests: {passed} passed, 1 failed");
        bail!("the soak failed");
    }
    let passed = passed + 1;
    let passed = passed + kernel_matrix(passed)?;
    println!("tests: {passed} passed, 0 failed");
    Ok(())
}

/// The kernel tests and two lab scenarios again on older Debian kernels
/// under qemu (a few minutes each): every kernel unless
/// CONNTRACER_KERNEL_MATRIX says otherwise (`5.10,6.1`, `none`). Returns how
/// many passed.
fn kernel_matrix(passed_before: u64) -> Result<u64> {
    let Some(kernels) = crate::vm::matrix::from_env()? else {
        return Ok(0);
    };
    let matrix = crate::vm::matrix::matrix(&kernels)?;
    if matrix.failed > 0 {
        let passed = passed_before + matrix.passed;
        println!("tests: {passed} passed, {} failed", matrix.failed);
        bail!("{} tests failed on the kernel matrix", matrix.failed);
    }
    Ok(matrix.passed)
}

#[derive(Default)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
}

impl Totals {
    /// Adds the counts of a libtest `test result: ok. 3 passed; 1 failed; …`
    /// line; returns whether it was one.
    pub fn add_result_line(&mut self, line: &str) -> bool {
        let Some(result) = line.strip_prefix("test result: ") else {
            return false;
        };
        for part in result.split(['.', ';']) {
            let mut words = part.split_whitespace();
            match (
                words.next().and_then(|n| n.parse::<u64>().ok()),
                words.next(),
            ) {
                (Some(n), Some("passed")) => self.passed += n,
                (Some(n), Some("failed")) => self.failed += n,
                _ => {}
            }
        }
        true
    }
}

/// Every fallback source `CONNTRACER_FORCE_SOURCES` can force.
const OLD_SOURCES: &str =
    "tracepoints=classic,activity=packets,dns=devices,no_socket_resets=packets";

/// Runs cargo test, echoing its output, and adds up its `test result:` lines.
fn cargo_test(args: &[&str], env: &[(&str, &str)]) -> Result<Totals> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut totals = Totals::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        totals.add_result_line(&line);
    }
    let status = child.wait()?;
    if !status.success() && totals.failed == 0 {
        bail!("cargo test failed ({status})");
    }
    Ok(totals)
}
