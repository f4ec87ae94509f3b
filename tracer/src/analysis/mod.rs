//! Attribution: from connection events to failures with a cause, 503s with
//! the cause of the upstream failure behind them, and findings with a fix.
//!
//! The analyzer sees every event after the connection table has applied it.
//! Failures are decided a moment after their connection closes (`settle`),
//! so that related events (a listener closing, the 503 the proxy writes)
//! have arrived; 503s wait up to the attribution window for their failure.

pub mod attribution;
pub mod cause;
pub mod direction;
pub mod failure;
pub mod findings;
pub mod learning;
pub mod peers;
pub mod proxy;
pub mod remedy;
pub mod topology;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::Duration,
};

use tracer_common::event::{EventKind, ResetSide, Role};

use crate::{
    conntrack::{Connection, EndReason, table::Applied},
    dns::{DnsAnswer, DnsHistory},
    events::{Clock, Event},
    kernel::setup::ResetReasons,
    metadata::{PodName, PodResolver},
};
use attribution::{Attributed503, Attributor, Seen503};
use cause::{Cause, Facts};
use direction::{Direction, DirectionClassifier};
use failure::{DnsEvidence, Evidence, Failure, failure_moment, is_stale, ms, request_in_flight};
use findings::{Findings, Mismatch};
use learning::IdleLearner;
use peers::PeerLabels;
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
            peer_addresses: false,
        }
    }
}

/// The bounded labels a connection is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    pub namespace: String,
    pub pod: String,
    pub direction: Direction,
    pub peer: String,
}

/// What the analyzer concluded from an event (or from time passing).
#[derive(Debug, Clone)]
pub enum Observation {
    Opened {
        labels: Labels,
        role: Role,
    },
    Reset {
        labels: Labels,
        side: &'static str,
        reason: String,
    },
    Reuse {
        labels: Labels,
        idle: Duration,
    },
    Closed {
        labels: Labels,
        lifetime: Option<Duration>,
        peer_idle_close: Option<Duration>,
    },
    Failure(Box<Failure>),
    Http503(Http503),
    Dns(Box<DnsSeen>),
}

/// A DNS answer seen in a pod.
#[derive(Debug, Clone)]
pub struct DnsSeen {
    pub time: String,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    /// Bounded label value for the name (`other` past the per-pod cap).
    pub name_label: String,
    pub answer: DnsAnswer,
    /// The address set differs from the name's previous answer.
    pub changed: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Http503 {
    pub time: String,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    /// `None`: no upstream failure of that proxy explains it.
    pub cause: Option<Cause>,
}

struct PendingFailure {
    ready_ns: u64,
    at_ns: u64,
    conn: Box<Connection>,
    /// The DNS name the connection was opened for.
    dns_name: Option<String>,
}

pub struct Analyzer {
    config: AnalysisConfig,
    clock: Clock,
    reset_reasons: ResetReasons,
    pub topology: Topology,
    pub learner: IdleLearner,
    peers: PeerLabels,
    pending: VecDeque<PendingFailure>,
    attribution: Attributor,
    pub findings: Findings,
    /// Pid of each proxy process per netns, for 503s whose socket owner is unknown.
    proxies: HashMap<u32, u32>,
    pub dns: DnsHistory,
    /// Bounded `name` label values per pod.
    dns_labels: PeerLabels,
    /// Open client connection id → the DNS name it was opened for.
    conn_names: HashMap<u64, String>,
}

impl Analyzer {
    pub fn new(config: AnalysisConfig, clock: Clock, reset_reasons: ResetReasons) -> Self {
        let config_peer_cap = config.peer_cap;
        Self {
            attribution: Attributor::new(config.attribution_window),
            peers: PeerLabels::new(config.peer_cap),
            config,
            clock,
            reset_reasons,
            topology: Topology::default(),
            learner: IdleLearner::default(),
            pending: VecDeque::new(),
            findings: Findings::default(),
            proxies: HashMap::new(),
            dns: DnsHistory::default(),
            dns_labels: PeerLabels::new(config_peer_cap),
            conn_names: HashMap::new(),
        }
    }

    pub fn config(&self) -> &AnalysisConfig {
        &self.config
    }

    pub fn reason_name(&self, reason: u32) -> String {
        self.reset_reasons.name(reason)
    }

