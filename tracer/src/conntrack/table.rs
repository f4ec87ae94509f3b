//! Open connections by kernel socket, fed by events.

use std::{collections::HashMap, net::SocketAddr};

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
    /// (local, remote) → socket, to join packet-level events (HTTP status).
    by_endpoints: HashMap<(SocketAddr, SocketAddr), u64>,
    next_id: u64,
    capacity: usize,
    /// Entries dropped because the table was full.
    pub evicted: u64,
}

impl ConnectionTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            by_endpoints: HashMap::new(),
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

    /// The open connection with these endpoints, as seen from its own socket.
    pub fn by_endpoints(&self, local: SocketAddr, remote: SocketAddr) -> Option<&Connection> {
        self.open.get(self.by_endpoints.get(&(local, remote))?)
    }

    fn remove(&mut self, sock: u64) -> Option<Connection> {
        let conn = self.open.remove(&sock)?;
        if self.by_endpoints.get(&(conn.local, conn.remote)) == Some(&sock) {
            self.by_endpoints.remove(&(conn.local, conn.remote));
        }
        Some(conn)
    }

    /// Applies `ev` to the table. Packet-level events (HTTP status) carry only
    /// addresses: they get the netns, owner and role of their connection here.
    pub fn apply(&mut self, ev: &mut Event) -> Applied {
        match ev.kind {
            EventKind::HttpStatus => match self.by_endpoints(ev.local, ev.remote) {
                Some(conn) => {
                    ev.netns = conn.netns;
                    ev.process = conn.process.clone();
                    ev.role = conn.role;
                    Applied::Open { id: conn.id }
                }
                None => Applied::Untracked,
            },
            EventKind::Listen | EventKind::ListenClose => Applied::Untracked,
            EventKind::Reset if ev.role == Role::Unknown && !self.open.contains_key(&ev.sock) => {
                Applied::Untracked
            }
            EventKind::Close => {
                let mut conn = match self.remove(ev.sock) {
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
            EventKind::Connect
            | EventKind::Accept
            | EventKind::Seeded
            | EventKind::Reset
            | EventKind::Reuse => {
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
        if conn.local.port() != 0 {
            self.by_endpoints.insert((conn.local, conn.remote), ev.sock);
        }
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
            self.remove(sock);
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
            http_status: None,
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
        let Applied::Open { id } = table.apply(&mut event(EventKind::Connect, 0xa, established))
        else {
            panic!()
        };
        let reused = ConnStats {
            last_reuse_idle_ns: 700_000_000,
            requests: 2,
            ..established
        };
        assert!(
            matches!(table.apply(&mut event(EventKind::Reuse, 0xa, reused)), Applied::Open { id: same } if same == id)
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
        let Applied::Closed(conn) = table.apply(&mut event(EventKind::Close, 0xa, closed)) else {
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
        let Applied::Closed(conn) = table.apply(&mut event(EventKind::Close, 0xb, stats)) else {
            panic!()
        };
        assert_eq!(conn.end, Some(EndReason::ConnectTimeout));
    }

    #[test]
    fn listeners_and_unknown_resets_are_not_connections() {
        let mut table = ConnectionTable::new(10);
        assert!(matches!(
            table.apply(&mut event(EventKind::Listen, 0xc, ConnStats::default())),
            Applied::Untracked
        ));
        let mut reset = event(EventKind::Reset, 0, ConnStats::default());
        reset.role = Role::Unknown;
        assert!(matches!(table.apply(&mut reset), Applied::Untracked));
        assert!(table.is_empty());
    }

    #[test]
    fn a_seeded_connection_is_tracked_without_an_opening() {
        let mut table = ConnectionTable::new(10);
        let seeded = ConnStats {
            last_send_ns: 2_999,
            last_recv_ns: 3_000,
            requests: 1,
            flags: flags::SEEDED | flags::ESTABLISHED,
            ..Default::default()
        };
        let Applied::Open { id } = table.apply(&mut event(EventKind::Seeded, 0xd, seeded)) else {
            panic!()
        };
        let closed = ConnStats {
            fin_in_ns: 8_000,
            closed_ns: 9_000,
            flags: seeded.flags | flags::FIN_IN | flags::CLOSED,
            ..seeded
        };
        let Applied::Closed(conn) = table.apply(&mut event(EventKind::Close, 0xd, closed)) else {
            panic!()
        };
        assert_eq!(conn.id, id);
        assert!(conn.seeded());
        assert_eq!(conn.end, Some(EndReason::PeerClose));
        assert_eq!(conn.lifetime(), None, "its opening was not seen");
        assert_eq!(conn.known_since_ns(), 2_999);
        assert_eq!(conn.idle_at_close(), Some(Duration::from_nanos(6_000)));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = ConnectionTable::new(2);
        for sock in 1..=3 {
            let stats = ConnStats {
                established_ns: sock * 10,
                ..Default::default()
            };
            table.apply(&mut event(EventKind::Connect, sock, stats));
        }
        assert_eq!(table.len(), 2);
        assert_eq!(table.evicted, 1);
    }
}
