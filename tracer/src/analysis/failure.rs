//! Failures (DESIGN.md): a connection we opened ended by the peer (`peer_close`
//! or `reset_received`) while a request was in flight (bytes sent since the
//! last receive), or a connect that was refused or timed out. On a reused
//! connection it is a stale-connection failure: a 503 in Envoy unless a retry
//! hides it.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tracer_common::event::Role;

use super::{cause::Cause, direction::Direction};
use crate::{
    conntrack::{Connection, EndReason},
    units::{serde_ms, serde_ms_opt, serde_rfc3339},
};

/// How the peer ended the connection, as the evidence names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerClose {
    Fin,
    Reset,
    /// The connect was refused.
    Refused,
    /// The connect timed out.
    Timeout,
}

impl PeerClose {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerClose::Fin => "fin",
            PeerClose::Reset => "reset",
            PeerClose::Refused => "refused",
            PeerClose::Timeout => "timeout",
        }
    }
}

/// Why a failure's cause was chosen, kept with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Idle gap before the request that failed.
    #[serde(
        rename = "idle_before_request_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_before_request: Option<Duration>,
    /// What this destination's peer has been seen to close idle connections after.
    #[serde(
        rename = "learned_peer_idle_close_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub learned_peer_idle_close: Option<Duration>,
    /// The peer's FIN arrived before we wrote the request.
    pub peer_closed_before_request: bool,
    /// From our last send to the peer's FIN or reset.
    #[serde(
        rename = "last_send_to_peer_close_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_send_to_peer_close: Option<Duration>,
    pub peer_close: PeerClose,
    /// Reset sent by us too, with the kernel's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_sent_reason: Option<String>,
    /// The destination's listener closed this long before the failure.
    #[serde(
        rename = "listener_closed_before_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub listener_closed_before: Option<Duration>,
    /// The cluster marked the destination pod terminating: its deletion time
    /// (when known) and how long before the failure that was.
    #[serde(
        with = "crate::units::serde_rfc3339_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peer_terminating_since: Option<SystemTime>,
    #[serde(
        rename = "peer_terminating_before_ms",
        with = "serde_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub peer_terminating_before: Option<Duration>,
    /// The destination's port is listened on, but only on these addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_only_on: Vec<SocketAddr>,
    /// The DNS name the connection was opened for, and how its answer moved on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsEvidence>,
    /// Requests the connection had carried (this one included).
    pub requests: u32,
    /// For a seeded connection: its first known activity, a lower bound.
    #[serde(rename = "connection_age_ms", with = "serde_ms")]
    pub connection_age: Duration,
    /// Opened before conntracer started (found at start-up): its opening
    /// time, and its owner until its first I/O, were not seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seeded: bool,
}

/// How the evidence says a connection was seeded.
pub const SEEDED_NOTE: &str = "opened before conntracer started";