    /// Labels for a connection of `netns` with `role` to `remote`.
    pub fn labels(
        &mut self,
        pods: &mut PodResolver,
        netns: u32,
        role: Role,
        remote: SocketAddr,
    ) -> Labels {
        let pod = pods.resolve(netns);
        let dest_netns = self.topology.netns_of(netns, remote.ip());
        let same_pod = dest_netns == Some(netns);
        let direction = self.config.directions.classify(role, remote.ip(), same_pod);
        let candidate = match dest_netns {
            Some(n) if role == Role::Client => pods.resolve(n).qualified(),
            _ if self.config.peer_addresses => remote.to_string(),
            _ if role == Role::Server => "downstream".to_owned(),
            _ => format!("port-{}", remote.port()),
        };
        let peer = self.peers.label(netns, candidate);
        Labels {
            namespace: pod.namespace,
            pod: pod.pod,
            direction,
            peer,
        }
    }

    pub fn observe(
        &mut self,
        ev: &Event,
        applied: &Applied,
        pods: &mut PodResolver,
        out: &mut Vec<Observation>,
    ) {
        match ev.kind {
            EventKind::Listen => self.topology.listen(ev.netns, ev.local, ev.mono_ns),
            EventKind::ListenClose => self.topology.unlisten(ev.netns, ev.local, ev.mono_ns),
            EventKind::Connect | EventKind::Accept => {
                self.topology.own(ev.netns, ev.local.ip());
                if let (EventKind::Connect, Applied::Open { id }) = (ev.kind, applied)
                    && let Some(name) =
                        self.dns
                            .name_for(ev.netns, ev.remote.ip(), ev.stats.start_ns.max(1))
                {
                    self.conn_names.insert(*id, name);
                }
                if self.config.proxy.is_proxy(ev.process.uid, &ev.process.comm) {
                    self.proxies.insert(ev.netns, ev.process.pid);
                }
                let labels = self.labels(pods, ev.netns, ev.role, ev.remote);
                out.push(Observation::Opened {
                    labels,
                    role: ev.role,
                });
            }
            EventKind::Reset => {
                let Some(reset) = ev.reset else { return };
                if reset.side == ResetSide::Sent && ev.local.port() != 0 {
                    // Even a refusal tells us who owns the address.
                    self.topology.own(ev.netns, ev.local.ip());
                }
                let labels = self.labels(pods, ev.netns, ev.role, ev.remote);
                let (side, reason) = match reset.side {
                    ResetSide::Sent => (
                        "sent",
                        reset
                            .reason
                            .map_or_else(|| "unknown".into(), |r| self.reason_name(r)),
                    ),
                    _ => ("received", "peer".to_owned()),
                };
                out.push(Observation::Reset {
                    labels,
                    side,
                    reason,
                });
            }
            EventKind::Reuse => {
                if let Some(idle) = (ev.stats.last_reuse_idle_ns != 0)
                    .then(|| Duration::from_nanos(ev.stats.last_reuse_idle_ns))
                {
                    self.learner.reuse((ev.netns, ev.remote), idle);
                    let labels = self.labels(pods, ev.netns, ev.role, ev.remote);
                    out.push(Observation::Reuse { labels, idle });
                }
            }
            EventKind::HttpStatus => {
                // A 503 a proxy wrote to its downstream (a socket it accepted).
                let Applied::Open { .. } = applied else {
                    return;
                };
                if ev.role == Role::Server
                    && self.config.proxy.is_proxy(ev.process.uid, &ev.process.comm)
                {
                    self.attribution.seen_503(Seen503 {
                        at_ns: ev.mono_ns,
                        netns: ev.netns,
                        pid: ev.process.pid,
                    });
                }
            }
            EventKind::Close => {
                let Applied::Closed(conn) = applied else {
                    return;
                };
                self.closed(conn, pods, out);
            }
        }
    }

    fn closed(&mut self, conn: &Connection, pods: &mut PodResolver, out: &mut Vec<Observation>) {
        if conn.local.port() != 0 {
            self.topology.own(conn.netns, conn.local.ip());
        }
        let labels = self.labels(pods, conn.netns, conn.role, conn.remote);
        // A FIN right after a response is the protocol (`Connection: close`), not an idle timeout.
        let peer_idle_close = conn
            .idle_at_peer_close()
            .filter(|idle| *idle >= MIN_PEER_IDLE_CLOSE && !request_in_flight(conn));
        if let (Some(idle), Role::Client) = (peer_idle_close, conn.role) {
            self.learner
                .peer_idle_close((conn.netns, conn.remote), idle);
        }
        out.push(Observation::Closed {
            labels,
            lifetime: conn.lifetime(),
            peer_idle_close,
        });
        let dns_name = self.conn_names.remove(&conn.id);
        if let Some(at_ns) = failure_moment(conn) {
            let ready_ns = Clock::mono_now() + self.config.settle.as_nanos() as u64;
            self.pending.push_back(PendingFailure {
                ready_ns,
                at_ns,
                conn: Box::new(conn.clone()),
                dns_name,
            });
        }
    }

