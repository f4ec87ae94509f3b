//! `cargo xtask`: set-up, build, run and test for conntracer.
//!
//! Every command installs what it needs first (`setup`), and is safe to run
//! twice: rust-src for the toolchain that builds the eBPF crate, bpf-linker,
//! and the Debian packages the tests use.

mod bench;
mod deploy;
mod fuzz;
mod lab;
mod procfs;
mod setup;
mod soak;
mod test;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test conntracer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the build and test prerequisites (idempotent).
    Setup,
    /// Build the release binary (target/release/conntracer).
    Build,
    /// Build, then run conntracer (needs root): the daemon on its defaults, or
    /// whatever arguments follow `--` (e.g. `-- trace --output json`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Reproduce each root cause with real Envoy and check what the daemon says (needs root).
    Lab {
        /// One scenario (default: all).
        scenario: Option<String>,
        /// Use the binaries and tools already there: no setup, no build (the
        /// kernel matrix runs the lab inside a guest this way).
        #[arg(long)]
        prebuilt: bool,
    },
    /// Overhead, throughput and memory against a baseline and peer tracers (needs root).
    Bench {
        /// The reduced run (baseline, trace, daemon; small counts) the tests include.
        #[arg(long)]
        quick: bool,
        /// Instead: the soak, SECONDS of mixed load with a SIGKILL and restart
        /// half-way, sampled every 10 s; results under bench/results/.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "600")]
        soak: Option<u64>,
        /// Only the daemon's memory against open connections (no rounds).
        #[arg(long)]
        memory_only: bool,
    },
    /// Internal to the bench: one child process holding connections open.
    #[command(hide = true)]
    BenchHold(bench::memory::HoldArgs),
    /// Check deploy/: manifests against the Kubernetes schemas, alert rules with promtool.
    Deploy,
    /// Every test: formatting, lints, unit tests, kernel tests with real traffic, the lab, deploy/.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only the kernel tests, inside a VM running this Debian kernel
        /// (5.10, 6.1, 6.12 or all; repeatable).
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// libFuzzer on the parsers of untrusted input (DNS answers, the HTTP
    /// status line, kernel records, config files, tracepoint formats).
    Fuzz {
        /// One target (default: all, one after the other).
        #[arg(long)]
        target: Option<String>,
        /// Stop each target after this many inputs.
        #[arg(long)]
        runs: Option<u64>,
        /// Stop each target after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
        /// Write the figures to bench/results/fuzz.{json,md}.
        #[arg(long)]
        report: bool,
        /// Regenerate the seed corpora (tracer/fuzz/corpus/) from a real
        /// dnsmasq and Envoy, the recorded kernels' formats, and the tests'
        /// config files; then stop.
        #[arg(long)]
        record_corpus: bool,
        /// Write the report of a run stopped before it could, from its log
        /// (target/fuzz/TARGET.log).
        #[arg(long)]
        report_from_log: bool,
        /// The short run `cargo xtask test` makes (each target 10 s over its seeds).
        #[arg(long)]
        ci: bool,
    },
    /// Debian cloud kernels under qemu, the host's root shared read-only.
    Vm {
        #[command(subcommand)]
        command: VmCmd,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Boot a kernel and run a command in the current directory inside it;
    /// exits with the command's status.
    Run {
        /// Kernel series: 5.10, 6.1 or 6.12.
        #[arg(long)]
        kernel: String,
        /// Seconds before the guest is killed, boot included.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Download and unpack kernels ahead of time (cached; default: all).
    Fetch { kernels: Vec<String> },
}

fn main() -> ExitCode {
    // The fuzz build runs us as its rustc wrapper.
    if let Some(code) = fuzz::rustc_wrapper() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::all(),
        Cmd::Build => {
            setup::build_prerequisites()?;
            build_release()
        }
        Cmd::Run { args } => {
            setup::build_prerequisites()?;
            build_release()?;
            let args = if args.is_empty() {
                vec!["daemon".to_owned()]
            } else {
                args
            };
            let status = Command::new("target/release/conntracer")
                .args(&args)
                .status()
                .context("starting target/release/conntracer")?;
            if !status.success() {
                bail!("conntracer exited with {status}");
            }
            Ok(())
        }
        Cmd::Lab { scenario, prebuilt } => {
            if !prebuilt {
                setup::all()?;
            }
            lab::run(scenario.as_deref(), !prebuilt)
        }
        Cmd::Bench {
            soak: Some(seconds),
            ..
        } => {
            setup::all()?;
            if !soak::run(seconds, true)? {
                bail!("the soak failed (see the checks above)");
            }
            Ok(())
        }
        Cmd::Bench {
            quick,
            soak: None,
            memory_only,
        } => {
            setup::all()?;
            if !quick && !memory_only {
                setup::bench_peers()?;
            }
            bench::run(quick, memory_only)
        }
        Cmd::BenchHold(args) => bench::memory::hold(args),
        Cmd::Deploy => {
            setup::test_prerequisites()?;
            let (_, failed) = deploy::check()?;
            if failed > 0 {
                anyhow::bail!("{failed} deploy checks failed");
            }
            Ok(())
        }
        Cmd::Fuzz {
            record_corpus: true,
            ..
        } => {
            setup::test_prerequisites()?;
            fuzz::record_corpus()
        }
        Cmd::Fuzz {
            report_from_log: true,
            target,
            ..
        } => fuzz::report_from_log(target.as_deref()),
        Cmd::Fuzz { ci: true, .. } => {
            setup::build_prerequisites()?;
            let (passed, failed) = fuzz::ci()?;
            println!("fuzz: {passed} targets passed, {failed} crashed");
            if failed > 0 {
                bail!("{failed} fuzz targets crashed");
            }
            Ok(())
        }
        Cmd::Fuzz {
            target,
            runs,
            seconds,
            report,
            ..
        } => {
            setup::build_prerequisites()?;
            fuzz::run(&fuzz::Options {
                target,
                budget: fuzz::Budget { runs, seconds },
                report,
            })
        }
        Cmd::Test { no_lint, kernels } if kernels.is_empty() => test::all(!no_lint),
        Cmd::Test { kernels, .. } => vm::matrix::run(&vm::matrix::series(&kernels)?),
        Cmd::Vm {
            command:
                VmCmd::Run {
                    kernel,
                    timeout,
                    command,
                },
        } => {
            let code = vm::run_command(&kernel, &command, timeout)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Vm {
            command: VmCmd::Fetch { kernels },
        } => vm::fetch(&vm::matrix::series(&kernels)?),
    }
}

pub fn build_release() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "tracer",
        "--bin",
        "conntracer",
    ])
}

/// Runs cargo with the toolchain that runs us.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Lints the eBPF crate for the target it really builds for.
pub fn clippy_ebpf() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "clippy",
            "--package",
            "tracer-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .args(["--release", "--", "-D", "warnings"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        )
        .status()
        .context("running clippy on tracer-ebpf")?;
    if !status.success() {
        bail!("clippy found problems in tracer-ebpf ({status})");
    }
    Ok(())
}
