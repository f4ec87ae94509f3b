//! Summaries of a bench run: JSON for machines, markdown for people, with
//! the targets of the bench's issue reported (not enforced).

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::{Value, json};

use super::{Plan, Sample, spread};

pub struct Results {
    quick: bool,
    rounds: u32,
    tracers: Vec<&'static str>,
    workloads: Vec<String>,
    samples: Vec<Sample>,
    losses: Vec<Value>,
    /// Memory points: [{connections, tracked, daemon_rss_mib, map_mib, ...}].
    memory: Value,
    decode_events_per_second: f64,
}

struct Cell {
    median: f64,
    min: f64,
    max: f64,
    /// Baseline median / this median: how many times slower (1.00 = free).
    overhead: Option<f64>,
    cpu_per_million: Option<f64>,
}

impl Results {
    pub fn new(
        plan: &Plan,
        samples: Vec<Sample>,
        losses: Vec<Value>,
        memory: Value,
        decode: f64,
    ) -> Self {
        let mut workloads: Vec<String> = Vec::new();
        for s in &samples {
            if !workloads.contains(&s.workload) {
                workloads.push(s.workload.clone());
            }
        }
        Self {
            quick: plan.quick,
            rounds: plan.rounds,
            tracers: plan.tracers.iter().map(|t| t.name()).collect(),
            workloads,
            samples,
            losses,
            memory,
            decode_events_per_second: decode,
        }
    }