    /// Decides failures and 503s whose time has come.
    pub fn tick(&mut self, pods: &mut PodResolver, out: &mut Vec<Observation>) {
        let now = Clock::mono_now();
        while self.pending.front().is_some_and(|p| p.ready_ns <= now) {
            let p = self.pending.pop_front().expect("checked");
            let failure = self.decide(&p.conn, p.at_ns, p.dns_name.as_deref(), pods);
            self.attribution
                .failure(p.at_ns, failure.netns, failure.pid, failure.cause);
            let learned = self
                .learner
                .get(&(p.conn.netns, p.conn.remote))
                .and_then(|d| d.learned_peer_idle_close());
            self.findings
                .failure(&failure, p.conn.remote.port(), learned);
            out.push(Observation::Failure(Box::new(failure)));
        }
        let mut settled: Vec<Attributed503> = Vec::new();
        self.attribution.settle(now, &mut settled);
        for a in settled {
            let pod = pods.resolve(a.netns);
            if let Some(cause) = a.cause {
                self.findings.http_503(&pod.namespace, &pod.pod, cause);
            }
            out.push(Observation::Http503(Http503 {
                time: humantime::format_rfc3339_nanos(self.clock.wall(a.at_ns)).to_string(),
                netns: a.netns,
                namespace: pod.namespace,
                pod: pod.pod,
                cause: a.cause,
            }));
        }
    }

    fn decide(
        &mut self,
        conn: &Connection,
        at_ns: u64,
        dns_name: Option<&str>,
        pods: &mut PodResolver,
    ) -> Failure {
        let s = &conn.stats;
        let end = conn.end.unwrap_or(EndReason::LocalClose);
        let dest = (conn.netns, conn.remote);
        let learned = self
            .learner
            .get(&dest)
            .and_then(|d| d.learned_peer_idle_close());
        let dest_netns = self.topology.netns_of(conn.netns, conn.remote.ip());
        let listener = dest_netns.map_or(ListenerView::Unknown, |n| {
            self.topology.listener(n, conn.remote)
        });
        let window = self.config.termination_window.as_nanos() as u64;
        let settle = self.config.settle.as_nanos() as u64;
        let listener_closed_before = match listener {
            // The app may close its listener just after the connections it drains.
            ListenerView::Closed { at_ns: closed }
                if closed <= at_ns + settle && at_ns.saturating_sub(closed) <= window =>
            {
                Some(Duration::from_nanos(at_ns.saturating_sub(closed)))
            }
            _ => None,
        };
        let listener_only_on = match &listener {
            ListenerView::OtherAddressOnly(addrs) => addrs.iter().map(|a| a.to_string()).collect(),
            _ => Vec::new(),
        };
        let reused = s.requests >= 2;
        let staleness = dns_name.and_then(|name| {
            self.dns
                .staleness(conn.netns, name, conn.remote.ip(), at_ns)
        });
        let facts = Facts {
            connect_refused: end == EndReason::ConnectRefused,
            reset_received: end == EndReason::ResetReceived,
            same_pod: dest_netns == Some(conn.netns),
            listener_closed_before,
            listener_other_address_only: !listener_only_on.is_empty(),
            dns_stale: staleness.is_some(),
            reused,
            peer_closed_before_request: s.fin_in_ns != 0 && s.fin_in_ns <= s.last_send_ns,
            idle_before_request: conn.last_reuse_idle().filter(|_| reused),
            learned_peer_idle_close: learned,
        };
        let cause = cause::decide(&facts);
        let peer_close_at = if s.rst_ns != 0 && s.flags & tracer_common::event::flags::RST_IN != 0 {
            s.rst_ns
        } else {
            s.fin_in_ns
        };
        let evidence = Evidence {
            idle_before_request_ms: facts.idle_before_request.map(ms),
            learned_peer_idle_close_ms: learned.map(ms),
            peer_closed_before_request: facts.peer_closed_before_request,
            last_send_to_peer_close_ms: (s.last_send_ns != 0 && peer_close_at >= s.last_send_ns)
                .then(|| ms(Duration::from_nanos(peer_close_at - s.last_send_ns))),
            peer_close: match end {
                EndReason::ConnectRefused => "refused",
                EndReason::ConnectTimeout => "timeout",
                EndReason::ResetReceived => "reset",
                _ => "fin",
            },
            reset_sent_reason: (s.flags & tracer_common::event::flags::RST_REASON != 0)
                .then(|| self.reason_name(s.rst_reason)),
            listener_closed_before_ms: listener_closed_before.map(ms),
            listener_only_on,
            dns: staleness.map(|st| DnsEvidence {
                name: st.name,
                old_answer: st.old_answer,
                new_answer: st.new_answer,
                changed_before_failure_ms: ms(Duration::from_nanos(
                    at_ns.saturating_sub(st.since_ns),
                )),
                ttl_expired: st.ttl_expired,
            }),
            requests: s.requests,
            connection_age_ms: ms(Duration::from_nanos(at_ns.saturating_sub(s.start_ns))),
        };
        let labels = self.labels(pods, conn.netns, conn.role, conn.remote);
        Failure {
            time: humantime::format_rfc3339_nanos(self.clock.wall(at_ns)).to_string(),
            at_ns,
            netns: conn.netns,
            namespace: labels.namespace,
            pod: labels.pod,
            pid: conn.process.pid,
            comm: conn.process.comm.clone(),
            proxy: self
                .config
                .proxy
                .is_proxy(conn.process.uid, &conn.process.comm),
            direction: labels.direction,
            peer: labels.peer,
            local: conn.local.to_string(),
            remote: conn.remote.to_string(),
            end: end.as_str(),
            stale: is_stale(conn),
            cause,
            evidence,
        }
    }

