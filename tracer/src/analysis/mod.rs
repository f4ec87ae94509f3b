//! Attribution: from connection events to failures with a cause, 503s with
//! the cause of the upstream failure behind them, and findings with a fix.
//!
//! Stages, each with one job and its own state:
//! - [`naming`]: pod, direction and bounded peer label of a connection;
//! - [`topology`]: who listens where and owns which address on this node;
//! - [`idle`]: each destination's learned idle-close time;
//! - [`dns_names`]: the DNS name behind each connection, and its staleness;
//! - [`failure`] + [`facts`] + [`cause`]: failures, the facts about them, and
//!   the one cause those facts give;
//! - [`attribution`]: 503s joined to the failures behind them, by the
//!   proxy's own connections and across hops on this node ([`hops`]);
//! - [`findings`]: patterns with evidence and the fix ([`remedy`]).
//!
//! [`Analysis`] feeds every event to the stages that need it, in order, and
//! takes the event time as an argument everywhere (the pod source's retry
//! pacing, in `metadata`, is its only clock).
//! Failures are decided `settle` after their connection closes, so that
//! related events (a listener closing, the 503 the proxy writes) have
//! arrived; a 503 is decided one attribution window after it was written,
//! and a proxy failure no 503 took is reported two windows after it.

pub mod attribution;
pub mod cause;
pub mod direction;
pub mod dns_names;
pub mod facts;
pub mod failure;
pub mod findings;
pub mod hops;
pub mod idle;
pub mod naming;
pub mod observation;
pub mod proxy;
pub mod remedy;
pub mod topology;

#[cfg(test)]
mod tests;

use std::{collections::HashMap, time::Duration};

use tracer_common::event::{EventKind, ResetSide, Role};

use crate::{
    conntrack::{Connection, EndReason, table::Applied},
    dns::DnsAnswer,
    events::{Clock, Event},
    kernel::reset_reasons::ResetReasons,
    metadata::{PodName, Pods},
};
use attribution::{Attributor, Seen503, Settled, Verdict};
use direction::DirectionClassifier;
use dns_names::DnsNames;
use failure::{Failure, Settling, is_stale, request_in_flight};
use findings::{Finding, Findings, Mismatch, Scope};
use hops::ProxyConn;
use idle::IdleLearner;
pub use naming::Labels;
use naming::Naming;
pub use observation::{DnsSeen, FailureRef, Hop, Http503, Observation};
use proxy::ProxyMatcher;
use topology::{ListenerView, Topology};

/// Shorter idle gaps before a peer's close do not reveal an idle timeout.
pub const MIN_PEER_IDLE_CLOSE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    pub proxy: ProxyMatcher,
    pub directions: DirectionClassifier,
    /// How far apart a 503 and its upstream failure may be.
    pub attribution_window: Duration,
    /// A listener that closed this recently means its pod is terminating.
    pub termination_window: Duration,
    /// How long after a close its failure is decided.
    pub settle: Duration,
    /// Distinct `peer` label values per pod.
    pub peer_cap: usize,
    /// Distinct pods labelled; the rest are `other`.
    pub pod_cap: usize,
    /// Findings kept (least recently seen dropped first).
    pub findings_cap: usize,
    /// Use `ip:port` as the peer label when the peer pod is unknown.
    pub peer_addresses: bool,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            proxy: ProxyMatcher::default(),
            directions: DirectionClassifier::default(),
            attribution_window: Duration::from_secs(1),
            termination_window: Duration::from_secs(120),
            settle: Duration::from_millis(250),
            peer_cap: 20,
            pod_cap: 500,
            findings_cap: 1000,
            peer_addresses: false,
        }
    }
}

pub struct Analysis {
    config: AnalysisConfig,
    clock: Clock,
    reset_reasons: ResetReasons,
    naming: Naming,
    topology: Topology,
    idle: IdleLearner,
    dns: DnsNames,
    settling: Settling,
    attribution: Attributor,
    findings: Findings,
}

impl Analysis {
    pub fn new(
        config: AnalysisConfig,
        pods: Pods,
        clock: Clock,
        reset_reasons: ResetReasons,
    ) -> Self {
        let findings_cap = config.findings_cap;
        Self {
            naming: Naming::new(
                pods,
                config.directions.clone(),
                (config.pod_cap, config.peer_cap),
                config.peer_addresses,
            ),
            attribution: Attributor::new(config.attribution_window),
            settling: Settling::new(config.settle),
            config,
            clock,
            reset_reasons,
            topology: Topology::default(),
            idle: IdleLearner::default(),
            dns: DnsNames::default(),
            findings: Findings::new(findings_cap),
        }
    }

    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    pub fn reset_reasons(&self) -> &ResetReasons {
        &self.reset_reasons
    }