impl std::fmt::Display for Evidence {
    /// `key=value` pairs in key order, the way `diagnose` prints them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::units::{ms, rfc3339};
        let mut pairs: Vec<(&str, String)> = vec![
            ("connection_age_ms", ms(self.connection_age).to_string()),
            ("peer_close", self.peer_close.as_str().to_owned()),
            (
                "peer_closed_before_request",
                self.peer_closed_before_request.to_string(),
            ),
            ("requests", self.requests.to_string()),
        ];
        if let Some(dns) = &self.dns {
            pairs.push((
                "dns",
                format!(
                    "{} ({} → {}, {}ms before{})",
                    dns.name,
                    join(&dns.old_answer),
                    join(&dns.new_answer),
                    ms(dns.changed_before_failure),
                    if dns.ttl_expired { ", ttl expired" } else { "" }
                ),
            ));
        }
        let durations = [
            ("idle_before_request_ms", self.idle_before_request),
            ("last_send_to_peer_close_ms", self.last_send_to_peer_close),
            ("learned_peer_idle_close_ms", self.learned_peer_idle_close),
            ("listener_closed_before_ms", self.listener_closed_before),
            ("peer_terminating_before_ms", self.peer_terminating_before),
        ];
        for (key, value) in durations {
            if let Some(v) = value {
                pairs.push((key, ms(v).to_string()));
            }
        }
        if !self.listener_only_on.is_empty() {
            pairs.push(("listener_only_on", join(&self.listener_only_on)));
        }
        if let Some(since) = self.peer_terminating_since {
            pairs.push(("peer_terminating_since", rfc3339(since)));
        }
        if let Some(reason) = &self.reset_sent_reason {
            pairs.push(("reset_sent_reason", reason.clone()));
        }
        if self.seeded {
            pairs.push(("seeded", format!("\"{SEEDED_NOTE}\"")));
        }
        pairs.sort_by_key(|(key, _)| *key);
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&text.join(" "))
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsEvidence {
    pub name: String,
    /// The answer the connection's address came from.
    pub old_answer: Vec<IpAddr>,
    /// The answer in force at the failure (empty when the record expired unrefreshed).
    pub new_answer: Vec<IpAddr>,
    /// How long before the failure the answer changed (or the TTL ran out).
    #[serde(rename = "changed_before_failure_ms", with = "serde_ms")]
    pub changed_before_failure: Duration,
    /// The record expired and no answer was seen since (firewall-style DNS pinning).
    pub ttl_expired: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(with = "serde_rfc3339")]
    pub time: SystemTime,
    /// Kernel monotonic time of the failure (joins it to 503s).
    #[serde(skip)]
    pub at_ns: u64,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    pub proxy: bool,
    pub direction: Direction,
    /// The destination as metrics label it (bounded: `other` past the cap).
    pub peer: String,
    /// The Service host the cluster knows the destination by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_host: Option<String>,
    /// The Service's port for the destination (the remote port may be the
    /// pod's targetPort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// How the connection ended.
    pub end: EndReason,
    /// On a reused connection with a request in flight.
    pub stale: bool,
    pub cause: Cause,
    pub evidence: Evidence,
}

/// Whether this closed connection is a failure, and when it became one.
pub fn failure_moment(conn: &Connection) -> Option<u64> {
    if conn.role != Role::Client {
        return None;
    }
    let s = &conn.stats;
    match conn.end? {
        EndReason::ConnectRefused | EndReason::ConnectTimeout => Some(s.closed_ns.max(s.rst_ns)),
        EndReason::PeerClose | EndReason::ResetReceived if request_in_flight(conn) => {
            Some(if s.rst_ns != 0 { s.rst_ns } else { s.fin_in_ns })
        }
        _ => None,
    }
}

/// Bytes were sent since the last receive.
pub fn request_in_flight(conn: &Connection) -> bool {
    conn.stats.last_send_ns != 0 && conn.stats.last_send_ns > conn.stats.last_recv_ns
}

/// Reused, with a request in flight.
pub fn is_stale(conn: &Connection) -> bool {
    conn.stats.requests >= 2 && request_in_flight(conn)
}

/// A failed connection waiting for related events (a listener closing, the
/// 503 the proxy writes) before its cause is decided.
#[derive(Debug)]
pub struct Pending {
    pub ready_ns: u64,
    pub at_ns: u64,
    pub conn: Box<Connection>,
    /// The DNS name the connection was opened for.
    pub dns_name: Option<String>,
}

/// Failures in the order they became ready.
#[derive(Debug)]
pub struct Settling {
    settle_ns: u64,
    queue: VecDeque<Pending>,
}

impl Settling {
    pub fn new(settle: Duration) -> Self {
        Self {
            settle_ns: settle.as_nanos() as u64,
            queue: VecDeque::new(),
        }
    }

    /// Holds `conn` if it failed; `now_ns` is when its close was read.
    pub fn closed(&mut self, conn: &Connection, dns_name: Option<String>, now_ns: u64) {
        if let Some(at_ns) = failure_moment(conn) {
            self.queue.push_back(Pending {
                ready_ns: now_ns.saturating_add(self.settle_ns),
                at_ns,
                conn: Box::new(conn.clone()),
                dns_name,
            });
        }
    }

    /// The next failure whose settle time has passed by `now_ns`.
    pub fn next_ready(&mut self, now_ns: u64) -> Option<Pending> {
        if self.queue.front()?.ready_ns <= now_ns {
            self.queue.pop_front()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
