//! The kernel tests inside a VM per kernel: built on the host, run in the
//! guest, their libtest output read back for the results.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{Options, SERIES};
use crate::test::Totals;

/// The integration tests that need a kernel: eBPF programs and namespaces.
const KERNEL_TESTS: &[&str] = &[
    "trace_kernel",
    "daemon",
    "seeded",
    "protocols",
    "dual_stack",
];

/// Lab scenarios run in each guest after the kernel tests (30 to 60 s each
/// under TCG): attribution as on the host (an idle race; refused connects
/// behind an iptables-redirected sidecar, whose resets older kernels only
/// show as packets), and a DNS change seen through whichever DNS source the
/// kernel has.
const LAB_SCENARIOS: &[&str] = &[
    "idle-timeout",
    "pod-termination",
    "app-not-listening",
    "dns-change",
];

/// As on the host, one per vCPU: under TCG that halves the time (about 75 s
/// instead of 130 s on 6.12) and, measured on 6.1 and 6.12, fails no other test.
const TEST_THREADS: u32 = 2;

/// Per kernel, boot included. Measured under TCG on 2 host CPUs: 330 to 400 s
/// per kernel for the tests and the lab; three times that before giving up.
const TIMEOUT_SECS: u64 = 1200;

/// Which kernels `cargo xtask test` runs the matrix on: unset or `all` for
/// every one, a list like `5.10,6.1`, or `none` to skip it.
pub const ENV: &str = "CONNTRACER_KERNEL_MATRIX";

