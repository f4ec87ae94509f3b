//! The daemon's per-request view: `conntracer trace --output json` runs next
//! to the daemon for the scenario's namespace, and its `http_503` and
//! `failure` records are what the access log lines are joined to.
//!
//! The 503 record's fields for the join (the attribution's interface):
//! `local`/`remote` of the downstream connection the 503 was written on,
//! `pid`/`tid`, `cause`, `passthrough: true` when the app answered it, and
//! the failure it was paired with as `failure: {local, remote, namespace,
//! pod, at, hop}` (`hop` is `local` or `far`); see
//! /work/notes/interface-attrib.md until the printer's `TraceRecord` has it.
//! A proxy's failure that no seen 503 took is a `proxy_answered_503` record.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::lab::procs::wait_until;

/// A 503 the daemon saw written by a proxy, with its verdict.
#[derive(Debug, Clone)]
pub(crate) struct Seen503 {
    pub(crate) time: SystemTime,
    pub(crate) pod: String,
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    /// The downstream connection the 503 was written on, as the proxy has it.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    /// A cause, or `unattributed`.
    pub(crate) cause: String,
    pub(crate) passthrough: bool,
    pub(crate) failure: Option<PairedFailure>,
}

/// The failure a 503 was paired with.
#[derive(Debug, Clone)]
pub(crate) struct PairedFailure {
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) at: Option<SystemTime>,
    /// `local` (the 503's own proxy) or `far` (a proxy one hop further).
    pub(crate) hop: String,
}

/// A failure of a connection (request in flight, or a failed connect).
#[derive(Debug, Clone)]
pub(crate) struct FailureSeen {
    pub(crate) time: SystemTime,
    pub(crate) pod: String,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) cause: String,
    pub(crate) stale: bool,
    pub(crate) end: String,
}

/// A proxy's upstream failure no 503 seen here took: a 503 that proxy will
/// have answered (`conntracer_proxy_answered_503_total`).
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    pub(crate) time: Option<SystemTime>,
    pub(crate) pod: String,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) cause: String,
}

impl Answered {
    pub(crate) fn describe(&self) -> String {
        format!(
            "proxy_answered_503 in {} on {} {}",
            self.pod,
            addr_text(self.local),
            self.cause
        )
    }

    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        (v["event"] == "proxy_answered_503").then(|| Self {
            time: time(&v["time"]),
            pod: text(&v["pod"]),
            local: addr(&v["local"]),
            cause: text(&v["cause"]),
        })
    }
}

impl Seen503 {
    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        if v["event"] != "http_503" {
            return None;
        }
        Some(Self {
            time: time(&v["time"])?,
            pod: text(&v["pod"]),
            pid: v["pid"].as_u64().unwrap_or(0) as u32,
            tid: v["tid"].as_u64().unwrap_or(0) as u32,
            local: addr(&v["local"]),
            remote: addr(&v["remote"]),
            cause: text(&v["cause"]),
            passthrough: v["passthrough"].as_bool().unwrap_or(false),
            failure: v
                .get("failure")
                .filter(|f| f.is_object())
                .map(|f| PairedFailure {
                    local: addr(&f["local"]),
                    remote: addr(&f["remote"]),
                    namespace: text(&f["namespace"]),
                    pod: text(&f["pod"]),
                    at: time(&f["at"]),
                    hop: text(&f["hop"]),
                }),
        })
    }

    pub(crate) fn attributed(&self) -> bool {
        self.cause != "unattributed"
    }

    pub(crate) fn describe(&self) -> String {
        let failure = self.failure.as_ref().map_or(String::new(), |f| {
            format!(
                " <- {} failure in {}/{} {}->{} at {}",
                f.hop,
                f.namespace,
                f.pod,
                addr_text(f.local),
                addr_text(f.remote),
                f.at.map(|t| humantime::format_rfc3339_millis(t).to_string())
                    .unwrap_or_default()
            )
        });
        format!(
            "503 {} in {} pid {} tid {} on {}->{} {}{}{failure}",
            humantime::format_rfc3339_millis(self.time),
            self.pod,
            self.pid,
            self.tid,
            addr_text(self.remote),
            addr_text(self.local),
            self.cause,
            if self.passthrough { " passthrough" } else { "" },
        )
    }
}

