//! Findings: failure patterns per pod, direction, peer and cause, with their
//! evidence and the fix; plus idle-timeout mismatches seen before any 503.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use serde::Serialize;

use super::{
    cause::Cause,
    direction::Direction,
    failure::{Failure, ms},
    remedy::{self, Remedy, Target},
};

const SAMPLES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    namespace: String,
    pod: String,
    direction: &'static str,
    peer: String,
    cause: Cause,
}

#[derive(Debug, Clone)]
struct Pattern {
    destination: String,
    port: u16,
    failures: u64,
    stale: u64,
    http_503: u64,
    first_seen: String,
    last_seen: String,
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
    pub destination: String,
    pub port: u16,
    pub peer_idle_close: Duration,
    pub peer_idle_closes: u64,
    pub max_reuse_idle: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `stale_connection_failures`, `connection_failures` or `idle_timeout_mismatch`.
    pub kind: &'static str,
    pub cause: Cause,
    pub namespace: String,
    pub pod: String,
    pub direction: &'static str,
    pub peer: String,
    pub destination: String,
    pub failures: u64,
    pub stale_failures: u64,
    pub http_503: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Summary evidence: learned timeouts and counts.
    pub evidence: BTreeMap<&'static str, serde_json::Value>,
    /// The most recent failures, each with its own evidence.
    pub samples: Vec<Failure>,
    pub remedy: Remedy,
}

#[derive(Debug, Default)]
pub struct Findings {
    patterns: BTreeMap<Key, Pattern>,
}

fn host_of(peer: &str, namespace: &str, destination: &str) -> String {
    // Without Kubernetes the peer is a pod name (`ns/pod`) or a port; the
    // service host is our best guess from it.
    match peer.split_once('/') {
        Some((ns, pod)) => format!("{pod}.{ns}.svc.cluster.local"),
        None if peer.starts_with("port-") || peer == "other" => destination.to_owned(),
        None => format!("{peer}.{namespace}.svc.cluster.local"),
    }
}

impl Findings {
    pub fn failure(&mut self, f: &Failure, port: u16, learned: Option<Duration>) {
        let key = Key {
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            direction: f.direction.as_str(),
            peer: f.peer.clone(),
            cause: f.cause,
        };
        let p = self.patterns.entry(key).or_insert_with(|| Pattern {
            destination: f.remote.clone(),
            port,
            failures: 0,
            stale: 0,
            http_503: 0,
            first_seen: f.time.clone(),
            last_seen: f.time.clone(),
            learned_peer_idle_close: None,
            dns_name: None,
            samples: VecDeque::new(),
        });
        if let Some(dns) = &f.evidence.dns {
            p.dns_name = Some(dns.name.clone());
        }
        p.failures += 1;
        p.stale += u64::from(f.stale);
        p.last_seen = f.time.clone();
        p.destination = f.remote.clone();
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

    /// Every finding, optionally for one namespace and pod; mismatches included.
    pub fn report(
        &self,
        mismatches: &[Mismatch],
        namespace: Option<&str>,
        pod: Option<&str>,
    ) -> Vec<Finding> {
        let wanted =
            |ns: &str, p: &str| namespace.is_none_or(|n| n == ns) && pod.is_none_or(|x| x == p);
        let mut out: Vec<Finding> = self
            .patterns
            .iter()
            .filter(|(k, _)| wanted(&k.namespace, &k.pod))
            .map(|(k, p)| {
                // A name from DNS is the host Istio knows the destination by.
                let host = p
                    .dns_name
                    .clone()
                    .unwrap_or_else(|| host_of(&k.peer, &k.namespace, &p.destination));
                let target = Target {
                    namespace: k.namespace.clone(),
                    host,
                    port: p.port,
                };
                let mut evidence = BTreeMap::new();
                if let Some(l) = p.learned_peer_idle_close {
                    evidence.insert("learned_peer_idle_close_ms", ms(l).into());
                }
                let idles: Vec<f64> = p
                    .samples
                    .iter()
                    .filter_map(|s| s.evidence.idle_before_request_ms)
                    .collect();
                if !idles.is_empty() {
                    evidence.insert(
                        "max_idle_before_request_ms",
                        idles.iter().cloned().fold(0.0, f64::max).into(),
                    );
                }
                Finding {
                    kind: if p.stale > 0 {
                        "stale_connection_failures"
                    } else {
                        "connection_failures"
                    },
                    cause: k.cause,
                    namespace: k.namespace.clone(),
                    pod: k.pod.clone(),
                    direction: k.direction,
                    peer: k.peer.clone(),
                    destination: p.destination.clone(),
                    failures: p.failures,
                    stale_failures: p.stale,
                    http_503: p.http_503,
                    first_seen: Some(p.first_seen.clone()),
                    last_seen: Some(p.last_seen.clone()),
                    evidence,
                    samples: p.samples.iter().cloned().collect(),
                    remedy: remedy::for_cause(k.cause, &target, p.learned_peer_idle_close),
                }
            })
            .collect();
        for m in mismatches.iter().filter(|m| wanted(&m.namespace, &m.pod)) {
            let target = Target {
                namespace: m.namespace.clone(),
                host: host_of(&m.peer, &m.namespace, &m.destination),
                port: m.port,
            };
            let mut evidence = BTreeMap::new();
            evidence.insert("learned_peer_idle_close_ms", ms(m.peer_idle_close).into());
            evidence.insert("peer_idle_closes", m.peer_idle_closes.into());
            evidence.insert("max_idle_before_reuse_ms", ms(m.max_reuse_idle).into());
            out.push(Finding {
                kind: "idle_timeout_mismatch",
                cause: Cause::IdleTimeout,
                namespace: m.namespace.clone(),
                pod: m.pod.clone(),
                direction: m.direction.as_str(),
                peer: m.peer.clone(),
                destination: m.destination.clone(),
                failures: 0,
                stale_failures: 0,
                http_503: 0,
                first_seen: None,
                last_seen: None,
                evidence,
                samples: Vec::new(),
                remedy: remedy::for_cause(Cause::IdleTimeout, &target, Some(m.peer_idle_close)),
            });
        }
        out
    }
}
