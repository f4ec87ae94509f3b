//! Open connections by kernel socket, fed by events.

use std::collections::HashMap;

use tracer_common::event::{EventKind, Role};

use super::{Connection, EndReason};
use crate::events::Event;

/// What an event did to the table.
#[derive(Debug)]
pub enum Applied {
    /// The event belongs to an open connection.
    Open { id: u64 },
    /// The connection is over; here it is, whole.
    Closed(Box<Connection>),
    /// Not a connection event (listeners, resets for unknown sockets).
    Untracked,
}

pub struct ConnectionTable {
    open: HashMap<u64, Connection>,
    next_id: u64,
    capacity: usize,
    /// Entries dropped because the table was full.
    pub evicted: u64,
}

impl ConnectionTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            next_id: 1,
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.open.values()
    }

    pub fn apply(&mut self, ev: &Event) -> Applied {
        match ev.kind {
            EventKind::Listen | EventKind::ListenClose => Applied::Untracked,
            EventKind::Reset if ev.role == Role::Unknown && !self.open.contains_key(&ev.sock) => {
                Applied::Untracked
            }
            EventKind::Close => {
                let mut conn = match self.open.remove(&ev.sock) {
                    Some(mut conn) => {
                        conn.update(ev);
                        conn
                    }
                    // Opened before we started, or its open event was filtered or lost.
                    None => Connection::from_event(self.allocate_id(), ev),
                };
                conn.end = Some(EndReason::from_stats(&conn.stats));
                Applied::Closed(Box::new(conn))
            }
            EventKind::Connect | EventKind::Accept | EventKind::Reset | EventKind::Reuse => {
                let conn = self.upsert(ev);
                if ev.kind == EventKind::Reuse
                    && let Some(idle) = conn.last_reuse_idle()
                {
                    conn.record_reuse(idle);
                }
                Applied::Open { id: conn.id }
            }
        }
    }

    fn upsert(&mut self, ev: &Event) -> &mut Connection {
        if !self.open.contains_key(&ev.sock) && self.open.len() >= self.capacity {
            self.evict_one();
        }
        let id = if self.open.contains_key(&ev.sock) {
            0
        } else {
            self.allocate_id()
        };
        let conn = self
            .open
            .entry(ev.sock)
            .or_insert_with(|| Connection::from_event(id, ev));
        conn.update(ev);
        conn
    }

    /// Drops the connection idle the longest.
    fn evict_one(&mut self) {
        if let Some(sock) = self
            .open
            .iter()
            .min_by_key(|(_, c)| c.last_activity_ns())
            .map(|(s, _)| *s)
        {
            self.open.remove(&sock);
            self.evicted += 1;
        }
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tracer_common::event::{ConnStats, flags};

    use super::*;
    use crate::events::{Family, Process};

    fn event(kind: EventKind, sock: u64, stats: ConnStats) -> Event {
        Event {
            kind,
            time: UNIX_EPOCH,
            mono_ns: 0,
            sock,
            netns: 1,
            role: Role::Client,
            process: Process {
                pid: 7,
                comm: "curl".into(),
                ..Process::default()
            },
            family: Family::Ipv4,
            local: "10.0.0.1:1000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            tcp_state: 0,
            reset: None,
            stats,
        }
    }

    #[test]
    fn a_connection_lives_from_connect_to_close() {
        let mut table = ConnectionTable::new(10);
        let established = ConnStats {
            start_ns: 1_000,
            established_ns: 2_000,
            flags: flags::ESTABLISHED,
            ..Default::default()
        };
        let Applied::Open { id } = table.apply(&event(EventKind::Connect, 0xa, established)) else {
            panic!()
        };
        let reused = ConnStats {
            last_reuse_idle_ns: 700_000_000,
            requests: 2,
            ..established
        };
        assert!(
            matches!(table.apply(&event(EventKind::Reuse, 0xa, reused)), Applied::Open { id: same } if same == id)
        );
        assert_eq!(table.len(), 1);

        let closed = ConnStats {
            closed_ns: 5_000_000_000,
            last_send_ns: 3_000_000_000,
            last_recv_ns: 4_000_000_000,
            fin_in_ns: 4_500_000_000,
            peer_close_idle_ns: 500_000_000,
            flags: flags::ESTABLISHED | flags::FIN_IN | flags::CLOSED,
            ..reused
        };
        let Applied::Closed(conn) = table.apply(&event(EventKind::Close, 0xa, closed)) else {
            panic!()
        };
        assert!(table.is_empty());
        assert_eq!(conn.id, id);
        assert_eq!(conn.end, Some(EndReason::PeerClose));
        assert_eq!(conn.reuse_idles, [Duration::from_millis(700)]);
        assert_eq!(
            conn.lifetime(),
            Some(Duration::from_nanos(5_000_000_000 - 2_000))
        );
        assert_eq!(conn.idle_at_close(), Some(Duration::from_secs(1)));
        assert_eq!(conn.idle_at_peer_close(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn a_close_for_an_unseen_socket_still_reports_the_connection() {
        let mut table = ConnectionTable::new(10);
        let stats = ConnStats {
            flags: flags::CLOSED,
            sk_err: libc::ETIMEDOUT as u32,
            ..Default::default()
        };
        let Applied::Closed(conn) = table.apply(&event(EventKind::Close, 0xb, stats)) else {
            panic!()
        };
        assert_eq!(conn.end, Some(EndReason::ConnectTimeout));
    }

    #[test]
    fn listeners_and_unknown_resets_are_not_connections() {
        let mut table = ConnectionTable::new(10);
        assert!(matches!(
            table.apply(&event(EventKind::Listen, 0xc, ConnStats::default())),
            Applied::Untracked
        ));
        let mut reset = event(EventKind::Reset, 0, ConnStats::default());
        reset.role = Role::Unknown;
        assert!(matches!(table.apply(&reset), Applied::Untracked));
        assert!(table.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = ConnectionTable::new(2);
        for sock in 1..=3 {
            let stats = ConnStats {
                established_ns: sock * 10,
                ..Default::default()
            };
            table.apply(&event(EventKind::Connect, sock, stats));
        }
        assert_eq!(table.len(), 2);
        assert_eq!(table.evicted, 1);
    }
}
