//! The targets, each reported as met or missed by how much (never
//! enforced: the bench measures, people judge).

use std::fmt::Write as _;

use super::report::{Hook, Results, Verdict, classify};

const DAEMON: &str = "conntracer daemon";
const TRACE: &str = "conntracer trace";

#[allow(clippy::collapsible_if)] // the nested form reads as the two conditions it is
pub fn section(r: &Results) -> String {
    let mut out = String::from("## Targets (reported, not enforced)\n\n");
    for w in r.workloads() {
        let target = if w == "request_response" {
            1.02
        } else if w == "connect_accept_close" || w.starts_with("churn_") {
            1.03
        } else {
            continue;
        };
        for t in [DAEMON, TRACE] {
            let Some(c) = r.cell(w, t) else { continue };
            let what = format!(
                "{w} overhead, {t} (median ratio; IQR {:.3}–{:.3})",
                c.ratio.q1, c.ratio.q3
            );
            match r.verdict(w) {
                Verdict::TooNoisy(g) => {
                    let _ = writeln!(
                        out,
                        "- {w} overhead, {t}: not judged, too noisy (tcplife ×{g:.3}, outside 1.00 ± 0.02) (target ≤ {target:.2})"
                    );
                }
                _ => line(&mut out, &what, c.ratio.median, target, true, ""),
            }
        }
        if let (Some(ours), Some(tcplife)) = (r.cell(w, DAEMON), r.cell(w, "tcplife")) {
            if !matches!(r.verdict(w), Verdict::TooNoisy(_)) {
                let _ = writeln!(
                    out,
                    "  - against tcplife on {w}: daemon ×{:.3}, tcplife ×{:.3} ({})",
                    ours.ratio.median,
                    tcplife.ratio.median,
                    if ours.ratio.median <= tcplife.ratio.median {
                        "daemon cheaper or equal"
                    } else {
                        "tcplife cheaper"
                    }
                );
            }
        }
    }
    // BPF run time, weighted by runs over every workload.
    let mut sums: [(u64, f64, String, f64); 2] = Default::default();
    for (p, runs, avg) in r.programs_all(DAEMON) {
        let s = &mut sums[usize::from(classify(&p) == Hook::DataPath)];
        s.0 += runs;
        s.1 += avg * runs as f64;
        if avg > s.3 {
            s.2 = p;
            s.3 = avg;
        }
    }
    for ((runs, ns, worst, worst_ns), (what, target)) in sums.iter().zip([
        ("lifecycle programs, average run time", 100.0),
        (
            "data-path programs (per message or packet), average run time",
            50.0,
        ),
    ]) {
        if *runs > 0 {
            let what = format!("{what} ({runs} runs; slowest {worst} {worst_ns:.0} ns)");
            line(&mut out, &what, ns / *runs as f64, target, true, " ns");
        }
    }
    line(
        &mut out,
        "userspace events/s on one core (decode + table + analysis)",
        r.decode_events_per_second(),
        1_000_000.0,
        false,
        "",
    );
    // Loss: every session of conntracer, against the connections made.
    for t in [DAEMON, TRACE] {
        let of: Vec<_> = r.losses().iter().filter(|l| l["tracer"] == t).collect();
        if of.is_empty() {
            continue;
        }
        let lost: u64 = of.iter().filter_map(|l| l["events_lost"].as_u64()).sum();
        let made: u64 = of.iter().filter_map(|l| l["connections"].as_u64()).sum();
        let seen: Option<u64> = of.iter().map(|l| l["connections_seen"].as_u64()).sum();
        let counted = match seen {
            Some(s) if s == made => format!(", counted {s} of {made} connections: met"),
            Some(s) => format!(
                ", counted {s} of {made} connections: missed by {}",
                made.abs_diff(s)
            ),
            None => String::new(),
        };
        let verdict = if lost == 0 {
            "met".into()
        } else {
            format!("missed by {lost}")
        };
        let _ = writeln!(
            out,
            "- events lost by {t} over {} sessions (churn up to the machine's maximum included): {lost} (target 0) — {verdict}{counted}",
            of.len()
        );
    }
    // The target is at 100 000 tracked sockets: the smallest point at or above it.
    let points = r.memory_points();
    let at_target = points.iter().find(|p| p.0 >= 99_000.0).or(points.last());
    if let Some(&(tracked, rss, maps)) = at_target {
        let what = format!("daemon RSS with {tracked:.0} tracked sockets (BPF maps {maps:.1} MiB)");
        line(&mut out, &what, rss, 64.0, true, " MiB");
        if tracked < 99_000.0 {
            let _ = writeln!(
                out,
                "  - the target is at 100 000 tracked sockets: this run held {tracked:.0}"
            );
        }
    }
    out
}

fn line(out: &mut String, what: &str, value: f64, target: f64, lower_is_better: bool, unit: &str) {
    let met = if lower_is_better {
        value <= target
    } else {
        value >= target
    };
    let by = (value - target).abs();
    let digits = if target < 10.0 { 3 } else { 0 };
    let verdict = if met {
        "met".to_owned()
    } else {
        format!("missed by {by:.digits$}{unit}")
    };
    let bound = if lower_is_better { "≤ " } else { "≥ " };
    let _ = writeln!(
        out,
        "- {what}: {value:.digits$}{unit} (target {bound}{target:.digits$}{unit}) — {verdict}"
    );
}
