//! One tracked connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tracer_common::event::{ConnStats, Role, flags};

use super::EndReason;
use crate::events::{Event, Family, Process};

#[derive(Debug, Clone)]
pub struct Connection {
    /// Stable id for the connection's life in this process (printed as `conn`).
    pub id: u64,
    pub netns: u32,
    pub role: Role,
    /// Shared by the connections of one process (the table interns it).
    pub process: Arc<Process>,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's latest view (timestamps in monotonic ns, counters).
    pub stats: ConnStats,
    /// Set once it is closed.
    pub end: Option<EndReason>,
}

fn gap(from_ns: u64, to_ns: u64) -> Option<Duration> {
    (from_ns != 0 && to_ns >= from_ns).then(|| Duration::from_nanos(to_ns - from_ns))
}

impl Connection {
    pub fn from_event(id: u64, ev: &Event) -> Self {
        Self::with_process(id, ev, Arc::new(ev.process.clone()))
    }

    /// With `process` for the event's own (shared).
    pub fn with_process(id: u64, ev: &Event, process: Arc<Process>) -> Self {
        Self {
            id,
            netns: ev.netns,
            role: ev.role,
            process,
            family: ev.family,
            local: ev.local,
            remote: ev.remote,
            stats: ev.stats,
            end: None,
        }
    }

    /// Refresh from a newer event about the same socket.
    pub fn update(&mut self, ev: &Event) {
        self.stats = ev.stats;
        if ev.process.pid != 0 && *self.process != ev.process {
            self.process = Arc::new(ev.process.clone());
        }
        if ev.local.port() != 0 {
            self.local = ev.local;
            self.remote = ev.remote;
        }
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
