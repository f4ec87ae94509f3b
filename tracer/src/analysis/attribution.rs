//! Joining the 503s proxies write to the failures behind them, by the
//! proxy's own connections (DESIGN.md "attributed 503", "hops").
//!
//! A 503 seen here is an `HTTP/1.x 503` status line written on an accepted
//! (server-role) socket. Written by a proxy (Envoy, the Istio sidecar) on
//! its downstream connection, it is decided one attribution window after it
//! was written, by these rules, in this order:
//!
//! 1. **Pass-through.** When the proxy's upstream connection received a 503
//!    just before (at most [`PASSTHROUGH`] earlier, on the same worker
//!    thread when both threads are known) — the app on this node answered
//!    503 itself on the socket it accepted from that upstream connection —
//!    the proxy's 503 is the app's, passed on: `unattributed`, marked
//!    `passthrough`, and it takes no failure. The same holds one hop
//!    further: the app answered the next hop's proxy (rule 3), whose own
//!    503 went back encrypted. If that upstream 503 came from
//!    another proxy on this node (an inbound sidecar answering in plaintext),
//!    this 503 carries that proxy's verdict instead (`hop` = far), and the
//!    inner 503 is not counted on its own: one request, one 503.
//! 2. **The proxy's own failures.** Candidates are failures of upstream
//!    (client-role) connections of the same process (never `pid` 0) and the
//!    same worker thread when both threads are known, that ended before the
//!    503 (up to [`SKEW`] after it) and at most the attribution window
//!    earlier. A failure with a request in flight on an established
//!    connection explains one 503; a refused or timed-out connect explains
//!    every 503 the same thread writes up to [`QUEUE`] after it (the requests
//!    queued on that connect), and one more beyond that.
//! 3. **The next hop on this node.** Also candidates: failures of another
//!    proxy whose accepted connection's peer is one of this proxy's upstream
//!    connections (same thread when known), live in the window — the inbound
//!    sidecar the request went to (`hop` = far; its 503 may have crossed
//!    mTLS, unseen). The far failure is then counted once, here.
//!
//! The nearest candidate in time wins; none: `unattributed`, always. A
//! failure the proxy retried successfully produced no 503, so no 503 takes
//! it unless one truly matches by these rules.
//!
//! A proxy failure that no 503 seen on this node took, two windows after it,
//! is reported as a 503 that proxy will have answered (`proxy_answered_503`):
//! its downstream is encrypted, or on another node, or the proxy retried.

use std::collections::VecDeque;

use super::{
    cause::Cause,
    failure::Failure,
    hops::{ProxyConns, same_thread},
    observation::{FailureRef, Hop},
};
use crate::conntrack::EndReason;

/// Allowed clock skew: a failure may be stamped this much after the 503 it
/// caused (both are kernel times, taken on different paths).
pub const SKEW: u64 = 5_000_000;
/// A refused or timed-out connect explains the 503s its thread writes this
/// long after it: the requests queued on it fail together.
pub const QUEUE: u64 = 100_000_000;
/// A proxy forwards its upstream's status line at once; a 503 written this
/// long after its upstream received one is that one, passed on.
pub const PASSTHROUGH: u64 = 100_000_000;
/// Proxy connections indexed for following hops.
const PROXY_CONNS_CAP: usize = 16_384;

/// A 503 written on a socket the writer accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen503 {
    pub at_ns: u64,
    pub netns: u32,
    pub pid: u32,
    /// The worker thread handling the downstream connection (0: unknown).
    pub tid: u32,
    pub comm: String,
    /// The downstream connection as the writer's socket has it.
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
}

/// What explains a 503.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Failure(Box<FailureRef>),
    /// The app answered 503 itself; the proxy passed it on.
    Passthrough,
    Unattributed,
}

impl Verdict {
    pub fn cause(&self) -> Option<Cause> {
        match self {
            Verdict::Failure(f) => Some(f.cause),
            _ => None,
        }
    }
}

