//! Findings: one per pod, direction, peer and port — its failures by cause (the
//! cause with the most failures leads and gives the fix), the evidence, and
//! the peer's idle closes. An idle-timeout mismatch seen before any failure
//! is a finding of its own; once failures come it merges into theirs, so
//! findings for one pair never contradict each other.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    cause::Cause,
    direction::Direction,
    failure::Failure,
    remedy::{self, Remedy, Target},
};
use crate::units::{serde_ms_opt, serde_rfc3339_opt};

/// Recent failures kept per pattern.
const SAMPLES: usize = 5;

/// A pod's connections to one peer's port, in one direction: one finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    namespace: String,
    pod: String,
    direction: Direction,
    peer: String,
    port: u16,
}

#[derive(Debug, Clone)]
struct Pattern {
    destination: SocketAddr,
    by_cause: BTreeMap<Cause, CauseCount>,
    learned_peer_idle_close: Option<Duration>,
    /// The DNS name behind the destination, when one was seen.
    dns_name: Option<String>,
    /// The Service host and port the cluster knows it by.
    service_host: Option<String>,
    service_port: Option<u16>,
    samples: VecDeque<Failure>,
    /// When it last changed, in updates since the start (for eviction).
    touched: u64,
}

/// The failures of one cause within a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CauseCount {
    pub cause: Cause,
    pub failures: u64,
    pub stale_failures: u64,
    pub http_503: u64,
    #[serde(with = "crate::units::serde_rfc3339")]
    pub first_seen: SystemTime,
    #[serde(with = "crate::units::serde_rfc3339")]
    pub last_seen: SystemTime,
}

/// A destination whose peer closes idle connections that the local pool keeps.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub namespace: String,
    pub pod: String,
    pub direction: Direction,
    pub peer: String,
    pub destination: SocketAddr,
    /// The Service host the cluster knows the destination by.
    pub peer_host: Option<String>,
    /// The Service's port for it.
    pub peer_port: Option<u16>,
    pub peer_idle_close: Duration,
    pub peer_idle_closes: u64,
    pub max_reuse_idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Failures on reused connections: 503s unless retries hide them.
    StaleConnectionFailures,
    /// Failures, none on a reused connection (refused or timed-out connects).
    ConnectionFailures,
    /// No failure yet: the peer closes idle connections the pool keeps.
    IdleTimeoutMismatch,
}

impl FindingKind {
    pub fn title(self) -> &'static str {
        match self {
            FindingKind::StaleConnectionFailures => "stale connection failures",
            FindingKind::ConnectionFailures => "connection failures",
            FindingKind::IdleTimeoutMismatch => "idle timeout mismatch",
        }
    }
}

/// Summary evidence of a finding.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingEvidence {
    #[serde(
        rename = "learned_peer_idle_close_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub learned_peer_idle_close: Option<Duration>,
    /// Longest idle gap before a request that failed.
    #[serde(
        rename = "max_idle_before_request_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_idle_before_request: Option<Duration>,
    /// Longest idle gap the pool let pass before reusing a connection.
    #[serde(
        rename = "max_idle_before_reuse_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_idle_before_reuse: Option<Duration>,
    /// Idle connections the peer was seen closing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_idle_closes: Option<u64>,
}

impl std::fmt::Display for FindingEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::units::ms;
        let mut pairs = Vec::new();
        let durations = [
            ("learned_peer_idle_close_ms", self.learned_peer_idle_close),
            ("max_idle_before_request_ms", self.max_idle_before_request),
            ("max_idle_before_reuse_ms", self.max_idle_before_reuse),
        ];
        for (key, value) in durations {
            if let Some(v) = value {
                pairs.push(format!("{key}={}", ms(v)));
            }
        }
        if let Some(n) = self.peer_idle_closes {
            pairs.push(format!("peer_idle_closes={n}"));
        }
        f.write_str(&pairs.join(" "))
    }
}