    /// The pod of a socket in `netns` owned by a process in `cgroup_id`
    /// (asked of the pod source once per namespace, and per host-network cgroup).
    pub fn pod(&mut self, netns: u32, cgroup_id: u64) -> PodName {
        self.naming.pod(netns, cgroup_id)
    }

    /// One event, after the connection table applied it; `now_ns` is when
    /// it was read (kernel monotonic time).
    pub fn observe(
        &mut self,
        ev: &Event,
        applied: &Applied,
        now_ns: u64,
        out: &mut Vec<Observation>,
    ) {
        self.naming.advance(ev.mono_ns);
        self.observe_kind(ev, applied, now_ns, out);
        self.report_forgotten(out);
    }

    fn observe_kind(
        &mut self,
        ev: &Event,
        applied: &Applied,
        now_ns: u64,
        out: &mut Vec<Observation>,
    ) {
        match ev.kind {
            EventKind::Listen => self.topology.listen(ev.netns, ev.local, ev.mono_ns),
            EventKind::ListenClose => self.topology.unlisten(ev.netns, ev.local, ev.mono_ns),
            EventKind::Connect | EventKind::Accept => {
                self.topology.own(ev.netns, ev.local.ip());
                self.index_proxy_conn(ev, applied);
                if let (EventKind::Connect, Applied::Open { id }) = (ev.kind, applied) {
                    self.dns
                        .connected(*id, ev.netns, ev.remote.ip(), ev.stats.start_ns.max(1));
                }
                let labels = self.labels((ev.netns, ev.process.cgroup_id), ev.role, ev.remote);
                out.push(Observation::Opened {
                    labels,
                    role: ev.role,
                });
            }
            // Opened before we started: not counted as opened, but its address is owned.
            EventKind::Seeded => {
                self.topology.own(ev.netns, ev.local.ip());
                self.index_proxy_conn(ev, applied);
            }
            EventKind::Reset => self.reset(ev, out),
            EventKind::Reuse => {
                if let Applied::Open { id } = applied {
                    self.attribution.conns.thread(*id, ev.stats.io_tid);
                }
                if let Some(idle) = (ev.stats.last_reuse_idle_ns != 0)
                    .then(|| Duration::from_nanos(ev.stats.last_reuse_idle_ns))
                {
                    self.idle.reuse((ev.netns, ev.remote), idle);
                    let labels = self.labels((ev.netns, ev.process.cgroup_id), ev.role, ev.remote);
                    out.push(Observation::Reuse { labels, idle });
                }
            }
            EventKind::HttpStatus => self.http_503(ev, applied),
            EventKind::Close => {
                if let Applied::Closed(conn) = applied {
                    self.closed(conn, now_ns, out);
                }
            }
        }
    }

    /// A proxy's connection, indexed to follow requests across hops.
    fn index_proxy_conn(&mut self, ev: &Event, applied: &Applied) {
        let Applied::Open { id } = applied else {
            return;
        };
        if !self.config.proxy.is_proxy(ev.process.uid, &ev.process.comm) {
            return;
        }
        // An accepted socket's owner is its listener's: only its I/O names the worker.
        let tid = match (ev.stats.io_tid, ev.role) {
            (0, Role::Client) => ev.process.tid,
            (tid, _) => tid,
        };
        let conn = ProxyConn {
            netns: ev.netns,
            pid: ev.process.pid,
            tid,
            local: ev.local,
            remote: ev.remote,
            closed_ns: None,
        };
        self.attribution.conns.upsert(*id, ev.role, conn);
    }

    /// A 503 written on an accepted socket: by a proxy to its downstream, or
    /// by an app (then to a proxy's upstream connection, or to anyone).
    fn http_503(&mut self, ev: &Event, applied: &Applied) {
        let Applied::Open { id } = applied else {
            return;
        };
        if ev.role != Role::Server || ev.http_status != Some(503) {
            return;
        }
        let tid = ev.stats.io_tid;
        if self.config.proxy.is_proxy(ev.process.uid, &ev.process.comm) {
            self.attribution.conns.thread(*id, tid);
            self.attribution.proxy_503(Seen503 {
                at_ns: ev.mono_ns,
                netns: ev.netns,
                pid: ev.process.pid,
                tid,
                comm: ev.process.comm.clone(),
                local: ev.local,
                remote: ev.remote,
            });
        } else {
            self.attribution.app_503(ev.mono_ns, ev.netns, ev.remote);
        }
    }

    fn reset(&mut self, ev: &Event, out: &mut Vec<Observation>) {
        let Some(reset) = ev.reset else { return };
        if reset.side == ResetSide::Sent && ev.local.port() != 0 {
            // Even a refusal tells us who owns the address.
            self.topology.own(ev.netns, ev.local.ip());
        }
        let labels = self.labels((ev.netns, ev.process.cgroup_id), ev.role, ev.remote);
        let reason = match reset.side {
            ResetSide::Sent => reset
                .reason
                .map_or_else(|| "unknown".into(), |r| self.reset_reasons.name(r)),
            _ => "peer".to_owned(),
        };
        out.push(Observation::Reset {
            labels,
            side: reset.side,
            reason,
        });
    }