    /// Destinations whose peer closes idle connections the local side keeps pooled.
    pub fn mismatches(&mut self, pods: &mut PodResolver) -> Vec<Mismatch> {
        let learned: Vec<_> = self
            .learner
            .iter()
            .filter_map(|(dest, d)| {
                Some((
                    *dest,
                    d.learned_peer_idle_close()?,
                    d.peer_idle_close_count,
                    d.max_reuse_idle,
                ))
            })
            .collect();
        learned
            .into_iter()
            .map(
                |((netns, remote), peer_idle_close, count, max_reuse_idle)| {
                    let labels = self.labels(pods, netns, Role::Client, remote);
                    Mismatch {
                        namespace: labels.namespace,
                        pod: labels.pod,
                        direction: labels.direction,
                        peer: labels.peer,
                        destination: remote.to_string(),
                        port: remote.port(),
                        peer_idle_close,
                        peer_idle_closes: count,
                        max_reuse_idle,
                    }
                },
            )
            .collect()
    }

    /// A DNS answer received in `netns` at monotonic `at_ns`.
    pub fn observe_dns(
        &mut self,
        netns: u32,
        answer: DnsAnswer,
        at_ns: u64,
        pods: &mut PodResolver,
        out: &mut Vec<Observation>,
    ) {
        let changed = self.dns.record(netns, &answer, at_ns).is_some();
        let pod = pods.resolve(netns);
        let name_label = self.dns_labels.label(netns, answer.name.clone());
        out.push(Observation::Dns(Box::new(DnsSeen {
            time: humantime::format_rfc3339_nanos(self.clock.wall(at_ns)).to_string(),
            netns,
            namespace: pod.namespace,
            pod: pod.pod,
            name_label,
            answer,
            changed,
        })));
    }

    /// Open connections to addresses their name's latest DNS answer no longer
    /// has, per pod and name: the warning before the 503s.
    pub fn open_to_stale_dns<'a>(
        &mut self,
        open: impl Iterator<Item = &'a Connection>,
        pods: &mut PodResolver,
    ) -> HashMap<(PodName, String), u64> {
        let now = Clock::mono_now();
        let mut counts = HashMap::new();
        for conn in open.filter(|c| c.role == Role::Client) {
            let Some(name) = self.conn_names.get(&conn.id) else {
                continue;
            };
            if self
                .dns
                .staleness(conn.netns, name, conn.remote.ip(), now)
                .is_some()
            {
                let label = self.dns_labels.label(conn.netns, name.clone());
                *counts.entry((pods.resolve(conn.netns), label)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Open client connections whose destination's listener has closed, per pod.
    pub fn open_to_terminating<'a>(
        &self,
        open: impl Iterator<Item = &'a Connection>,
        pods: &mut PodResolver,
    ) -> HashMap<PodName, u64> {
        let mut counts = HashMap::new();
        for conn in open.filter(|c| c.role == Role::Client) {
            let Some(dest_netns) = self.topology.netns_of(conn.netns, conn.remote.ip()) else {
                continue;
            };
            if matches!(
                self.topology.listener(dest_netns, conn.remote),
                ListenerView::Closed { .. }
            ) {
                *counts.entry(pods.resolve(conn.netns)).or_insert(0) += 1;
            }
        }
        counts
    }
}