/// What [`Attributor::settle`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    Http503 {
        seen: Seen503,
        verdict: Verdict,
    },
    /// A proxy failure with a request in flight that no 503 seen here took.
    ProxyAnswered(Box<FailureRef>),
}

#[derive(Debug, Clone)]
struct RecentFailure {
    at_ns: u64,
    netns: u32,
    pid: u32,
    tid: u32,
    proxy: bool,
    connect: bool,
    /// 503s it explained.
    uses: u32,
    failure: FailureRef,
}

impl RecentFailure {
    /// Free to explain a 503 written at `at_ns`.
    fn available(&self, at_ns: u64) -> bool {
        self.uses == 0 || (self.connect && at_ns <= self.at_ns.saturating_add(QUEUE))
    }
}

/// A 503 a proxy's upstream connection received from this node.
#[derive(Debug, Clone)]
struct UpstreamAnswer {
    at_ns: u64,
    pid: u32,
    tid: u32,
    verdict: Verdict,
    used: bool,
}

#[derive(Debug)]
pub struct Attributor {
    window_ns: u64,
    pending: VecDeque<Seen503>,
    recent: VecDeque<RecentFailure>,
    answers: VecDeque<UpstreamAnswer>,
    pub conns: ProxyConns,
}

impl Attributor {
    pub fn new(window: std::time::Duration) -> Self {
        let window_ns = window.as_nanos() as u64;
        Self {
            window_ns,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
            answers: VecDeque::new(),
            conns: ProxyConns::new(PROXY_CONNS_CAP, 2 * window_ns + SKEW),
        }
    }

    /// A proxy wrote a 503 on its downstream connection.
    pub fn proxy_503(&mut self, seen: Seen503) {
        self.pending.push_back(seen);
    }

    /// A process that is not a proxy (an app) wrote a 503 on a socket it
    /// accepted from `remote`: if that is a proxy's upstream connection, the
    /// proxy's next 503 is this one passed on.
    pub fn app_503(&mut self, at_ns: u64, netns: u32, remote: std::net::SocketAddr) {
        if let Some(up) = self.conns.upstream_at(netns, remote) {
            self.answers.push_back(UpstreamAnswer {
                at_ns,
                pid: up.pid,
                tid: up.tid,
                verdict: Verdict::Passthrough,
                used: false,
            });
        }
    }

    /// A failure was decided.
    pub fn failure(&mut self, f: &Failure) {
        self.recent.push_back(RecentFailure {
            at_ns: f.at_ns,
            netns: f.netns,
            pid: f.pid,
            tid: f.tid,
            proxy: f.proxy,
            connect: matches!(f.end, EndReason::ConnectRefused | EndReason::ConnectTimeout),
            uses: 0,
            failure: FailureRef::of(f, Hop::Local),
        });
    }

    /// Decides every 503 whose window has passed by `now_ns`, then reports
    /// the proxy failures no 503 can take any more.
    pub fn settle(&mut self, now_ns: u64, out: &mut Vec<Settled>) {
        let window = self.window_ns;
        while self
            .pending
            .front()
            .is_some_and(|p| now_ns >= p.at_ns.saturating_add(window + SKEW))
        {
            let seen = self.pending.pop_front().expect("front checked");
            self.decide(seen, out);
        }
        // A failure can be taken by 503s up to a window after it, decided a window later.
        while self
            .recent
            .front()
            .is_some_and(|f| now_ns > f.at_ns.saturating_add(2 * (window + SKEW)))
        {
            let f = self.recent.pop_front().expect("front checked");
            if f.proxy && f.uses == 0 {
                out.push(Settled::ProxyAnswered(Box::new(f.failure)));
            }
        }
        while self
            .answers
            .front()
            .is_some_and(|a| now_ns.saturating_sub(a.at_ns) > 3 * window)
        {
            self.answers.pop_front();
        }
        self.conns.expire(now_ns);
    }

