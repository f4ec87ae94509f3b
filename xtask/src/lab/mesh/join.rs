//! Per-request joins: each request the caller's sidecar logged is followed
//! to the inbound sidecar's line for it, to the 503 record(s) the daemon
//! wrote for its downstream connection, and to the failures at the far hop.
//!
//! - caller's sidecar line O ↔ 503 record: O's `%DOWNSTREAM_REMOTE_ADDRESS%`
//!   is the record's `remote` (the caller's connection; one per request);
//! - O ↔ inbound sidecar line I: O's `%UPSTREAM_LOCAL_ADDRESS%` is I's
//!   `%DOWNSTREAM_REMOTE_ADDRESS%` (REDIRECT changes only the local port),
//!   at the same time (the pooled mTLS connection carries many requests);
//! - I ↔ far failure: I's `%UPSTREAM_LOCAL_ADDRESS%` is the failure's
//!   `local`; a failed connect leaves Envoy no upstream address, so then the
//!   failed connect to the app during I.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use super::{
    access_log::Line,
    records::{FailureSeen, Seen503, addr_text},
};

/// Envoy logs whole milliseconds; the kernel's times are finer (one clock).
const SLACK: Duration = Duration::from_millis(5);
/// How long after Envoy's request ended the daemon may date its 503.
const RECORD_LAG: Duration = Duration::from_millis(500);
/// How long after it the failure may be dated (at the connection's close).
const FAILURE_LAG: Duration = Duration::from_millis(50);

/// What one scenario produced.
pub(crate) struct Evidence<'a> {
    /// The caller's (outbound) sidecar's lines of the scenario's traffic.
    pub(crate) outbound: &'a [Line],
    /// The server pod's (inbound) sidecar's lines.
    pub(crate) inbound: &'a [Line],
    pub(crate) seen: &'a [Seen503],
    pub(crate) failures: &'a [FailureSeen],
    /// The server pod, where the far hop's failures are.
    pub(crate) far_pod: &'a str,
    /// Where the inbound sidecar sends requests (the app).
    pub(crate) app: SocketAddr,
}

/// One request, followed across both hops.
pub(crate) struct Request<'a> {
    pub(crate) out: &'a Line,
    pub(crate) inbound: Option<&'a Line>,
    /// The daemon's 503 records for the caller's connection.
    pub(crate) seen: Vec<&'a Seen503>,
    /// Failures of the inbound sidecar's upstream connection behind it.
    pub(crate) far_failures: Vec<&'a FailureSeen>,
}

pub(crate) struct Joined<'a> {
    pub(crate) requests: Vec<Request<'a>>,
    /// 503 records no logged request explains (the caller got no 503 there).
    pub(crate) unexplained: Vec<&'a Seen503>,
}

/// `t` in [`from`, `to` + `late`], give or take the clocks' slack.
fn within(t: SystemTime, from: SystemTime, to: SystemTime, late: Duration) -> bool {
    t + SLACK >= from && t <= to + late + SLACK
}

pub(crate) fn join<'a>(e: &Evidence<'a>) -> Joined<'a> {
    let mut inbound_used = vec![false; e.inbound.len()];
    let mut requests = Vec::new();
    for out in e.outbound {
        let inbound = out.upstream_local.and_then(|upstream| {
            let (i, line) = e
                .inbound
                .iter()
                .enumerate()
                .filter(|(i, l)| {
                    !inbound_used[*i]
                        && l.downstream_remote == Some(upstream)
                        && within(l.start, out.start, out.end(), Duration::ZERO)
                })
                .min_by_key(|(_, l)| distance(l.start, out.start))?;
            inbound_used[i] = true;
            Some(line)
        });
        let seen = e
            .seen
            .iter()
            .filter(|s| {
                out.downstream_remote.is_some()
                    && s.remote == out.downstream_remote
                    && within(s.time, out.start, out.end(), RECORD_LAG)
            })
            .collect();
        let far_failures = inbound.map_or(Vec::new(), |i| far_failures(e, i));
        requests.push(Request {
            out,
            inbound,
            seen,
            far_failures,
        });
    }
    let unexplained = e
        .seen
        .iter()
        .filter(|s| {
            !requests
                .iter()
                .any(|r| r.out.code == 503 && r.seen.iter().any(|x| std::ptr::eq(*x, *s)))
        })
        .collect();
    Joined {
        requests,
        unexplained,
    }
}

fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

/// The failures of the inbound sidecar's upstream connection for line `i`.
fn far_failures<'a>(e: &Evidence<'a>, i: &Line) -> Vec<&'a FailureSeen> {
    e.failures
        .iter()
        .filter(|f| f.pod == e.far_pod && within(f.time, i.start, i.end(), FAILURE_LAG))
        .filter(|f| match i.upstream_local {
            Some(local) => f.local == Some(local),
            // No connection was established: a failed connect to the app.
            None => f.remote == Some(e.app) && f.end.starts_with("connect_"),
        })
        .collect()
}

impl Request<'_> {
    /// The caller's 503, counted once under `cause` and paired with the
    /// failure at the far hop (`far_pod`) that the inbound sidecar hit for it.
    pub(crate) fn attributed_at_far_hop(&self, cause: &str, far_pod: &str) -> Result<(), String> {
        let seen = self.seen_once()?;
        if seen.cause != cause {
            return Err(format!("attributed to {}", seen.cause));
        }
        let Some(paired) = &seen.failure else {
            return Err("the record names no paired failure".to_owned());
        };
        if paired.hop != "far" || paired.pod != far_pod {
            return Err(format!(
                "paired with a {} hop failure in {}/{}",
                paired.hop, paired.namespace, paired.pod
            ));
        }
        let Some(inbound) = self.inbound else {
            return Err("no inbound sidecar line for it".to_owned());
        };
        match inbound.upstream_local {
            Some(local) if paired.local != Some(local) => {
                return Err(format!(
                    "paired with the failure on {}, the inbound sidecar's request used {local}",
                    addr_text(paired.local)
                ));
            }
            Some(_) => {}
            None => {
                if !paired
                    .at
                    .is_some_and(|at| within(at, inbound.start, inbound.end(), FAILURE_LAG))
                {
                    return Err("paired with a failure outside the inbound request".to_owned());
                }
            }
        }
        if self.far_failures.is_empty() {
            return Err("the far hop's failure was not reported as a failure".to_owned());
        }
        Ok(())
    }

    /// The caller's 503, which the app answered itself: counted once, never
    /// attributed (whether the record says `passthrough` is reported apart).
    pub(crate) fn passed_through(&self) -> Result<(), String> {
        let seen = self.seen_once()?;
        if seen.attributed() || seen.failure.is_some() {
            return Err(format!(
                "the app's own 503 attributed to {}{}",
                seen.cause,
                seen.failure.as_ref().map_or(String::new(), |f| format!(
                    " (failure on {})",
                    addr_text(f.local)
                ))
            ));
        }
        Ok(())
    }

    fn seen_once(&self) -> Result<&Seen503, String> {
        match self.seen.as_slice() {
            [one] => Ok(one),
            [] => Err("no 503 record for the caller's connection".to_owned()),
            many => Err(format!("{} 503 records (counted twice)", many.len())),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let mut text = format!("caller's sidecar: {}", self.out.describe());
        if let Some(i) = self.inbound {
            text += &format!("; inbound sidecar: {}", i.describe());
        }
        for s in &self.seen {
            text += &format!("; {}", s.describe());
        }
        for f in &self.far_failures {
            text += &format!("; {}", f.describe());
        }
        text
    }
}

/// Requests checked, passed, and the first problems (with the request).
pub(crate) struct Tally {
    pub(crate) checked: usize,
    pub(crate) passed: usize,
    pub(crate) problems: Vec<String>,
}

impl Tally {
    pub(crate) fn of<'a>(
        requests: impl IntoIterator<Item = &'a Request<'a>>,
        check: impl Fn(&Request) -> Result<(), String>,
    ) -> Self {
        let mut tally = Tally {
            checked: 0,
            passed: 0,
            problems: Vec::new(),
        };
        for r in requests {
            tally.checked += 1;
            match check(r) {
                Ok(()) => tally.passed += 1,
                Err(why) => tally.problems.push(format!("{why}: {}", r.describe())),
            }
        }
        tally
    }

    pub(crate) fn fraction(&self) -> f64 {
        if self.checked == 0 {
            1.0
        } else {
            self.passed as f64 / self.checked as f64
        }
    }
}

#[cfg(test)]
mod tests;
