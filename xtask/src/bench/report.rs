//! Summaries of a bench run: JSON for machines, markdown for people, with
//! the targets of the bench's issue reported (not enforced).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Result;
use serde_json::{Value, json};

use super::{Plan, paired::Pair, plot};

/// Workloads on which tcplife, which hooks only state changes, must cost
/// nothing: its ratio there gauges the noise of the run.
const NOISE_GAUGED: &[&str] = &["request_response"];
/// How far from 1.00 tcplife's median ratio may be for a gauged workload to be judged.
const NOISE_BAND: f64 = 0.02;

/// Where a BPF program runs: once per connection state change, or per
/// message / packet. Names change with the eBPF crate (and the kernel cuts
/// them at 15 characters): edit this table, not the callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Lifecycle,
    DataPath,
}

pub fn classify(program: &str) -> Hook {
    const DATA_PATH: &[&str] = &[
        "send", "recv", "egress", "ingress", "http", "dns", "skb", "msg", "data",
    ];
    if DATA_PATH.iter().any(|d| program.contains(d)) {
        Hook::DataPath
    } else {
        Hook::Lifecycle
    }
}

pub struct Results {
    quick: bool,
    rounds: u32,
    tracers: Vec<&'static str>,
    workloads: Vec<String>,
    pairs: Vec<Pair>,
    losses: Vec<Value>,
    /// Memory points: [{connections, tracked, daemon_rss_mib, map_mib, ...}].
    memory: Value,
    decode_events_per_second: f64,
}

