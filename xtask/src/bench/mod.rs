//! `cargo xtask bench [--quick]`: overhead, throughput and memory, side by side
//! with the tracers users know, as ratios against a baseline taken in the same
//! run, in paired rounds (see `paired`). Writes JSON, markdown and PNG charts
//! to `bench/results/`.

pub(crate) mod memory;
mod paired;
pub(crate) mod plot;
mod report;
mod targets;
mod tracers;
pub(crate) mod workload;

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::lab::net::Network;
use tracers::Tracer;
use workload::Endpoints;

pub struct Plan {
    pub quick: bool,
    pub rounds: u32,
    pub connect_close: u32,
    pub request_response: u32,
    pub churn_rates: Vec<u32>,
    pub churn_seconds: f64,
    /// Tracked sockets (two per connection) at which daemon memory is measured.
    pub memory_points: Vec<u32>,
    /// Only the memory points, no rounds.
    pub memory_only: bool,
    pub tracers: Vec<Tracer>,
}

impl Plan {
    fn new(quick: bool, memory_only: bool) -> Self {
        let mut plan = if quick {
            Self {
                quick,
                rounds: 3,
                connect_close: 3_000,
                request_response: 20_000,
                churn_rates: vec![1_000],
                churn_seconds: 1.0,
                memory_points: vec![10_000],
                memory_only,
                tracers: vec![Tracer::Trace, Tracer::Daemon],
            }
        } else {
            Self {
                quick,
                rounds: 10,
                connect_close: 10_000,
                // Long enough that tcplife, which does not hook the data
                // path, measures 1.00 ± 0.02 here (the run says if not).
                request_response: 400_000,
                churn_rates: vec![1_000, 5_000, 20_000],
                churn_seconds: 2.0,
                memory_points: vec![10_000, 50_000, 100_000, 200_000],
                memory_only,
                tracers: vec![
                    Tracer::Trace,
                    Tracer::Daemon,
                    Tracer::Tcplife,
                    Tracer::Tcpstates,
                    Tracer::Bpftrace,
                ],
            }
        };
        if memory_only {
            plan.rounds = 0;
        }
        // Hidden, for shorter checks of the bench itself.
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        if let Some(rounds) = env("CONNTRACER_BENCH_ROUNDS") {
            plan.rounds = rounds;
        }
        if let Some(n) = env("CONNTRACER_BENCH_REQUESTS") {
            plan.request_response = n;
        }
        if let Ok(points) = std::env::var("CONNTRACER_BENCH_MEMORY_POINTS") {
            plan.memory_points = points.split(',').filter_map(|p| p.parse().ok()).collect();
        }
        if let Ok(only) = std::env::var("CONNTRACER_BENCH_TRACERS") {
            plan.tracers
                .retain(|t| only.split(',').any(|o| t.name().contains(o)));
        }
        plan
    }
}

/// Restores `kernel.bpf_stats_enabled` on drop.
pub(crate) struct BpfStatsSwitch(String);

impl BpfStatsSwitch {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    pub(crate) fn enable() -> Result<Self> {
        let switch = Self::keep()?;
        switch.set(true)?;
        Ok(switch)
    }

    /// Remembers the setting, to restore it on drop.
    pub(crate) fn keep() -> Result<Self> {
        let old =
            std::fs::read_to_string(Self::PATH).context("reading kernel.bpf_stats_enabled")?;
        Ok(Self(old.trim().to_owned()))
    }

    /// Stats cost two clock reads per program run, charged to the tracer:
    /// on for the stats round only.
    pub(crate) fn set(&self, on: bool) -> Result<()> {
        std::fs::write(Self::PATH, if on { "1" } else { "0" })
            .context("setting kernel.bpf_stats_enabled")
    }
}

