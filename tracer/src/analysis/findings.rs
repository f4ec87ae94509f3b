//! Findings: failure patterns per pod, direction, peer and cause, with their
//! evidence and the fix; and idle-timeout mismatches seen before any 503.
//! One destination gets one idle-timeout finding: a mismatch merges into the
//! failures it explains instead of being reported beside them.

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

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    namespace: String,
    pod: String,
    direction: Direction,
    peer: String,
    cause: Cause,
}

#[derive(Debug, Clone)]
struct Pattern {
    destination: SocketAddr,
    failures: u64,
    stale: u64,
    http_503: u64,
    first_seen: SystemTime,
    last_seen: SystemTime,
    learned_peer_idle_close: Option<Duration>,
    /// The DNS name behind the destination, when one was seen.
    dns_name: Option<String>,
    samples: VecDeque<Failure>,
}

/// A destination whose peer closes idle connections that the local pool keeps.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub namespace: String,
    pub pod: String,
    pub direction: Direction,
    pub peer: String,
    pub destination: SocketAddr,
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
    /// The most recent failures, each with its own evidence.
    pub samples: Vec<Failure>,
    pub remedy: Remedy,
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

#[derive(Debug, Default)]
pub struct Findings {
    patterns: BTreeMap<Key, Pattern>,
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
    pub fn failure(&mut self, f: &Failure, learned: Option<Duration>) {
        let key = Key {
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            direction: f.direction,
            peer: f.peer.clone(),
            cause: f.cause,
        };
        let p = self.patterns.entry(key).or_insert_with(|| Pattern {
            destination: f.remote,
            failures: 0,
            stale: 0,
            http_503: 0,
            first_seen: f.time,
            last_seen: f.time,
            learned_peer_idle_close: None,
            dns_name: None,
            samples: VecDeque::new(),
        });
        if let Some(dns) = &f.evidence.dns {
            p.dns_name = Some(dns.name.clone());
        }
        p.failures += 1;
        p.stale += u64::from(f.stale);
        p.last_seen = f.time;
        p.destination = f.remote;
        if learned.is_some() {
            p.learned_peer_idle_close = learned;
        }
        if p.samples.len() == SAMPLES {
            p.samples.pop_front();
        }
        p.samples.push_back(f.clone());
    }

    /// Counts an attributed 503 on the pattern of its cause in that pod.
    pub fn http_503(&mut self, namespace: &str, pod: &str, cause: Cause) {
        if let Some(p) = self
            .patterns
            .iter_mut()
            .filter(|(k, _)| k.namespace == namespace && k.pod == pod && k.cause == cause)
            .map(|(_, p)| p)
            .max_by_key(|p| p.failures)
        {
            p.http_503 += 1;
        }
    }

    /// Every finding in `scope`: the failure patterns, with each mismatch
    /// merged into its destination's idle-timeout failures or, when there
    /// are none, reported on its own.
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
            let same_pair = |f: &Finding| {
                f.namespace == m.namespace
                    && f.pod == m.pod
                    && f.direction == m.direction
                    && f.peer == m.peer
            };
            match out
                .iter_mut()
                .find(|f| same_pair(f) && f.cause == Cause::IdleTimeout)
            {
                Some(f) => {
                    f.evidence.learned_peer_idle_close = Some(m.peer_idle_close);
                    f.evidence.max_idle_before_reuse = Some(m.max_reuse_idle);
                    f.evidence.peer_idle_closes = Some(m.peer_idle_closes);
                }
                None => out.push(mismatch_finding(m)),
            }
        }
        out
    }
}

fn pattern_finding(k: &Key, p: &Pattern) -> Finding {
    // A name from DNS is the host Istio knows the destination by.
    let host = p
        .dns_name
        .clone()
        .unwrap_or_else(|| host_of(&k.peer, &k.namespace, p.destination));
    let target = Target {
        namespace: k.namespace.clone(),
        host,
        port: p.destination.port(),
    };
    Finding {
        kind: if p.stale > 0 {
            FindingKind::StaleConnectionFailures
        } else {
            FindingKind::ConnectionFailures
        },
        cause: k.cause,
        namespace: k.namespace.clone(),
        pod: k.pod.clone(),
        direction: k.direction,
        peer: k.peer.clone(),
        destination: p.destination,
        failures: p.failures,
        stale_failures: p.stale,
        http_503: p.http_503,
        first_seen: Some(p.first_seen),
        last_seen: Some(p.last_seen),
        evidence: FindingEvidence {
            learned_peer_idle_close: p.learned_peer_idle_close,
            max_idle_before_request: p
                .samples
                .iter()
                .filter_map(|s| s.evidence.idle_before_request)
                .max(),
            ..FindingEvidence::default()
        },
        samples: p.samples.iter().cloned().collect(),
        remedy: remedy::for_cause(k.cause, &target, p.learned_peer_idle_close),
    }
}

fn mismatch_finding(m: &Mismatch) -> Finding {
    let target = Target {
        namespace: m.namespace.clone(),
        host: host_of(&m.peer, &m.namespace, m.destination),
        port: m.destination.port(),
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
        samples: Vec::new(),
        remedy: remedy::for_cause(Cause::IdleTimeout, &target, Some(m.peer_idle_close)),
    }
}
