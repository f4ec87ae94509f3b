//! The human-readable diagnose report.

use std::fmt::Write as _;

use crate::{
    analysis::findings::{Finding, FindingKind},
    output::findings::FindingsReport,
    units::rfc3339,
};

pub fn report(r: &FindingsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "conntracer diagnose — node {} at {}",
        r.node,
        humantime::format_rfc3339_seconds(r.generated)
    );
    if r.findings.is_empty() {
        let _ = writeln!(
            out,
            "\nNo findings: no failures or idle-timeout mismatches seen."
        );
        return out;
    }
    for (i, f) in r.findings.iter().enumerate() {
        finding(&mut out, i + 1, f);
    }
    out
}

fn finding(out: &mut String, number: usize, f: &Finding) {
    let pod = if f.namespace.is_empty() {
        f.pod.clone()
    } else {
        format!("{}/{}", f.namespace, f.pod)
    };
    let _ = writeln!(
        out,
        "\n[{number}] {} — cause: {}",
        f.kind.title(),
        f.cause.as_str()
    );
    let _ = writeln!(
        out,
        "    pod {pod} ({}) → {} ({})",
        f.direction.as_str(),
        f.peer,
        f.destination
    );
    if f.kind == FindingKind::IdleTimeoutMismatch {
        let _ = writeln!(
            out,
            "    no failure yet: the peer closes idle connections that the pool keeps"
        );
    } else {
        let time = |t: Option<std::time::SystemTime>| t.map(rfc3339).unwrap_or_default();
        let _ = writeln!(
            out,
            "    {} failures ({} on reused connections), {} HTTP 503s attributed; first {} last {}",
            f.failures,
            f.stale_failures,
            f.http_503,
            time(f.first_seen),
            time(f.last_seen)
        );
    }
    if f.causes.len() > 1 {
        let by_cause: Vec<String> = f
            .causes
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({} reused, {} × 503)",
                    c.cause.as_str(),
                    c.failures,
                    c.stale_failures,
                    c.http_503
                )
            })
            .collect();
        let _ = writeln!(out, "    by cause: {}", by_cause.join(", "));
    }
    if !f.evidence.is_empty() {
        let _ = writeln!(out, "    evidence: {}", f.evidence);
    }
    if let Some(s) = f.samples.last() {
        let _ = writeln!(
            out,
            "    latest: {} {} {} → {} end={} cause={} {}",
            rfc3339(s.time),
            s.comm,
            s.local,
            s.remote,
            s.end.as_str(),
            s.cause.as_str(),
            s.evidence
        );
    }
    let _ = writeln!(out, "    fix: {}", f.remedy.summary);
    for note in &f.notes {
        let _ = writeln!(out, "    note: {note}");
    }
    for w in &f.remedy.warnings {
        let _ = writeln!(out, "    warning: {w}");
    }
    let _ = writeln!(out, "    ---");
    for line in f.remedy.yaml.lines() {
        let _ = writeln!(out, "    {line}");
    }
}