impl Drop for BpfStatsSwitch {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// Keeps the CPUs out of deep idle states while held (PM QoS through
/// `/dev/cpu_dma_latency`). On a VM with the haltpoll governor, a waking CPU
/// otherwise costs more than the work measured, and the run with the least
/// background activity (the baseline) looks slowest.
struct CpuLatencyHold {
    _held: Option<std::fs::File>,
}

impl CpuLatencyHold {
    fn hold() -> Self {
        use std::io::Write as _;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .ok()
            .and_then(|mut f| {
                f.write_all(&0i32.to_ne_bytes()).ok()?;
                Some(f)
            });
        if file.is_none() {
            eprintln!(
                "bench: cannot hold /dev/cpu_dma_latency at 0; idle-state wake-ups will add noise"
            );
        }
        Self { _held: file }
    }
}

pub fn run(quick: bool, memory_only: bool) -> Result<()> {
    let plan = Plan::new(quick, memory_only);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace")?
        .to_path_buf();
    crate::build_release()?;
    let conntracer = workspace.join("target/release/conntracer");
    raise_fd_limit();
    let stats = BpfStatsSwitch::keep()?;
    let _latency = CpuLatencyHold::hold();
    let net = Network::new("bench", 250)?;
    for pod in [&net.frontend.netns, &net.cart.netns] {
        crate::lab::net::netns_exec(
            pod,
            &[
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_local_port_range=10000 65000",
            ],
        )?;
        crate::lab::net::netns_exec(pod, &["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"])?;
        crate::lab::net::netns_exec(pod, &["sysctl", "-q", "-w", "net.core.somaxconn=8192"])?;
    }
    let namespace = "bench";
    let mut port = 20_000u16;
    let mut endpoints = || {
        // Ten ports per run (idle connections use a few); wrap before the top.
        port = if port >= 60_000 { 20_010 } else { port + 10 };
        Endpoints {
            client_ns: net.frontend.netns.clone(),
            server_ns: net.cart.netns.clone(),
            server: format!("{}:{port}", net.cart.ip).parse().expect("address"),
        }
    };

    let (pairs, losses) = paired::run(&plan, &stats, &conntracer, namespace, &mut endpoints)?;

    let memory = Value::Array(memory::points(&plan.memory_points, &conntracer, &net)?);
    let decode = if plan.memory_only {
        0.0
    } else {
        decode_throughput(plan.quick).unwrap_or_else(|e| {
            eprintln!("bench: userspace throughput not measured: {e:#}");
            0.0
        })
    };
    let results = report::Results::new(&plan, pairs, losses, memory, decode);
    let dir = workspace.join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let mode = match (plan.memory_only, plan.quick) {
        (true, _) => "memory",
        (false, true) => "quick",
        (false, false) => "full",
    };
    let stem = format!("{}-{mode}", today());
    let json_path = dir.join(format!("{stem}.json"));
    let md_path = dir.join(format!("{stem}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&results.json())?)?;
    let markdown = results.markdown();
    std::fs::write(&md_path, &markdown)?;
    println!("{markdown}");
    println!(
        "bench: wrote {} and {}",
        rel(&json_path, &workspace),
        rel(&md_path, &workspace)
    );
    // Charts are a view of the results above: failing to draw them is said,
    // not fatal.
    match results.plots(&dir, &stem) {
        Ok(paths) => {
            for p in paths {
                println!("bench: wrote {}", rel(&p, &workspace));
            }
        }
        Err(e) => eprintln!("bench: charts not drawn: {e:#}"),
    }
    Ok(())
}

fn rel(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn today() -> String {
    let out = std::process::Command::new("date").arg("+%Y-%m-%d").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "today".into())
}

fn decode_throughput(quick: bool) -> Result<f64> {
    let n = if quick { "300000" } else { "3000000" };
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "tracer",
            "--example",
            "decode_throughput",
            n,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("events_per_second "))
        .and_then(|v| v.parse().ok())
        .context("decode_throughput printed no rate")
}

/// Raises the open-file limit as far as allowed and returns it. Without
/// CAP_SYS_RESOURCE the hard limit is the ceiling.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with valid structs.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}
