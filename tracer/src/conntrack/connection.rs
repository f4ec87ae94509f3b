//! One tracked connection.

use std::{net::SocketAddr, time::Duration};

use tracer_common::event::{ConnStats, Role, flags};

use super::EndReason;
use crate::events::{Event, Family, Process};

/// How many reuse gaps a connection remembers (the newest ones).
pub const REUSE_HISTORY: usize = 32;

#[derive(Debug, Clone)]
pub struct Connection {
    /// Stable id for the connection's life in this process (printed as `conn`).
    pub id: u64,
    pub netns: u32,
    pub role: Role,
    pub process: Process,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's latest view (timestamps in monotonic ns, counters).
    pub stats: ConnStats,
    /// Idle gap before each reported reuse, oldest first (bounded).
    pub reuse_idles: Vec<Duration>,
    /// Set once it is closed.
    pub end: Option<EndReason>,
}

fn gap(from_ns: u64, to_ns: u64) -> Option<Duration> {
    (from_ns != 0 && to_ns >= from_ns).then(|| Duration::from_nanos(to_ns - from_ns))
}

impl Connection {
    pub fn from_event(id: u64, ev: &Event) -> Self {
        Self {
            id,
            netns: ev.netns,
            role: ev.role,
            process: ev.process.clone(),
            family: ev.family,
            local: ev.local,
            remote: ev.remote,
            stats: ev.stats,
            reuse_idles: Vec::new(),
            end: None,
        }
    }

    /// Refresh from a newer event about the same socket.
    pub fn update(&mut self, ev: &Event) {
        self.stats = ev.stats;
        if ev.process.pid != 0 {
            self.process = ev.process.clone();
        }
        if ev.local.port() != 0 {
            self.local = ev.local;
            self.remote = ev.remote;
        }
    }

    pub fn record_reuse(&mut self, idle: Duration) {
        if self.reuse_idles.len() == REUSE_HISTORY {
            self.reuse_idles.remove(0);
        }
        self.reuse_idles.push(idle);
    }

    /// When it became usable: established, or the attempt's start if it never was.
    pub fn opened_ns(&self) -> u64 {
        if self.stats.established_ns != 0 {
            self.stats.established_ns
        } else {
            self.stats.start_ns
        }
    }

    /// Opened before the tracer started: its opening time is unknown.
    pub fn seeded(&self) -> bool {
        self.stats.flags & flags::SEEDED != 0
    }

    /// The earliest moment it is known to have existed: its opening, or for
    /// a seeded connection its first known activity (its age is then a lower bound).
    pub fn known_since_ns(&self) -> u64 {
        if self.stats.start_ns != 0 {
            return self.stats.start_ns;
        }
        [
            self.stats.established_ns,
            self.stats.last_send_ns,
            self.stats.last_recv_ns,
            self.stats.fin_in_ns,
            self.stats.fin_out_ns,
        ]
        .into_iter()
        .filter(|ns| *ns != 0)
        .min()
        .unwrap_or(0)
    }

    /// From established (or the attempt) to CLOSE.
    pub fn lifetime(&self) -> Option<Duration> {
        gap(self.opened_ns(), self.stats.closed_ns)
    }

    /// Last send or receive (or opening, when there was none).
    pub fn last_activity_ns(&self) -> u64 {
        self.stats
            .last_send_ns
            .max(self.stats.last_recv_ns)
            .max(self.opened_ns())
    }

    /// How long it had been idle when it reached CLOSE.
    pub fn idle_at_close(&self) -> Option<Duration> {
        gap(self.last_activity_ns(), self.stats.closed_ns)
    }

    /// For ends by the peer: idle time when the peer's FIN or reset arrived.
    pub fn idle_at_peer_close(&self) -> Option<Duration> {
        (self.end?.by_peer() && self.stats.flags & flags::ESTABLISHED != 0)
            .then(|| Duration::from_nanos(self.stats.peer_close_idle_ns))
    }

    /// Idle before the most recent reuse, if it was ever reused.
    pub fn last_reuse_idle(&self) -> Option<Duration> {
        (self.stats.last_reuse_idle_ns != 0)
            .then(|| Duration::from_nanos(self.stats.last_reuse_idle_ns))
    }
}