    fn cell<'a>(&'a self, workload: &'a str, tracer: &'a str) -> Option<Cell> {
        let of = |t: &'a str| {
            self.samples
                .iter()
                .filter(move |s| s.workload == workload && s.tracer == t)
        };
        let mut rates: Vec<f64> = of(tracer).map(|s| s.rate).collect();
        if rates.is_empty() {
            return None;
        }
        let (median, min, max) = spread(&mut rates);
        let mut base: Vec<f64> = of("baseline").map(|s| s.rate).collect();
        let (base_median, _, _) = spread(&mut base);
        let events: u64 = of(tracer).map(|s| s.events).sum();
        let cpu: f64 = of(tracer).map(|s| s.tracer_cpu_seconds).sum();
        Some(Cell {
            median,
            min,
            max,
            overhead: (tracer != "baseline" && median > 0.0).then(|| base_median / median),
            cpu_per_million: (tracer != "baseline" && events > 0)
                .then(|| cpu / events as f64 * 1e6),
        })
    }

    /// (program, runs, average ns) per tracer and workload, over all rounds.
    fn programs(&self, workload: &str, tracer: &str) -> Vec<(String, u64, f64)> {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.workload == workload && s.tracer == tracer)
        {
            for (name, runs, ns) in &s.bpf {
                let e = by.entry(name.clone()).or_default();
                e.0 += runs;
                e.1 += ns;
            }
        }
        by.into_iter()
            .map(|(n, (runs, ns))| (n, runs, ns as f64 / runs.max(1) as f64))
            .collect()
    }

    pub fn json(&self) -> Value {
        let mut workloads = serde_json::Map::new();
        for w in &self.workloads {
            let mut per = serde_json::Map::new();
            for t in &self.tracers {
                if let Some(c) = self.cell(w, t) {
                    let programs: Vec<Value> = self
                        .programs(w, t)
                        .into_iter()
                        .map(|(n, runs, avg)| json!({"program": n, "runs": runs, "avg_ns": avg}))
                        .collect();
                    per.insert(
                        (*t).to_owned(),
                        json!({
                            "median_per_s": c.median, "min_per_s": c.min, "max_per_s": c.max,
                            "overhead_ratio": c.overhead, "cpu_seconds_per_million_events": c.cpu_per_million,
                            "bpf_programs": programs,
                        }),
                    );
                }
            }
            workloads.insert(w.clone(), Value::Object(per));
        }
        json!({
            "date": super::today(),
            "machine": machine(),
            "mode": if self.quick { "quick" } else { "full" },
            "rounds": self.rounds,
            "workloads": workloads,
            "sessions": self.losses,
            "memory": self.memory,
            "userspace_decode_events_per_second_one_core": self.decode_events_per_second,
            "samples": self.samples,
        })
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = machine();
        let _ = writeln!(
            out,
            "# conntracer bench ({}), {}\n\nMachine: kernel {}, {} CPUs, {} GiB. {} interleaved rounds (tracer order rotated each round); rates are medians with min–max; overhead = baseline median / tracer median (1.00 = no cost).\n",
            if self.quick { "quick" } else { "full" },
            super::today(),
            m["kernel"].as_str().unwrap_or(""),
            m["cpus"],
            m["memory_gib"],
            self.rounds
        );
        let _ = writeln!(out, "## Throughput and overhead\n");
        let _ = writeln!(
            out,
            "| workload | tracer | median /s | min–max | overhead | tracer CPU s / 1M events |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
        for w in &self.workloads {
            for t in &self.tracers {
                if let Some(c) = self.cell(w, t) {
                    let _ = writeln!(
                        out,
                        "| {w} | {t} | {:.0} | {:.0}–{:.0} | {} | {} |",
                        c.median,
                        c.min,
                        c.max,
                        c.overhead.map_or("—".into(), |o| format!("{o:.3}")),
                        c.cpu_per_million.map_or("—".into(), |v| format!("{v:.2}")),
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\n## BPF run time per program (kernel.bpf_stats_enabled)\n"
        );
        let _ = writeln!(out, "| workload | tracer | program | runs | avg ns |");
        let _ = writeln!(out, "|---|---|---|---:|---:|");
        for w in &self.workloads {
            for t in self.tracers.iter().filter(|t| **t != "baseline") {
                for (p, runs, avg) in self.programs(w, t) {
                    let _ = writeln!(out, "| {w} | {t} | {p} | {runs} | {avg:.0} |");
                }
            }
        }
        let _ = writeln!(
            out,
            "\n## Events lost (per tracer session, against connections made)\n"
        );
        let _ = writeln!(
            out,
            "| tracer | round | connections made | connections seen opened | expected events | lost (own counter) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for l in self.losses.iter().filter(|l| {
            l["tracer"]
                .as_str()
                .is_some_and(|t| t.starts_with("conntracer"))
        }) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                l["tracer"].as_str().unwrap_or(""),
                l["round"],
                l["connections"],
                l["connections_seen"],
                l["expected_events"],
                l["events_lost"]
            );
        }
        out.push_str(&self.memory_table());
        let _ = writeln!(
            out,
            "Userspace decode + connection table + analysis, one core: {:.0} events/s.\n",
            self.decode_events_per_second
        );
        out.push_str(&self.targets());
        out
    }

    fn targets(&self) -> String {
        let mut out = String::from("## Targets (reported, not enforced)\n\n");
        let line = |out: &mut String,
                    what: String,
                    value: f64,
                    target: f64,
                    lower_is_better: bool,
                    unit: &str| {
            let met = if lower_is_better {
                value <= target
            } else {
                value >= target
            };
            let by = if lower_is_better {
                value - target
            } else {
                target - value
            };
            let verdict = if met {
                "met".to_owned()
            } else {
                format!("missed by {by:.3}{unit}")
            };
            let bound = if lower_is_better { "≤ " } else { "≥ " };
            let target = if target.fract() == 0.0 {
                format!("{target:.0}")
            } else {
                format!("{target:.3}")
            };
            let _ = writeln!(
                out,
                "- {what}: {value:.3}{unit} (target {bound}{target}{unit}) — {verdict}"
            );
        };
        for (w, target) in [("connect_accept_close", 1.03), ("request_response", 1.02)] {
            for t in ["conntracer trace", "conntracer daemon"] {
                if let Some(o) = self.cell(w, t).and_then(|c| c.overhead) {
                    line(&mut out, format!("{w} overhead, {t}"), o, target, true, "");
                }
            }
            if let (Some(ours), Some(tcplife)) = (
                self.cell(w, "conntracer daemon").and_then(|c| c.overhead),
                self.cell(w, "tcplife").and_then(|c| c.overhead),
            ) {
                line(
                    &mut out,
                    format!("{w}: daemon overhead vs tcplife's ({tcplife:.3})"),
                    ours,
                    tcplife,
                    true,
                    "",
                );
            }
        }
        let mut lifecycle = (0u64, 0f64);
        let mut per_message = (0u64, 0f64);
        for w in &self.workloads {
            for (p, runs, avg) in self.programs(w, "conntracer daemon") {
                let bucket = if p.contains("send_len")
                    || p.contains("recv_len")
                    || p.contains("http_peek")
                {
                    &mut per_message
                } else {
                    &mut lifecycle
                };
                bucket.0 += runs;
                bucket.1 += avg * runs as f64;
            }
        }
        if lifecycle.0 > 0 {
            line(
                &mut out,
                "lifecycle programs, average run time".into(),
                lifecycle.1 / lifecycle.0 as f64,
                100.0,
                true,
                " ns",
            );
        }
        if per_message.0 > 0 {
            line(
                &mut out,
                "per-message programs, average run time".into(),
                per_message.1 / per_message.0 as f64,
                50.0,
                true,
                " ns",
            );
        }
        line(
            &mut out,
            "userspace events/s per core".into(),
            self.decode_events_per_second,
            1_000_000.0,
            false,
            "",
        );
        if let Some(w) = self.workloads.iter().rfind(|w| w.starts_with("churn_")) {
            let rate: u64 = w
                .trim_start_matches("churn_")
                .trim_end_matches("_per_s")
                .parse()
                .unwrap_or(0);
            let lost: u64 = self
                .losses
                .iter()
                .filter(|l| l["tracer"] == "conntracer daemon")
                .filter_map(|l| l["events_lost"].as_u64())
                .sum();
            let _ = writeln!(
                out,
                "- events lost by the daemon in sessions including {rate} connections/s: {lost} (target 0)"
            );
        }
        // The target is at 100 000 tracked; the largest point at or above it.
        let points = self.memory.as_array().cloned().unwrap_or_default();
        let at = |p: &Value| p["tracked"].as_f64().unwrap_or(0.0);
        if let Some(p) = points
            .iter()
            .filter(|p| at(p) >= 99_000.0)
            .min_by(|a, b| at(a).total_cmp(&at(b)))
        {
            line(
                &mut out,
                format!("daemon RSS with {:.0} tracked sockets", at(p)),
                p["daemon_rss_mib"].as_f64().unwrap_or(0.0),
                64.0,
                true,
                " MiB",
            );
        }
        out
    }
}

impl Results {
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
    })
}