    fn closed(&mut self, conn: &Connection, now_ns: u64, out: &mut Vec<Observation>) {
        if conn.local.port() != 0 {
            self.topology.own(conn.netns, conn.local.ip());
        }
        let labels = self.labels((conn.netns, conn.process.cgroup_id), conn.role, conn.remote);
        // A FIN right after a response is the protocol (`Connection: close`),
        // and one answering a request is not idle either; but a FIN that came
        // before our next request (a pooled client noticing only when it
        // writes) is the peer's idle close all the same.
        let s = &conn.stats;
        let fin_before_request = s.fin_in_ns != 0 && s.fin_in_ns <= s.last_send_ns;
        let peer_idle_close = conn.idle_at_peer_close().filter(|idle| {
            *idle >= MIN_PEER_IDLE_CLOSE && (!request_in_flight(conn) || fin_before_request)
        });
        if let (Some(idle), Role::Client) = (peer_idle_close, conn.role) {
            self.idle.peer_idle_close((conn.netns, conn.remote), idle);
        }
        out.push(Observation::Closed {
            labels,
            lifetime: conn.lifetime(),
            peer_idle_close,
        });
        self.attribution.conns.thread(conn.id, conn.stats.io_tid);
        let closed_ns = conn.stats.closed_ns.max(conn.stats.rst_ns).max(1);
        self.attribution.conns.closed(conn.id, closed_ns);
        let dns_name = self.dns.closed(conn.id);
        self.settling.closed(conn, dns_name, now_ns);
    }

    /// A DNS answer received in `netns` at monotonic `at_ns`.
    pub fn observe_dns(
        &mut self,
        netns: u32,
        answer: DnsAnswer,
        at_ns: u64,
        out: &mut Vec<Observation>,
    ) {
        self.naming.advance(at_ns);
        let changed = self.dns.answer(netns, &answer, at_ns);
        let pod = self.naming.pod_label(netns, 0);
        let name_label = self.naming.dns_name(&pod, &answer.name);
        out.push(Observation::Dns(Box::new(DnsSeen {
            time: self.clock.wall(at_ns),
            netns,
            namespace: pod.namespace,
            pod: pod.pod,
            name_label,
            answer,
            changed,
        })));
        self.report_forgotten(out);
    }

    /// Pods that gave their label's place to new ones: their series go.
    fn report_forgotten(&mut self, out: &mut Vec<Observation>) {
        for pod in self.naming.take_forgotten() {
            out.push(Observation::PodForgotten {
                namespace: pod.namespace,
                pod: pod.pod,
            });
        }
    }