    fn decide(&mut self, seen: Seen503, out: &mut Vec<Settled>) {
        let hops = self.next_hops(&seen);
        let verdict = match self.passed_on(&seen, &hops) {
            Some(v) => v,
            None => self.pair(&seen, &hops),
        };
        // Written to another proxy on this node: that proxy's 503 carries it.
        let relayed_to = self
            .conns
            .upstream_at(seen.netns, seen.remote)
            .filter(|up| up.pid != seen.pid)
            .map(|up| (up.pid, up.tid));
        match relayed_to {
            Some((pid, tid)) => self.answers.push_back(UpstreamAnswer {
                at_ns: seen.at_ns,
                pid,
                tid,
                verdict: match verdict {
                    Verdict::Failure(mut f) => {
                        f.hop = Hop::Far;
                        Verdict::Failure(f)
                    }
                    other => other,
                },
                used: false,
            }),
            None => out.push(Settled::Http503 { seen, verdict }),
        }
    }

    /// The proxies (pid, thread) that accepted this proxy thread's upstream
    /// connections live in the window: where its requests went next.
    fn next_hops(&self, seen: &Seen503) -> Vec<(u32, u32)> {
        if seen.pid == 0 {
            return Vec::new();
        }
        let since = seen.at_ns.saturating_sub(self.window_ns);
        self.conns
            .upstreams_of(seen.pid, seen.tid, since)
            .flat_map(|up| self.conns.next_hops(up))
            .filter(|d| d.live_since(since))
            .map(|d| (d.pid, d.tid))
            .collect()
    }

    /// Rule 1: the verdict of the 503 this proxy's upstream received just
    /// before — or the next hop's upstream, when the next hop's own 503 was
    /// not seen (encrypted between the sidecars).
    fn passed_on(&mut self, seen: &Seen503, hops: &[(u32, u32)]) -> Option<Verdict> {
        let answer = self
            .answers
            .iter_mut()
            .filter(|a| !a.used && seen.pid != 0)
            .filter(|a| {
                (a.pid == seen.pid && same_thread(a.tid, seen.tid))
                    || hops
                        .iter()
                        .any(|&(pid, tid)| a.pid == pid && same_thread(a.tid, tid))
            })
            .filter(|a| {
                a.at_ns <= seen.at_ns + SKEW && seen.at_ns.saturating_sub(a.at_ns) <= PASSTHROUGH
            })
            .min_by_key(|a| a.at_ns.abs_diff(seen.at_ns))?;
        answer.used = true;
        let far = answer.pid != seen.pid;
        Some(match answer.verdict.clone() {
            Verdict::Failure(mut f) if far => {
                f.hop = Hop::Far;
                Verdict::Failure(f)
            }
            other => other,
        })
    }

    /// Rules 2 and 3: the nearest failure of this proxy thread's upstream
    /// connections, or of the next hop's.
    fn pair(&mut self, seen: &Seen503, next_hops: &[(u32, u32)]) -> Verdict {
        if seen.pid == 0 {
            return Verdict::Unattributed;
        }
        let window = self.window_ns;
        let best = self
            .recent
            .iter_mut()
            .filter(|f| {
                f.at_ns <= seen.at_ns + SKEW && seen.at_ns.saturating_sub(f.at_ns) <= window
            })
            .filter(|f| f.pid != 0 && f.available(seen.at_ns))
            .filter_map(|f| {
                let hop = if f.pid == seen.pid {
                    (f.netns == seen.netns && same_thread(f.tid, seen.tid)).then_some(Hop::Local)
                } else {
                    (f.proxy
                        && next_hops
                            .iter()
                            .any(|&(pid, tid)| pid == f.pid && same_thread(f.tid, tid)))
                    .then_some(Hop::Far)
                }?;
                Some((f, hop))
            })
            .min_by_key(|(f, hop)| (f.at_ns.abs_diff(seen.at_ns), *hop == Hop::Far));
        match best {
            Some((f, hop)) => {
                f.uses += 1;
                let mut failure = f.failure.clone();
                failure.hop = hop;
                Verdict::Failure(Box::new(failure))
            }
            None => Verdict::Unattributed,
        }
    }
}