/// The kernels `names` asks for: `all` (or nothing) means every series.
pub fn series(names: &[String]) -> Result<Vec<String>> {
    let names: Vec<&str> = names.iter().flat_map(|n| n.split(',')).collect();
    if names.is_empty() || names.contains(&"all") {
        return Ok(SERIES.iter().map(|s| s.name.to_owned()).collect());
    }
    for name in &names {
        super::kernel::series(name)?;
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

/// The kernels `CONNTRACER_KERNEL_MATRIX` asks for (every one when unset);
/// `None` for `none`.
pub fn from_env() -> Result<Option<Vec<String>>> {
    match std::env::var(ENV) {
        Ok(value) if value.trim() == "none" => Ok(None),
        Ok(value) if !value.trim().is_empty() => series(&[value]).map(Some),
        _ => series(&[]).map(Some),
    }
}

/// Runs the kernel tests on each kernel and reports each; fails if any failed.
pub fn run(kernels: &[String]) -> Result<()> {
    let totals = matrix(kernels)?;
    if totals.failed > 0 || totals.passed == 0 {
        bail!(
            "kernel matrix: {} passed, {} failed",
            totals.passed,
            totals.failed
        );
    }
    Ok(())
}

/// Every kernel in turn, all of them even when one fails; the sum.
pub fn matrix(kernels: &[String]) -> Result<Totals> {
    crate::setup::build_prerequisites()?;
    crate::setup::vm_prerequisites()?;
    let binaries = build()?;
    // The lab runs the host's conntracer and this very xtask in the guest.
    crate::cargo(&["build", "--package", "tracer", "--bin", "conntracer"])?;
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let mut reports = Vec::new();
    for kernel in kernels {
        let report = match run_kernel(kernel, &binaries, &xtask) {
            Ok(report) => report,
            // A guest kernel that oopses outside any BPF program is the
            // emulated machine's fault (seen once on 6.12 under TCG, with
            // impossible EFLAGS bits), not a test's: it gets one more boot,
            // and the report says so. A crash with a BPF frame is never retried.
            Err(e) if crashed_outside_bpf(&e) => {
                println!("[{kernel}] {e:#}");
                println!(
                    "[{kernel}] the guest kernel crashed outside any BPF program: booting it once more"
                );
                let mut report = run_kernel(kernel, &binaries, &xtask)
                    .unwrap_or_else(|e| Report::broken(kernel, format!("{e:#}")));
                report
                    .kernel
                    .push_str(", second boot after a guest kernel crash");
                report
            }
            Err(e) => Report::broken(kernel, format!("{e:#}")),
        };
        reports.push(report);
    }
    println!();
    let mut totals = Totals::default();
    for report in &reports {
        report.print();
        totals.passed += report.totals.passed;
        totals.failed += report.totals.failed;
    }
    Ok(totals)
}

fn crashed_outside_bpf(e: &anyhow::Error) -> bool {
    e.downcast_ref::<super::qemu::GuestCrashed>()
        .is_some_and(|c| !c.bpf_on_stack)
}

/// Builds the kernel tests; their executables by test name.
fn build() -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--no-run", "--message-format=json", "-p", "tracer"]);
    for test in KERNEL_TESTS {
        cmd.args(["--test", test]);
    }
    let out = cmd.output().context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the kernel tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && KERNEL_TESTS.contains(&name)
            && let Some(exe) = msg["executable"].as_str()
        {
            binaries.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    if binaries.len() != KERNEL_TESTS.len() {
        bail!("cargo built {} of the kernel tests", binaries.len());
    }
    Ok(binaries)
}

fn run_kernel(kernel: &str, binaries: &[(String, PathBuf)], xtask: &Path) -> Result<Report> {
    let started = Instant::now();
    // cargo runs integration tests in the package's directory.
    let tracer_dir = std::path::absolute(concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer"))?;
    let mut reader = Reader::default();
    let outcome = super::run(
        kernel,
        &["sh".into(), "-c".into(), guest_script(binaries, xtask)],
        &tracer_dir,
        &Options::with_timeout(TIMEOUT_SECS),
        &mut |line| {
            println!("[{kernel}] {line}");
            reader.line(line);
        },
    )?;
    Ok(Report {
        kernel: format!("{kernel} ({})", outcome.release),
        totals: reader.totals,
        failures: reader.failures,
        boot_secs: outcome.boot.as_secs_f64(),
        total_secs: started.elapsed().as_secs_f64(),
    })
}

/// One binary after the other, then the lab scenarios, each followed by a
/// line with its status, so one that dies without its result line still
/// counts as a failure.
fn guest_script(binaries: &[(String, PathBuf)], xtask: &Path) -> String {
    let mut script = String::from("failed=0\n");
    for (name, exe) in binaries {
        script.push_str(&format!(
            "'{}' --test-threads {TEST_THREADS}; s=$?; echo \"{END} {name} status=$s\"; [ $s = 0 ] || failed=1\n",
            exe.display()
        ));
    }
    // The lab runs from the workspace root, with what the host built.
    for scenario in LAB_SCENARIOS {
        script.push_str(&format!(
            "(cd .. && '{}' lab --prebuilt {scenario}); s=$?; echo \"{END} lab {scenario} status=$s\"; [ $s = 0 ] || failed=1\n",
            xtask.display()
        ));
    }
    script.push_str("exit $failed\n");
    script
}

const END: &str = "xtask-vm: end of";

/// How much of a failure's message the summary shows.
const MESSAGE_CHARS: usize = 300;

/// Reads libtest output: the totals, and the message of each failure
/// (`---- NAME stdout ----`, a panic line, then the message up to the
/// backtrace or a blank line), on one line.
#[derive(Default)]
struct Reader {
    totals: Totals,
    failures: Vec<(String, String)>,
    current: Option<Failure>,
    result_seen: bool,
}

/// The failure whose output is being read.
struct Failure {
    name: String,
    panic_seen: bool,
    message: Vec<String>,
    /// The first error a child printed before the panic (`conntracer:
    /// error: …`): often the cause the panic message only hints at.
    error: Option<String>,
}

impl Reader {
    fn line(&mut self, line: &str) {
        if self.totals.add_result_line(line) || self.add_lab_line(line) {
            self.result_seen = true;
            self.finish_failure();
            return;
        }
        if let Some(rest) = line.strip_prefix(END) {
            if !std::mem::take(&mut self.result_seen) {
                self.totals.failed += 1;
                self.failures
                    .push((rest.trim().to_owned(), "no test result line".to_owned()));
            }
            return;
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            self.finish_failure();
            self.current = Some(Failure {
                name: name.to_owned(),
                panic_seen: false,
                message: Vec::new(),
                error: None,
            });
            return;
        }
        let Some(failure) = &mut self.current else {
            return;
        };
        if !failure.panic_seen {
            // Before it: the test's own output.
            failure.panic_seen = line.contains(" panicked at ");
            if failure.error.is_none() && line.contains("error: ") {
                failure.error = Some(line.trim().to_owned());
            }
            return;
        }
        let end = line.trim().is_empty()
            || line.starts_with("stack backtrace:")
            || line.starts_with("note: ")
            || line == "failures:";
        if end {
            self.finish_failure();
        } else {
            failure.message.push(line.trim().to_owned());
        }
    }

    /// `lab: 1 passed, 0 failed`: the lab's summary counts as a result line.
    fn add_lab_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("lab: ") else {
            return false;
        };
        let counts: Vec<u64> = rest
            .split(", ")
            .filter_map(|part| part.split_whitespace().next()?.parse().ok())
            .collect();
        let [passed, failed] = counts[..] else {
            return false;
        };
        self.totals.passed += passed;
        self.totals.failed += failed;
        true
    }

    fn finish_failure(&mut self) {
        if let Some(f) = self.current.take() {
            let mut message = if f.message.is_empty() {
                "(no panic message)".to_owned()
            } else {
                cut(&f.message.join(" "))
            };
            if let Some(error) = f.error {
                message = format!("{message} [{error}]");
            }
            self.failures.push((f.name, message));
        }
    }
}

/// Long messages (events as JSON) are cut: the full output is above.
fn cut(message: &str) -> String {
    let short: String = message.chars().take(MESSAGE_CHARS).collect();
    if short.len() < message.len() {
        format!("{short} …")
    } else {
        short
    }
}

struct Report {
    kernel: String,
    totals: Totals,
    failures: Vec<(String, String)>,
    boot_secs: f64,
    total_secs: f64,
}

impl Report {
    /// A kernel that could not be tested at all counts as one failure.
    fn broken(kernel: &str, error: String) -> Self {
        Self {
            kernel: kernel.to_owned(),
            totals: Totals {
                passed: 0,
                failed: 1,
            },
            failures: vec![("(the VM)".to_owned(), error)],
            boot_secs: 0.0,
            total_secs: 0.0,
        }
    }

    fn print(&self) {
        println!(
            "kernel {}: {} passed, {} failed (up in {:.0} s, {:.0} s in all)",
            self.kernel, self.totals.passed, self.totals.failed, self.boot_secs, self.total_secs
        );
        for (name, message) in &self.failures {
            println!("  FAILED {name}: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_with_their_message() {
        let mut reader = Reader::default();
        for line in [
            "test a ... FAILED",
            "failures:",
            "",
            "---- a stdout ----",
            "[conntracer] conntracer: error: no such field",
            "",
            "thread 'a' (12) panicked at tracer/tests/x.rs:1:2:",
            "assertion `left == right` failed",
            "  left: 0",
            "note: run with `RUST_BACKTRACE=1`",
            "",
            "failures:",
            "    a",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
            "xtask-vm: end of trace_kernel status=101",
            "xtask-vm: end of daemon status=139",
            "lab: 1 passed, 1 failed",
            "lab: failed scenarios: dns-change (logs in target/lab/)",
            "xtask-vm: end of lab dns-change status=1",
        ] {
            reader.line(line);
        }
        assert_eq!(reader.totals.passed, 3);
        assert_eq!(reader.totals.failed, 3);
        assert_eq!(
            reader.failures[0],
            (
                "a".into(),
                "assertion `left == right` failed left: 0 [[conntracer] conntracer: error: no such field]".into()
            )
        );
        assert_eq!(reader.failures[1].0, "daemon status=139");
    }
}