impl FailureSeen {
    pub(crate) fn from_json(v: &Value) -> Option<Self> {
        if v["event"] != "failure" {
            return None;
        }
        Some(Self {
            time: time(&v["time"])?,
            pod: text(&v["pod"]),
            local: addr(&v["local"]),
            remote: addr(&v["remote"]),
            cause: text(&v["cause"]),
            stale: v["stale"].as_bool().unwrap_or(false),
            end: text(&v["end"]),
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "failure {} in {} {}->{} {} end {}{}",
            humantime::format_rfc3339_millis(self.time),
            self.pod,
            addr_text(self.local),
            addr_text(self.remote),
            self.cause,
            self.end,
            if self.stale { " stale" } else { "" }
        )
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

fn addr(v: &Value) -> Option<SocketAddr> {
    v.as_str()?.parse().ok()
}

fn time(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339(v.as_str()?).ok()
}

pub(crate) fn addr_text(a: Option<SocketAddr>) -> String {
    a.map_or("-".to_owned(), |a| a.to_string())
}

/// `conntracer trace --output json` for one namespace, records to
/// `trace.jsonl` and its diagnostics to `trace.log` in the scenario's directory.
pub(crate) struct Trace {
    child: Option<Child>,
    out: PathBuf,
}

impl Trace {
    /// Starts tracing `namespace` and waits until the probes are attached.
    pub(crate) fn start(conntracer: &Path, dir: &Path, namespace: &str) -> Result<Self> {
        let out = dir.join("trace.jsonl");
        let log = dir.join("trace.log");
        let child = Command::new(conntracer)
            .args([
                "trace",
                "--output",
                "json",
                "--namespace",
                namespace,
                // As the lab's daemon, so both see the same reuses.
                "--reuse-event-min-idle",
                "100ms",
            ])
            .env("CONNTRACER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting conntracer trace")?;
        let trace = Self {
            child: Some(child),
            out,
        };
        wait_until(
            "conntracer trace to attach its probes",
            Duration::from_secs(60),
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("probes attached")),
        )?;
        Ok(trace)
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub(crate) fn http_503s(&self) -> Vec<Seen503> {
        self.records()
            .iter()
            .filter_map(Seen503::from_json)
            .collect()
    }

    pub(crate) fn failures(&self) -> Vec<FailureSeen> {
        self.records()
            .iter()
            .filter_map(FailureSeen::from_json)
            .collect()
    }

    pub(crate) fn answered(&self) -> Vec<Answered> {
        self.records()
            .iter()
            .filter_map(Answered::from_json)
            .collect()
    }

    /// Stops the session (SIGINT, so it flushes), SIGKILL after 10 s.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let stopped = wait_until("conntracer trace to stop", Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if stopped.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_far_hop_503_and_a_failure() {
        let v: Value = serde_json::from_str(
            r#"{"time":"2026-12-06T03:40:00.123456789Z","event":"http_503","pod":"frontend",
            "pid":7,"tid":8,"local":"127.0.0.1:15001","remote":"127.0.0.1:40000",
            "cause":"idle_timeout","failure":{"local":"127.0.0.1:51000","remote":"127.0.0.1:8080",
            "namespace":"lab1","pod":"cart","at":"2026-12-06T03:40:00.120Z","hop":"far"}}"#,
        )
        .unwrap();
        let r = Seen503::from_json(&v).unwrap();
        assert!(r.attributed() && !r.passthrough);
        assert_eq!(r.remote, Some("127.0.0.1:40000".parse().unwrap()));
        let f = r.failure.unwrap();
        assert_eq!((f.hop.as_str(), f.pod.as_str()), ("far", "cart"));
        assert_eq!(f.local, Some("127.0.0.1:51000".parse().unwrap()));
        let v: Value = serde_json::from_str(
            r#"{"time":"2026-12-06T03:40:00.1Z","event":"failure","pod":"cart",
            "local":"127.0.0.1:51000","remote":"127.0.0.1:8080","cause":"idle_timeout",
            "stale":true,"end":"reset_received"}"#,
        )
        .unwrap();
        assert!(Seen503::from_json(&v).is_none());
        assert!(FailureSeen::from_json(&v).unwrap().stale);
    }
}
