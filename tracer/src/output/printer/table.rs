//! The human-readable trace format: one aligned line per event.

use std::fmt::Write as _;

use super::record::TraceRecord;

pub const HEADER: &str = "TIME             EVENT        POD                        PID     COMM             ROLE     LOCAL                    REMOTE                   DETAIL";

pub fn line(r: &TraceRecord) -> String {
    let time = r.time.get(11..23).unwrap_or(&r.time); // HH:MM:SS.mmm
    let pod = if r.namespace.is_empty() {
        r.pod.clone()
    } else {
        format!("{}/{}", r.namespace, r.pod)
    };
    format!(
        "{time:<16} {:<12} {pod:<26} {:<7} {:<16} {:<8} {:<24} {:<24} {}",
        r.event,
        if r.pid == 0 {
            "-".to_owned()
        } else {
            r.pid.to_string()
        },
        if r.comm.is_empty() { "-" } else { &r.comm },
        r.role.unwrap_or("-"),
        r.local,
        r.remote,
        detail(r)
    )
    .trim_end()
    .to_owned()
}

fn detail(r: &TraceRecord) -> String {
    let mut out = String::new();
    let mut put = |key: &str, value: String| {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{key}={value}");
    };
    if let Some(name) = &r.name {
        put("name", name.clone());
    }
    if let Some(answers) = &r.answers {
        put("answers", answers.join(","));
    }
    if let Some(ttl) = r.ttl {
        put("ttl", format!("{ttl}s"));
    }
    if let Some(true) = r.changed {
        put("changed", "yes".to_owned());
    }
    if let Some(cause) = r.cause {
        put("cause", cause.to_owned());
    }
    if let Some(true) = r.passthrough {
        put("passthrough", "yes".to_owned());
    }
    if let Some(f) = &r.failure {
        put("hop", f.hop.to_owned());
        put(
            "failed",
            format!("{}/{}:{}->{}", f.namespace, f.pod, f.local, f.remote),
        );
    }
    if let Some(true) = r.stale {
        put("stale", "yes".to_owned());
    }
    if let Some(end) = r.end {
        put("end", end.to_owned());
    }
    if let Some(side) = r.side {
        put("side", side.to_owned());
    }
    if let Some(reason) = &r.reason {
        put("reason", reason.clone());
    }
    if let Some(state) = r.state {
        put("state", state.to_owned());
    }
    if let Some(v) = r.lifetime_ms {
        put("lifetime", human_ms(v));
    }
    if let Some(v) = r.idle_ms {
        put("idle", human_ms(v));
    }
    if let Some(v) = r.peer_idle_close_ms {
        put("peer_idle", human_ms(v));
    }
    if let Some(v) = r.idle_before_reuse_ms {
        put("idle_before", human_ms(v));
    }
    if let Some(v) = r.requests {
        put("requests", v.to_string());
    }
    if let (Some(tx), Some(rx)) = (r.tx_bytes, r.rx_bytes) {
        put("tx", format!("{tx}B"));
        put("rx", format!("{rx}B"));
    }
    if let Some(err) = &r.error {
        put("error", err.clone());
    }
    out
}

fn human_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}
