//! Failures (DESIGN.md): a connection we opened ended by the peer (`peer_close`
//! or `reset_received`) while a request was in flight (bytes sent since the
//! last receive), or a connect that was refused or timed out. On a reused
//! connection it is a stale-connection failure: a 503 in Envoy unless a retry
//! hides it.

use std::time::Duration;

use serde::Serialize;
use tracer_common::event::Role;

use super::{cause::Cause, direction::Direction};
use crate::conntrack::{Connection, EndReason};

/// Why a failure's cause was chosen, kept with it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    /// Idle gap before the request that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_before_request_ms: Option<f64>,
    /// What this destination's peer has been seen to close idle connections after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_peer_idle_close_ms: Option<f64>,
    /// The peer's FIN arrived before we wrote the request.
    pub peer_closed_before_request: bool,
    /// From our last send to the peer's FIN or reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_send_to_peer_close_ms: Option<f64>,
    /// `fin` or `reset`, or `refused` / `timeout` for connects.
    pub peer_close: &'static str,
    /// Reset sent by us too, with the kernel's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_sent_reason: Option<String>,
    /// The destination's listener: closed how long before, or bound elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_closed_before_ms: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listener_only_on: Vec<String>,
    /// The DNS name the connection was opened for, and how its answer moved on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsEvidence>,
    /// Requests the connection had carried (this one included).
    pub requests: u32,
    pub connection_age_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsEvidence {
    pub name: String,
    /// The answer the connection's address came from.
    pub old_answer: Vec<std::net::IpAddr>,
    /// The answer in force at the failure (empty when the record expired unrefreshed).
    pub new_answer: Vec<std::net::IpAddr>,
    /// How long before the failure the answer changed (or the TTL ran out).
    pub changed_before_failure_ms: f64,
    /// The record expired and no answer was seen since (firewall-style DNS pinning).
    pub ttl_expired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// RFC 3339.
    pub time: String,
    #[serde(skip)]
    pub at_ns: u64,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    pub pid: u32,
    pub comm: String,
    pub proxy: bool,
    pub direction: Direction,
    pub peer: String,
    pub local: String,
    pub remote: String,
    /// How the connection ended.
    pub end: &'static str,
    /// On a reused connection with a request in flight.
    pub stale: bool,
    pub cause: Cause,
    pub evidence: Evidence,
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
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
