//! Paired rounds: each workload runs untraced and traced back to back, and
//! the pair gives one ratio. Pairs share the machine's state of the moment
//! (other load, caches, frequency), which a median over separate runs does
//! not: that drift is what made earlier ratios noise-bound.

use std::{path::Path, time::Duration};

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Plan,
    tracers::{Running, Tracer, bpf_stats},
    workload::{self, Endpoints},
};

/// One workload, untraced and traced back to back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pair {
    pub workload: String,
    pub tracer: &'static str,
    pub round: u32,
    /// Which of the two ran first (they alternate).
    pub traced_first: bool,
    /// Operations per second (connections or round trips), no tracer loaded.
    pub baseline_rate: f64,
    /// The same, with the tracer loaded.
    pub rate: f64,
    /// What one operation is: "connection" or "round trip".
    pub op: &'static str,
    /// Operations of the traced run.
    pub ops: u64,
    /// Connections of the traced run.
    pub connections: u64,
    /// User + system CPU of the tracer's process during the traced run.
    pub tracer_cpu_seconds: f64,
    /// Per program: (name, runs, total ns) during the traced run.
    pub bpf: Vec<(String, u64, u64)>,
    /// Run with `kernel.bpf_stats_enabled` on: the stats round, whose BPF
    /// figures are read and whose ratio is not (the stats' own clock reads
    /// would be charged to the tracer).
    pub bpf_stats: bool,
}

impl Pair {
    /// How many times slower traced than untraced (1.00 = free).
    pub fn ratio(&self) -> f64 {
        self.baseline_rate / self.rate
    }
}

/// What a workload run gives: rate, operations, connections.
type Outcome = (f64, u64, u64);
type Run = Box<dyn Fn(&Endpoints) -> Result<Outcome>>;

struct Workload {
    name: String,
    op: &'static str,
    run: Run,
}

fn workloads(plan: &Plan) -> Vec<Workload> {
    let mut all = Vec::new();
    let n = plan.connect_close;
    all.push(Workload {
        name: "connect_accept_close".into(),
        op: "connection",
        run: Box::new(move |ep| {
            let rate = workload::connect_close(ep, n)?;
            Ok((rate, u64::from(n), u64::from(n)))
        }),
    });
    let n = plan.request_response;
    all.push(Workload {
        name: "request_response".into(),
        op: "round trip",
        run: Box::new(move |ep| {
            let rate = workload::request_response(ep, 4, n)?;
            Ok((rate, u64::from(n / 4 * 4), 4))
        }),
    });
    for &rate in &plan.churn_rates {
        let seconds = plan.churn_seconds;
        all.push(Workload {
            name: format!("churn_{rate}_per_s"),
            op: "connection",
            run: Box::new(move |ep| {
                let made = workload::churn(ep, rate, seconds)?;
                Ok((made as f64 / seconds, made, made))
            }),
        });
    }
    // Hidden, for tuning runs: only the workloads whose name contains this.
    if let Ok(only) = std::env::var("CONNTRACER_BENCH_WORKLOADS") {
        all.retain(|w| only.split(',').any(|o| w.name.contains(o)));
    }
    all
}

/// A tracer loaded for one or more traced runs in a row.
struct Session {
    running: Running,
    before_ids: Vec<u32>,
    connections: u64,
}