    /// Decides the failures and 503s whose time has come by `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Observation>) {
        self.naming.advance(now_ns);
        while let Some(p) = self.settling.next_ready(now_ns) {
            let failure = self.decide(&p.conn, p.at_ns, p.dns_name.as_deref());
            self.attribution.failure(&failure);
            self.findings
                .failure(&failure, failure.evidence.learned_peer_idle_close);
            out.push(Observation::Failure(Box::new(failure)));
        }
        let mut settled = Vec::new();
        self.attribution.settle(now_ns, &mut settled);
        for s in settled {
            match s {
                Settled::Http503 { seen, verdict } => out.push(self.attributed(seen, verdict)),
                Settled::ProxyAnswered(f) => out.push(Observation::ProxyAnswered503(f)),
            }
        }
        self.report_forgotten(out);
    }

    fn attributed(&mut self, seen: Seen503, verdict: Verdict) -> Observation {
        let pod = self.naming.pod_label(seen.netns, 0);
        let cause = verdict.cause();
        let (failure, passthrough) = match verdict {
            Verdict::Failure(f) => (Some(f), false),
            Verdict::Passthrough => (None, true),
            Verdict::Unattributed => (None, false),
        };
        // The fix belongs where the failure was (the far hop's pod).
        if let Some(f) = &failure {
            self.findings.http_503(&f.namespace, &f.pod, f.cause);
        }
        Observation::Http503(Http503 {
            time: self.clock.wall(seen.at_ns),
            netns: seen.netns,
            namespace: pod.namespace,
            pod: pod.pod,
            pid: seen.pid,
            tid: seen.tid,
            comm: seen.comm,
            local: seen.local,
            remote: seen.remote,
            cause,
            failure,
            passthrough,
        })
    }

    fn decide(&mut self, conn: &Connection, at_ns: u64, dns_name: Option<&str>) -> Failure {
        let sources = facts::Sources {
            topology: &self.topology,
            idle: &self.idle,
            dns: &self.dns,
            reset_reasons: &self.reset_reasons,
            pods: &self.naming.pods,
            clock: self.clock,
            termination_window: self.config.termination_window,
            settle: self.config.settle,
        };
        let (facts, evidence) = facts::gather(conn, at_ns, dns_name, &sources);
        let labels = self.labels((conn.netns, conn.process.cgroup_id), conn.role, conn.remote);
        let peer = self.naming.pods.peer(conn.remote);
        Failure {
            time: self.clock.wall(at_ns),
            at_ns,
            netns: conn.netns,
            namespace: labels.namespace,
            pod: labels.pod,
            pid: conn.process.pid,
            tid: conn.process.tid,
            uid: conn.process.uid,
            comm: conn.process.comm.clone(),
            proxy: self
                .config
                .proxy
                .is_proxy(conn.process.uid, &conn.process.comm),
            direction: labels.direction,
            peer: labels.peer,
            peer_host: peer.as_ref().and_then(|p| p.service_host.clone()),
            peer_port: peer.as_ref().and_then(|p| p.service_port),
            local: conn.local,
            remote: conn.remote,
            end: conn.end.unwrap_or(EndReason::LocalClose),
            stale: is_stale(conn),
            cause: cause::decide(&facts),
            evidence,
        }
    }

    /// Labels of a socket owned by `(netns, cgroup_id)`.
    fn labels(&mut self, owner: (u32, u64), role: Role, remote: std::net::SocketAddr) -> Labels {
        self.naming.labels(&self.topology, owner, role, remote)
    }

    /// Destinations whose peer closes idle connections the local side keeps pooled.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        self.idle
            .iter()
            .filter_map(|(&(netns, remote), d)| {
                let peer = self.naming.pods.peer(remote);
                let labels =
                    self.naming
                        .peek_labels(&self.topology, (netns, 0), Role::Client, remote);
                Some(Mismatch {
                    namespace: labels.namespace,
                    pod: labels.pod,
                    direction: labels.direction,
                    peer: labels.peer,
                    destination: remote,
                    peer_host: peer.as_ref().and_then(|p| p.service_host.clone()),
                    peer_port: peer.as_ref().and_then(|p| p.service_port),
                    peer_idle_close: d.learned_peer_idle_close()?,
                    peer_idle_closes: d.peer_idle_close_count,
                    max_reuse_idle: d.max_reuse_idle,
                })
            })
            .collect()
    }

    /// The findings in `scope`. Reading changes nothing.
    pub fn findings(&self, scope: &Scope) -> Vec<Finding> {
        self.findings.report(&self.mismatches(), scope)
    }

    /// Open connections to addresses their name's latest DNS answer no longer
    /// has, per pod and name: the warning before the 503s.
    pub fn open_to_stale_dns<'a>(
        &self,
        open: impl Iterator<Item = &'a Connection>,
        now_ns: u64,
    ) -> HashMap<(PodName, String), u64> {
        let mut counts = HashMap::new();
        for conn in open.filter(|c| c.role == Role::Client) {
            let Some(name) = self.dns.name_of(conn.id) else {
                continue;
            };
            if self
                .dns
                .staleness(conn.netns, name, conn.remote.ip(), now_ns)
                .is_some()
            {
                let pod = self
                    .naming
                    .peek_pod_label(conn.netns, conn.process.cgroup_id);
                let label = self.naming.peek_dns_name(&pod, name);
                *counts.entry((pod, label)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Open client connections whose destination is terminating, per pod:
    /// its listener on this node has closed, or the cluster says its pod is
    /// terminating (on any node).
    pub fn open_to_terminating<'a>(
        &self,
        open: impl Iterator<Item = &'a Connection>,
    ) -> HashMap<PodName, u64> {
        let mut counts = HashMap::new();
        for conn in open.filter(|c| c.role == Role::Client) {
            let listener_closed = self
                .topology
                .netns_of(conn.netns, conn.remote.ip())
                .is_some_and(|dest| {
                    matches!(
                        self.topology.listener(dest, conn.remote),
                        ListenerView::Closed { .. }
                    )
                });
            let terminating = listener_closed
                || self
                    .naming
                    .pods
                    .peer(conn.remote)
                    .is_some_and(|p| p.terminating.is_some());
            if terminating {
                let pod = self
                    .naming
                    .peek_pod_label(conn.netns, conn.process.cgroup_id);
                *counts.entry(pod).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Observations counted under the label `other`.
    pub fn label_overflows(&self) -> naming::Overflows {
        self.naming.overflows()
    }

    /// Findings dropped for newer ones (the findings cap).
    pub fn findings_dropped(&self) -> u64 {
        self.findings.dropped
    }

    /// Failures waiting to settle (none once a session has wound down).
    pub fn settling(&self) -> usize {
        self.settling.len()
    }
}
