//! `cargo xtask bench [--quick]`: overhead, throughput and memory, side by side
//! with the tracers users know, as ratios against a baseline taken in the same
//! run, in interleaved rounds. Writes JSON and markdown to `bench/results/`.

pub(crate) mod memory;
mod report;
mod tracers;
pub(crate) mod workload;

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::lab::net::Network;
use tracers::{Running, Tracer, bpf_stats};
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
        let plan = if quick {
            Self {
                quick,
                rounds: 3,
                connect_close: 3_000,
                request_response: 8_000,
                churn_rates: vec![1_000],
                churn_seconds: 1.0,
                memory_points: vec![10_000],
                memory_only,
                tracers: vec![Tracer::None, Tracer::Trace, Tracer::Daemon],
            }
        } else {
            Self {
                quick,
                rounds: 3,
                connect_close: 10_000,
                request_response: 40_000,
                churn_rates: vec![1_000, 5_000, 20_000],
                churn_seconds: 2.0,
                memory_points: vec![10_000, 50_000, 100_000, 200_000],
                memory_only,
                tracers: vec![
                    Tracer::None,
                    Tracer::Trace,
                    Tracer::Daemon,
                    Tracer::Tcplife,
                    Tracer::Tcpstates,
                    Tracer::Bpftrace,
                ],
            }
        };
        if memory_only {
            Self { rounds: 0, ..plan }
        } else {
            plan
        }
    }
}

/// Restores `kernel.bpf_stats_enabled` on drop.
pub(crate) struct BpfStatsSwitch(String);

impl BpfStatsSwitch {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    pub(crate) fn enable() -> Result<Self> {
        let old =
            std::fs::read_to_string(Self::PATH).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(Self::PATH, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self(old.trim().to_owned()))
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

/// One measurement of one workload under one tracer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub workload: String,
    pub tracer: &'static str,
    pub round: u32,
    /// Operations per second (connections or round trips).
    pub rate: f64,
    pub tracer_cpu_seconds: f64,
    /// Lifecycle events the kernel produced (4 per connection: connect, accept, two closes).
    pub events: u64,
    /// Per program: (name, runs, total ns) during this workload.
    pub bpf: Vec<(String, u64, u64)>,
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
    let _stats = BpfStatsSwitch::enable()?;
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
        port += 10;
        Endpoints {
            client_ns: net.frontend.netns.clone(),
            server_ns: net.cart.netns.clone(),
            server: format!("{}:{port}", net.cart.ip).parse().expect("address"),
        }
    };

    let mut samples = Vec::new();
    let mut losses: Vec<Value> = Vec::new();
    for round in 0..plan.rounds {
        // Rotate the order each round so no tracer always runs first or last.
        let mut order = plan.tracers.clone();
        let shift = round as usize % order.len();
        order.rotate_left(shift);
        for tracer in order {
            eprintln!(
                "bench: round {}/{} {}",
                round + 1,
                plan.rounds,
                tracer.name()
            );
            let before_ids: Vec<u32> = bpf_stats().iter().map(|p| p.0).collect();
            let running = Running::start(tracer, &conntracer, namespace, &[])?;
            let mut made = 0u64;
            let mut measure =
                |name: String, f: &mut dyn FnMut() -> Result<(f64, u64)>| -> Result<()> {
                    let cpu0 = running.cpu_seconds();
                    let bpf0 = bpf_stats();
                    let (rate, connections) = f()?;
                    let bpf1 = bpf_stats();
                    made += connections;
                    // A few long-lived connections carry no lifecycle events to speak
                    // of: no CPU-per-event figure for them.
                    let lifecycle = connections > 100;
                    samples.push(Sample {
                        workload: name,
                        tracer: tracer.name(),
                        round,
                        rate,
                        tracer_cpu_seconds: running.cpu_seconds() - cpu0,
                        events: if lifecycle { connections * 4 } else { 0 },
                        bpf: bpf_delta(&bpf0, &bpf1, &before_ids),
                    });
                    Ok(())
                };
            let n = plan.connect_close;
            let ep = endpoints();
            measure("connect_accept_close".into(), &mut || {
                Ok((workload::connect_close(&ep, n)?, u64::from(n)))
            })?;
            let n = plan.request_response;
            let ep = endpoints();
            measure("request_response".into(), &mut || {
                Ok((workload::request_response(&ep, 4, n)?, 4))
            })?;
            for &rate in &plan.churn_rates {
                let ep = endpoints();
                let seconds = plan.churn_seconds;
                measure(format!("churn_{rate}_per_s"), &mut || {
                    let made = workload::churn(&ep, rate, seconds)?;
                    Ok((made as f64 / seconds, made))
                })?;
            }
            std::thread::sleep(Duration::from_millis(300));
            let (lost, seen) = running.stop(namespace);
            losses.push(json!({
                "tracer": tracer.name(), "round": round, "connections": made, "expected_events": made * 4,
                "events_lost": lost, "connections_seen": seen,
            }));
        }
    }

    let memory = Value::Array(memory::points(&plan.memory_points, &conntracer, &net)?);
    let decode = if plan.memory_only {
        0.0
    } else {
        decode_throughput(plan.quick).unwrap_or_else(|e| {
            eprintln!("bench: userspace throughput not measured: {e:#}");
            0.0
        })
    };
    let results = report::Results::new(&plan, samples, losses, memory, decode);
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

/// Per-program deltas, for programs loaded since `before` (the tracer's own).
fn bpf_delta(
    a: &[(u32, String, u64, u64)],
    b: &[(u32, String, u64, u64)],
    before: &[u32],
) -> Vec<(String, u64, u64)> {
    b.iter()
        .filter(|p| !before.contains(&p.0))
        .map(|(id, name, ns, cnt)| {
            let (ns0, cnt0) = a.iter().find(|p| p.0 == *id).map_or((0, 0), |p| (p.2, p.3));
            (name.clone(), cnt - cnt0, ns - ns0)
        })
        .filter(|(_, runs, _)| *runs > 0)
        .collect()
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

/// Median, min and max.
pub fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0, 0.0);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}