/// Runs every round, then the stats round; returns the pairs and one loss
/// record per tracer session.
pub fn run(
    plan: &Plan,
    stats: &super::BpfStatsSwitch,
    conntracer: &Path,
    namespace: &str,
    endpoints: &mut dyn FnMut() -> Endpoints,
) -> Result<(Vec<Pair>, Vec<Value>)> {
    let workloads = workloads(plan);
    let mut pairs = Vec::new();
    let mut sessions = Vec::new();
    // The timed rounds with stats off, then one with them on.
    let rounds = if plan.rounds == 0 { 0 } else { plan.rounds + 1 };
    for round in 0..rounds {
        let bpf_stats = round == plan.rounds;
        stats.set(bpf_stats)?;
        // Rotate the order each round so no tracer always runs first or last.
        let mut order = plan.tracers.clone();
        let shift = round as usize % order.len().max(1);
        order.rotate_left(shift);
        for tracer in order {
            if bpf_stats {
                eprintln!("bench: stats round, {}", tracer.name());
            } else {
                eprintln!(
                    "bench: round {}/{} {}",
                    round + 1,
                    plan.rounds,
                    tracer.name()
                );
            }
            let mut session: Option<Session> = None;
            for (i, w) in workloads.iter().enumerate() {
                // Alternate per workload and per round. Consecutive workloads
                // then share a load: base, [start] traced, traced, [stop] base,
                // base, ... so the tracer starts about once per two pairs.
                let traced_first = (i % 2 == 0) == (round % 2 == 0);
                let mut base = 0.0;
                let mut traced = None;
                for traced_now in [traced_first, !traced_first] {
                    let ep = endpoints();
                    if traced_now {
                        let s = match session.take() {
                            Some(s) => s,
                            None => start(tracer, conntracer, namespace)?,
                        };
                        let s = session.insert(s);
                        traced = Some(measure_traced(s, w, &ep)?);
                    } else {
                        if let Some(s) = session.take() {
                            sessions.push(stop(s, tracer, round, namespace));
                        }
                        base = (w.run)(&ep)?.0;
                    }
                }
                let (rate, ops, connections, cpu, bpf) = traced.expect("traced run");
                pairs.push(Pair {
                    workload: w.name.clone(),
                    tracer: tracer.name(),
                    round,
                    traced_first,
                    baseline_rate: base,
                    rate,
                    op: w.op,
                    ops,
                    connections,
                    tracer_cpu_seconds: cpu,
                    bpf,
                    bpf_stats,
                });
            }
            if let Some(s) = session.take() {
                sessions.push(stop(s, tracer, round, namespace));
            }
        }
    }
    Ok((pairs, sessions))
}

fn start(tracer: Tracer, conntracer: &Path, namespace: &str) -> Result<Session> {
    let before_ids = bpf_stats().iter().map(|p| p.0).collect();
    Ok(Session {
        running: Running::start(tracer, conntracer, namespace, &[])?,
        before_ids,
        connections: 0,
    })
}

type Traced = (f64, u64, u64, f64, Vec<(String, u64, u64)>);

fn measure_traced(s: &mut Session, w: &Workload, ep: &Endpoints) -> Result<Traced> {
    let cpu0 = s.running.cpu_seconds();
    let bpf0 = bpf_stats();
    let profile = Profile::start(s.running.tracer, &w.name);
    let (rate, ops, connections) = (w.run)(ep)?;
    drop(profile);
    // Outside the timed part: let the tracer drain what the run produced, so
    // its CPU lands on this run and not on the next.
    std::thread::sleep(Duration::from_millis(100));
    let bpf1 = bpf_stats();
    let cpu = s.running.cpu_seconds() - cpu0;
    s.connections += connections;
    Ok((
        rate,
        ops,
        connections,
        cpu,
        bpf_delta(&bpf0, &bpf1, &s.before_ids),
    ))
}

fn stop(s: Session, tracer: Tracer, round: u32, namespace: &str) -> Value {
    std::thread::sleep(Duration::from_millis(300));
    let made = s.connections;
    let (lost, seen) = s.running.stop(namespace);
    json!({
        "tracer": tracer.name(), "round": round, "connections": made, "expected_events": made * 4,
        "events_lost": lost, "connections_seen": seen,
    })
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

/// Hidden, for finding what bounds the cost: with `CONNTRACER_BENCH_PERF=DIR`,
/// the first traced run of each workload and tracer is recorded whole-system
/// by `perf record -a -g` into `DIR/TRACER-WORKLOAD.data`.
struct Profile(Option<std::process::Child>);

impl Profile {
    fn start(tracer: Tracer, workload: &str) -> Self {
        let Ok(dir) = std::env::var("CONNTRACER_BENCH_PERF") else {
            return Self(None);
        };
        let name = tracer.name().replace(' ', "-");
        let path = Path::new(&dir).join(format!("{name}-{workload}.data"));
        if path.exists() {
            return Self(None);
        }
        let child = std::process::Command::new("perf")
            .args(["record", "-a", "-g", "-q", "-o"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        // perf needs a moment to open its events on every CPU.
        std::thread::sleep(Duration::from_millis(500));
        Self(child)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill(2) on our own child; SIGINT makes perf write its file.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}
