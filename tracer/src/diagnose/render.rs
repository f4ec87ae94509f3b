//! The human-readable diagnose report.

use std::fmt::Write as _;

use serde_json::Value;

use crate::daemon::http::FindingsResponse;

pub fn report(r: &FindingsResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "conntracer diagnose — node {} at {}",
        r.node, r.generated
    );
    if r.findings.is_empty() {
        let _ = writeln!(
            out,
            "\nNo findings: no failures or idle-timeout mismatches seen."
        );
        return out;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let s = |k: &str| f[k].as_str().unwrap_or("").to_owned();
        let n = |k: &str| f[k].as_u64().unwrap_or(0);
        let pod = if s("namespace").is_empty() {
            s("pod")
        } else {
            format!("{}/{}", s("namespace"), s("pod"))
        };
        let _ = writeln!(
            out,
            "\n[{}] {} — cause: {}",
            i + 1,
            s("kind").replace('_', " "),
            s("cause")
        );
        let _ = writeln!(
            out,
            "    pod {pod} ({}) → {} ({})",
            s("direction"),
            s("peer"),
            s("destination")
        );
        if s("kind") == "idle_timeout_mismatch" {
            let _ = writeln!(
                out,
                "    no failure yet: the peer closes idle connections that the pool keeps"
            );
        } else {
            let _ = writeln!(
                out,
                "    {} failures ({} on reused connections), {} HTTP 503s attributed; first {} last {}",
                n("failures"),
                n("stale_failures"),
                n("http_503"),
                s("first_seen"),
                s("last_seen")
            );
        }
        if let Some(ev) = f["evidence"].as_object().filter(|e| !e.is_empty()) {
            let _ = writeln!(out, "    evidence: {}", flat(ev));
        }
        if let Some(sample) = f["samples"].as_array().and_then(|s| s.last()) {
            let _ = writeln!(
                out,
                "    latest: {} {} {} → {} end={} {}",
                sample["time"].as_str().unwrap_or(""),
                sample["comm"].as_str().unwrap_or(""),
                sample["local"].as_str().unwrap_or(""),
                sample["remote"].as_str().unwrap_or(""),
                sample["end"].as_str().unwrap_or(""),
                sample["evidence"].as_object().map(flat).unwrap_or_default()
            );
        }
        let remedy = &f["remedy"];
        let _ = writeln!(out, "    fix: {}", remedy["summary"].as_str().unwrap_or(""));
        for w in remedy["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    warning: {}", w.as_str().unwrap_or(""));
        }
        let _ = writeln!(out, "    ---");
        for line in remedy["yaml"].as_str().unwrap_or("").lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

fn flat(map: &serde_json::Map<String, Value>) -> String {
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            Value::Array(a) => format!(
                "{k}={}",
                a.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