impl FindingEvidence {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub cause: Cause,
    pub namespace: String,
    pub pod: String,
    pub direction: Direction,
    pub peer: String,
    pub destination: SocketAddr,
    pub failures: u64,
    pub stale_failures: u64,
    pub http_503: u64,
    #[serde(
        with = "serde_rfc3339_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub first_seen: Option<SystemTime>,
    #[serde(
        with = "serde_rfc3339_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_seen: Option<SystemTime>,
    pub evidence: FindingEvidence,
    /// Every cause seen for this pod and peer, most failures first; the
    /// finding's `cause` is the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<CauseCount>,
    /// The most recent failures, each with its own evidence and cause.
    pub samples: Vec<Failure>,
    pub remedy: Remedy,
    /// What else the evidence says about this pod and peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Which findings a report is for.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

impl Scope {
    fn covers(&self, namespace: &str, pod: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.pod.as_deref().is_none_or(|p| p == pod)
    }
}

/// At most `cap` patterns: a new one past that replaces the least recently
/// seen (failures come and go; the recent ones are the ones to fix).
#[derive(Debug)]
pub struct Findings {
    patterns: BTreeMap<Key, Pattern>,
    cap: usize,
    updates: u64,
    /// Patterns dropped for newer ones.
    pub dropped: u64,
}

/// The service host Istio knows a destination by, guessed from the peer
/// label without Kubernetes (`ns/pod` → `pod.ns.svc.cluster.local`).
fn host_of(peer: &str, namespace: &str, destination: SocketAddr) -> String {
    match peer.split_once('/') {
        Some((ns, pod)) => format!("{pod}.{ns}.svc.cluster.local"),
        None if peer.starts_with("port-") || peer == super::naming::OVERFLOW => {
            destination.ip().to_string()
        }
        None => format!("{peer}.{namespace}.svc.cluster.local"),
    }
}

impl Findings {
    pub fn new(cap: usize) -> Self {
        Self {
            patterns: BTreeMap::new(),
            cap: cap.max(1),
            updates: 0,
            dropped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Makes room for one more pattern, dropping the least recently seen.
    fn make_room(&mut self) {
        while self.patterns.len() >= self.cap {
            let Some(oldest) = self
                .patterns
                .iter()
                .min_by_key(|(_, p)| p.touched)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.patterns.remove(&oldest);
            self.dropped += 1;
        }
    }

    pub fn failure(&mut self, f: &Failure, learned: Option<Duration>) {
        let key = Key {
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            direction: f.direction,
            peer: f.peer.clone(),
            port: f.remote.port(),
        };
        if !self.patterns.contains_key(&key) {
            self.make_room();
        }
        self.updates += 1;
        let p = self.patterns.entry(key).or_insert_with(|| Pattern {
            destination: f.remote,
            by_cause: BTreeMap::new(),
            learned_peer_idle_close: None,
            dns_name: None,
            service_host: None,
            service_port: None,
            samples: VecDeque::new(),
            touched: 0,
        });
        p.touched = self.updates;
        let count = p.by_cause.entry(f.cause).or_insert(CauseCount {
            cause: f.cause,
            failures: 0,
            stale_failures: 0,
            http_503: 0,
            first_seen: f.time,
            last_seen: f.time,
        });
        count.failures += 1;
        count.stale_failures += u64::from(f.stale);
        count.last_seen = f.time;
        if let Some(dns) = &f.evidence.dns {
            p.dns_name = Some(dns.name.clone());
        }
        if f.peer_host.is_some() {
            p.service_host = f.peer_host.clone();
            p.service_port = f.peer_port;
        }
        p.destination = f.remote;
        if learned.is_some() {
            p.learned_peer_idle_close = learned;
        }
        if p.samples.len() == SAMPLES {
            p.samples.pop_front();
        }
        p.samples.push_back(f.clone());
    }

    /// Counts an attributed 503 on the peer of that pod with the most
    /// failures of its cause.
    pub fn http_503(&mut self, namespace: &str, pod: &str, cause: Cause) {
        if let Some(count) = self
            .patterns
            .iter_mut()
            .filter(|(k, _)| k.namespace == namespace && k.pod == pod)
            .filter_map(|(_, p)| p.by_cause.get_mut(&cause))
            .max_by_key(|c| c.failures)
        {
            count.http_503 += 1;
        }
    }

    /// Every finding in `scope`: one per pod, peer and port, with each mismatch
    /// merged into its pair's failures or, when there are none, reported on
    /// its own; at most `cap` findings.
    pub fn report(&self, mismatches: &[Mismatch], scope: &Scope) -> Vec<Finding> {
        let mut out: Vec<Finding> = self
            .patterns
            .iter()
            .filter(|(k, _)| scope.covers(&k.namespace, &k.pod))
            .map(|(k, p)| pattern_finding(k, p))
            .collect();
        for m in mismatches
            .iter()
            .filter(|m| scope.covers(&m.namespace, &m.pod))
        {
            let pair = out.iter_mut().find(|f| {
                f.namespace == m.namespace
                    && f.pod == m.pod
                    && f.direction == m.direction
                    && f.peer == m.peer
                    && f.destination.port() == m.destination.port()
            });
            match pair {
                Some(f) => merge_mismatch(f, m),
                None => out.push(mismatch_finding(m)),
            }
        }
        // At most the cap in all: failures first, then mismatches alone.
        out.truncate(self.cap);
        out
    }
}

/// The peer's idle closes, added to the failures of the same pod and peer.
fn merge_mismatch(f: &mut Finding, m: &Mismatch) {
    f.evidence.learned_peer_idle_close = Some(m.peer_idle_close);
    f.evidence.max_idle_before_reuse = Some(m.max_reuse_idle);
    f.evidence.peer_idle_closes = Some(m.peer_idle_closes);
    if f.cause != Cause::IdleTimeout {
        f.notes.push(format!(
            "the peer also closes idle connections after {}: keep the pool's idleTimeout below it ({}) \
             so that no request races its close",
            remedy::format_duration(m.peer_idle_close),
            remedy::format_duration(remedy::idle_timeout_below(m.peer_idle_close))
        ));
    }
}

fn pattern_finding(k: &Key, p: &Pattern) -> Finding {
    let mut causes: Vec<CauseCount> = p.by_cause.values().cloned().collect();
    // Most failures first; equal counts in the precedence order (the map's).
    causes.sort_by_key(|c| std::cmp::Reverse(c.failures));
    let primary = causes[0].cause;
    // The Service host from the cluster, or a name from DNS, is the host
    // Istio knows the destination by; without either, a guess from the peer.
    let host = p
        .service_host
        .clone()
        .or_else(|| p.dns_name.clone())
        .unwrap_or_else(|| host_of(&k.peer, &k.namespace, p.destination));
    let target = Target {
        namespace: k.namespace.clone(),
        host,
        port: p.service_port.unwrap_or(p.destination.port()),
    };
    let sum = |field: fn(&CauseCount) -> u64| causes.iter().map(field).sum::<u64>();
    let stale = sum(|c| c.stale_failures);
    Finding {
        kind: if stale > 0 {
            FindingKind::StaleConnectionFailures
        } else {
            FindingKind::ConnectionFailures
        },
        cause: primary,
        namespace: k.namespace.clone(),
        pod: k.pod.clone(),
        direction: k.direction,
        peer: k.peer.clone(),
        destination: p.destination,
        failures: sum(|c| c.failures),
        stale_failures: stale,
        http_503: sum(|c| c.http_503),
        first_seen: causes.iter().map(|c| c.first_seen).min(),
        last_seen: causes.iter().map(|c| c.last_seen).max(),
        evidence: FindingEvidence {
            learned_peer_idle_close: p.learned_peer_idle_close,
            max_idle_before_request: p
                .samples
                .iter()
                .filter_map(|s| s.evidence.idle_before_request)
                .max(),
            ..FindingEvidence::default()
        },
        causes,
        samples: p.samples.iter().cloned().collect(),
        remedy: remedy::for_cause(primary, &target, p.learned_peer_idle_close),
        notes: Vec::new(),
    }
}

fn mismatch_finding(m: &Mismatch) -> Finding {
    let target = Target {
        namespace: m.namespace.clone(),
        host: m
            .peer_host
            .clone()
            .unwrap_or_else(|| host_of(&m.peer, &m.namespace, m.destination)),
        port: m.peer_port.unwrap_or(m.destination.port()),
    };
    Finding {
        kind: FindingKind::IdleTimeoutMismatch,
        cause: Cause::IdleTimeout,
        namespace: m.namespace.clone(),
        pod: m.pod.clone(),
        direction: m.direction,
        peer: m.peer.clone(),
        destination: m.destination,
        failures: 0,
        stale_failures: 0,
        http_503: 0,
        first_seen: None,
        last_seen: None,
        evidence: FindingEvidence {
            learned_peer_idle_close: Some(m.peer_idle_close),
            max_idle_before_reuse: Some(m.max_reuse_idle),
            peer_idle_closes: Some(m.peer_idle_closes),
            ..FindingEvidence::default()
        },
        causes: Vec::new(),
        samples: Vec::new(),
        remedy: remedy::for_cause(Cause::IdleTimeout, &target, Some(m.peer_idle_close)),
        notes: Vec::new(),
    }
}