/// Median, quartiles and extremes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Self> {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            // Linear between closest ranks.
            let at = p * (v.len() - 1) as f64;
            let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
        };
        (!v.is_empty()).then(|| Self {
            median: q(0.5),
            q1: q(0.25),
            q3: q(0.75),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

pub struct Cell {
    /// Per pair: untraced rate / traced rate (1.00 = free).
    pub ratio: Spread,
    pub baseline: f64,
    pub traced: f64,
    pub op: &'static str,
    /// Tracer CPU per operation, µs: its process (user + system), BPF run time.
    pub process_us: f64,
    pub bpf_us: f64,
}

/// Whether a workload's ratios can be told apart from noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Not gauged (tcplife hooks it, or paced load).
    Ungauged,
    /// No tcplife in this run to gauge it.
    NoGauge,
    Judged(f64),
    TooNoisy(f64),
}

impl Results {
    pub fn new(
        plan: &Plan,
        pairs: Vec<Pair>,
        losses: Vec<Value>,
        memory: Value,
        decode: f64,
    ) -> Self {
        let mut workloads: Vec<String> = Vec::new();
        for p in &pairs {
            if !workloads.contains(&p.workload) {
                workloads.push(p.workload.clone());
            }
        }
        Self {
            quick: plan.quick,
            rounds: plan.rounds,
            tracers: plan.tracers.iter().map(|t| t.name()).collect(),
            workloads,
            pairs,
            losses,
            memory,
            decode_events_per_second: decode,
        }
    }

    /// The pairs of one workload and tracer: the timed rounds' (`stats` false)
    /// or the stats round's.
    fn of<'a>(
        &'a self,
        workload: &'a str,
        tracer: &'a str,
        stats: bool,
    ) -> impl Iterator<Item = &'a Pair> {
        self.pairs
            .iter()
            .filter(move |p| p.workload == workload && p.tracer == tracer && p.bpf_stats == stats)
    }

    pub fn cell(&self, workload: &str, tracer: &str) -> Option<Cell> {
        let pairs: Vec<&Pair> = self.of(workload, tracer, false).collect();
        let first = pairs.first()?;
        let median = |f: &dyn Fn(&Pair) -> f64| {
            Spread::of(pairs.iter().map(|p| f(p)).collect()).map_or(0.0, |s| s.median)
        };
        let ops = pairs.iter().map(|p| p.ops).sum::<u64>().max(1) as f64;
        let cpu: f64 = pairs.iter().map(|p| p.tracer_cpu_seconds).sum();
        // BPF time only from the stats round, per its own operations.
        let stats_round: Vec<&Pair> = self.of(workload, tracer, true).collect();
        let stats_ops = stats_round.iter().map(|p| p.ops).sum::<u64>().max(1) as f64;
        let bpf_ns: u64 = stats_round
            .iter()
            .flat_map(|p| p.bpf.iter().map(|b| b.2))
            .sum();
        Some(Cell {
            ratio: Spread::of(pairs.iter().map(|p| p.ratio()).collect())?,
            baseline: median(&|p| p.baseline_rate),
            traced: median(&|p| p.rate),
            op: first.op,
            process_us: cpu / ops * 1e6,
            bpf_us: bpf_ns as f64 / stats_ops / 1e3,
        })
    }

    pub fn verdict(&self, workload: &str) -> Verdict {
        if !NOISE_GAUGED.contains(&workload) {
            return Verdict::Ungauged;
        }
        match self.cell(workload, "tcplife") {
            None => Verdict::NoGauge,
            Some(c) if (c.ratio.median - 1.0).abs() <= NOISE_BAND => {
                Verdict::Judged(c.ratio.median)
            }
            Some(c) => Verdict::TooNoisy(c.ratio.median),
        }
    }

    /// (program, runs, average ns) per tracer and workload, in the stats round.
    pub fn programs(&self, workload: &str, tracer: &str) -> Vec<(String, u64, f64)> {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for p in self.of(workload, tracer, true) {
            for (name, runs, ns) in &p.bpf {
                let e = by.entry(name.clone()).or_default();
                e.0 += runs;
                e.1 += ns;
            }
        }
        by.into_iter()
            .map(|(n, (runs, ns))| (n, runs, ns as f64 / runs.max(1) as f64))
            .collect()
    }

    /// (program, runs, average ns) per tracer over every workload.
    pub fn programs_all(&self, tracer: &str) -> Vec<(String, u64, f64)> {
        let mut by: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for w in &self.workloads {
            for (name, runs, avg) in self.programs(w, tracer) {
                let e = by.entry(name).or_default();
                e.0 += runs;
                e.1 += avg * runs as f64;
            }
        }
        by.into_iter()
            .map(|(n, (runs, ns))| (n, runs, ns / runs.max(1) as f64))
            .collect()
    }

    /// (connections, daemon RSS MiB, BPF map MiB) at each size measured.
    pub fn memory_points(&self) -> Vec<(f64, f64, f64)> {
        let mut points: Vec<(f64, f64, f64)> = self
            .memory
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some((
                    m["tracked"].as_f64()?,
                    m["daemon_rss_mib"].as_f64()?,
                    m["map_mib"].as_f64().unwrap_or(0.0),
                ))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points
    }

    pub fn json(&self) -> Value {
        let mut workloads = serde_json::Map::new();
        for w in &self.workloads {
            let mut per = serde_json::Map::new();
            for t in &self.tracers {
                let Some(c) = self.cell(w, t) else { continue };
                let programs: Vec<Value> = self
                    .programs(w, t)
                    .into_iter()
                    .map(|(n, runs, avg)| json!({"program": n, "runs": runs, "avg_ns": avg}))
                    .collect();
                per.insert(
                    (*t).to_owned(),
                    json!({
                        "ratio": c.ratio,
                        "baseline_median_per_s": c.baseline, "traced_median_per_s": c.traced,
                        "op": c.op,
                        "tracer_cpu_us_per_op": {"process": c.process_us, "bpf": c.bpf_us, "total": c.process_us + c.bpf_us},
                        "bpf_programs": programs,
                    }),
                );
            }
            let verdict = match self.verdict(w) {
                Verdict::Ungauged => json!("not gauged"),
                Verdict::NoGauge => json!("no tcplife in this run"),
                Verdict::Judged(r) => json!({"judged": true, "tcplife_median_ratio": r}),
                Verdict::TooNoisy(r) => json!({"judged": false, "tcplife_median_ratio": r}),
            };
            workloads.insert(w.clone(), json!({"noise": verdict, "tracers": per}));
        }
        json!({
            "date": super::today(),
            "machine": machine(),
            "mode": if self.quick { "quick" } else { "full" },
            "rounds": self.rounds,
            "noise_band": NOISE_BAND,
            "workloads": workloads,
            "sessions": self.losses,
            "memory": self.memory,
            "userspace_decode_events_per_second_one_core": self.decode_events_per_second,
            "pairs": self.pairs,
        })
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = machine();
        let _ = writeln!(
            out,
            "# conntracer bench ({}), {}\n\nMachine: kernel {}, {} CPUs, {} GiB; commit {}. {} paired rounds: in each, for each tracer (order rotated per round), every workload runs untraced and traced back to back (which goes first alternates); ratio = untraced rate / traced rate of the pair (1.00 = no cost), median with interquartile range and min–max over the rounds. Tracer start and stop are outside the timed part. The timed rounds run with kernel.bpf_stats_enabled off (its two clock reads per program run would be charged to the tracer); one more round with it on gives the BPF run times and the BPF part of the tracer's CPU, and no ratio. A workload that tcplife does not hook ({}) is judged only if tcplife's median ratio on it is within 1.00 ± {NOISE_BAND}.\n",
            if self.quick { "quick" } else { "full" },
            super::today(),
            m["kernel"].as_str().unwrap_or(""),
            m["cpus"],
            m["memory_gib"],
            m["commit"].as_str().unwrap_or("unknown"),
            self.rounds,
            NOISE_GAUGED.join(", "),
        );
        let _ = writeln!(out, "## Throughput and overhead\n");
        let _ = writeln!(
            out,
            "| workload | tracer | untraced /s | traced /s | ratio (median) | IQR | min–max | tracer CPU µs per op: process + BPF = total |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
        for w in &self.workloads {
            let verdict = self.verdict(w);
            for t in &self.tracers {
                let Some(c) = self.cell(w, t) else { continue };
                let r = c.ratio;
                let ratios = match verdict {
                    Verdict::TooNoisy(g) => {
                        format!("too noisy to judge (tcplife ×{g:.3}) | | ")
                    }
                    _ => format!(
                        "{:.3} | {:.3}–{:.3} | {:.3}–{:.3}",
                        r.median, r.q1, r.q3, r.min, r.max
                    ),
                };
                let _ = writeln!(
                    out,
                    "| {w} | {t} | {:.0} | {:.0} | {ratios} | {:.2} + {:.2} = {:.2} per {} |",
                    c.baseline,
                    c.traced,
                    c.process_us,
                    c.bpf_us,
                    c.process_us + c.bpf_us,
                    c.op,
                );
            }
            match verdict {
                Verdict::Judged(g) => {
                    let _ = writeln!(
                        out,
                        "| {w} | (noise gauge) | | | tcplife ×{g:.3}: within ±{NOISE_BAND}, judged | | | |"
                    );
                }
                Verdict::NoGauge => {
                    let _ = writeln!(
                        out,
                        "| {w} | (noise gauge) | | | no tcplife in this run: not gauged | | | |"
                    );
                }
                _ => {}
            }
        }
        let _ = writeln!(
            out,
            "\n## BPF run time per program (kernel.bpf_stats_enabled)\n"
        );
        let _ = writeln!(
            out,
            "| workload | tracer | program | kind | runs | avg ns |"
        );
        let _ = writeln!(out, "|---|---|---|---|---:|---:|");
        for w in &self.workloads {
            for t in &self.tracers {
                for (p, runs, avg) in self.programs(w, t) {
                    let kind = match classify(&p) {
                        Hook::Lifecycle => "lifecycle",
                        Hook::DataPath => "data path",
                    };
                    let _ = writeln!(out, "| {w} | {t} | {p} | {kind} | {runs} | {avg:.0} |");
                }
            }
        }
        out.push_str(&self.losses_md());
        out.push_str(&self.memory_table());
        let _ = writeln!(
            out,
            "Userspace decode + connection table + analysis, one core: {:.0} events/s.\n",
            self.decode_events_per_second
        );
        out.push_str(&super::targets::section(self));
        out
    }

    /// Losses summed per tracer over its sessions (one per run of traced
    /// workloads in a row; each session in the JSON).
    fn losses_md(&self) -> String {
        let mut out = String::from(
            "\n## Events lost (conntracer, summed over its sessions)\n\n| tracer | sessions | connections made | connections seen opened | expected events | lost (own counter) |\n|---|---:|---:|---:|---:|---:|\n",
        );
        for t in self.tracers.iter().filter(|t| t.starts_with("conntracer")) {
            let of: Vec<&Value> = self.losses.iter().filter(|l| l["tracer"] == *t).collect();
            let sum = |k: &str| -> Option<u64> { of.iter().map(|l| l[k].as_u64()).sum() };
            let show = |v: Option<u64>| v.map_or("—".into(), |v| v.to_string());
            let _ = writeln!(
                out,
                "| {t} | {} | {} | {} | {} | {} |",
                of.len(),
                show(sum("connections")),
                show(sum("connections_seen")),
                show(sum("expected_events")),
                show(sum("events_lost")),
            );
        }
        out
    }

    fn memory_table(&self) -> String {
        let mut out = String::from(
            "\n## Memory against open connections (conntracer daemon)\n\nConnections held by child processes (≤ 9 000 sockets each), clients and servers in two network namespaces; both ends of each connection are tracked sockets (the daemon's `conntracer_tracked_connections`). One daemon per row, `--max-connections` as shown; connections opened at 10 000/s, RSS read 11 s after the daemon counted them (past one audit round); BPF maps = fdinfo `memlock` of its maps.\n\n| connections | tracked sockets | daemon RSS MiB | RSS before MiB | BPF maps MiB | --max-connections | time to open s | events lost |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for p in self.memory.as_array().into_iter().flatten() {
            let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} |",
                p["connections"],
                f("tracked"),
                f("daemon_rss_mib"),
                f("daemon_rss_mib_idle"),
                f("map_mib"),
                p["max_connections"],
                f("open_seconds"),
                p["events_lost"],
            );
        }
        out.push('\n');
        out
    }

    pub fn losses(&self) -> &[Value] {
        &self.losses
    }

    pub fn workloads(&self) -> &[String] {
        &self.workloads
    }

    pub fn decode_events_per_second(&self) -> f64 {
        self.decode_events_per_second
    }

    /// Writes the PNG charts next to the results; returns their paths.
    pub fn plots(&self, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
        plot::load_font()?;
        let mut written = Vec::new();
        let groups: Vec<plot::Group> = self
            .workloads
            .iter()
            .map(|w| plot::Group {
                label: w.clone(),
                note: match self.verdict(w) {
                    Verdict::TooNoisy(g) => Some(format!("too noisy to judge (tcplife ×{g:.3})")),
                    _ => None,
                },
                bars: self
                    .tracers
                    .iter()
                    .filter_map(|t| Some((*t, self.cell(w, t)?.ratio)))
                    .collect(),
            })
            .collect();
        let path = dir.join(format!("{stem}-overhead.png"));
        plot::overhead(&path, &groups, &self.tracers)?;
        written.push(path);
        let bars: Vec<plot::ProgramBar> = self
            .tracers
            .iter()
            .flat_map(|t| {
                self.programs_all(t)
                    .into_iter()
                    .map(move |(p, runs, ns)| plot::ProgramBar {
                        label: format!("{t}: {p}"),
                        ns,
                        runs,
                        data_path: classify(&p) == Hook::DataPath,
                    })
            })
            .collect();
        if !bars.is_empty() {
            let path = dir.join(format!("{stem}-bpf.png"));
            plot::bpf(&path, &bars)?;
            written.push(path);
        }
        let points = self.memory_points();
        if points.len() >= 2 {
            let path = dir.join(format!("{stem}-memory.png"));
            plot::memory(&path, &points)?;
            written.push(path);
        }
        Ok(written)
    }
}

fn machine() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    json!({
        "kernel": kernel.trim(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": (mem_kb / 1024.0 / 1024.0).round(),
        "commit": commit(),
    })
}

/// The commit measured, `+dirty` when the tree had changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+dirty") } else { head }
}
