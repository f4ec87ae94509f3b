//! Open connections by kernel socket, fed by events.
//!
//! Bounded without scans: eviction takes the least recently touched entry
//! from a recency queue, and the audit that drops connections whose close
//! was lost visits a fixed number of entries per round, round-robin.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    sync::Arc,
};

use tracer_common::event::{EventKind, Role};

use super::{Connection, EndReason};
use crate::events::{Event, Process};

/// Owners remembered for sharing: the processes of the latest connections
/// (a server's thousands of connections then share one).
const RECENT_PROCESSES: usize = 16;

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

struct Tracked {
    conn: Connection,
    /// Sequence number of its latest event (its place in `recency`).
    touched: u64,
}

pub struct ConnectionTable {
    open: HashMap<u64, Tracked>,
    /// Hash of (local, remote) → socket, to join packet-level events (HTTP
    /// status); a hit is checked against the connection's own endpoints.
    /// 16 bytes an entry instead of 72 with the addresses as key.
    by_endpoints: HashMap<u64, u64>,
    endpoints_hasher: RandomState,
    /// Most recent last.
    processes: Vec<Arc<Process>>,
    /// (socket, touched) oldest first; an entry is stale once its socket was
    /// touched again or closed, skipped when met and compacted in bulk.
    recency: VecDeque<(u64, u64)>,
    touches: u64,
    /// (socket, connection id) in the order the audit visits them.
    audit: VecDeque<(u64, u64)>,
    /// (socket, touched) the kernel did not know at the last audit round.
    suspects: Vec<(u64, u64)>,
    next_id: u64,
    capacity: usize,
    /// Entries dropped because the table was full.
    pub evicted: u64,
    /// Entries dropped because the kernel no longer tracked their socket
    /// (their close event was lost, or the kernel's map evicted them).
    pub expired: u64,
}

impl ConnectionTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            by_endpoints: HashMap::new(),
            endpoints_hasher: RandomState::new(),
            processes: Vec::new(),
            recency: VecDeque::new(),
            touches: 0,
            audit: VecDeque::new(),
            suspects: Vec::new(),
            next_id: 1,
            capacity: capacity.max(1),
            evicted: 0,
            expired: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.open.values().map(|t| &t.conn)
    }

    /// The open connection with these endpoints, as seen from its own socket.
    pub fn by_endpoints(&self, local: SocketAddr, remote: SocketAddr) -> Option<&Connection> {
        let sock = self.by_endpoints.get(&self.endpoints_key(local, remote))?;
        self.open
            .get(sock)
            .map(|t| &t.conn)
            .filter(|c| c.local == local && c.remote == remote)
    }

    fn endpoints_key(&self, local: SocketAddr, remote: SocketAddr) -> u64 {
        self.endpoints_hasher.hash_one((local, remote))
    }

    fn remove(&mut self, sock: u64) -> Option<Connection> {
        let conn = self.open.remove(&sock)?.conn;
        let key = self.endpoints_key(conn.local, conn.remote);
        if self.by_endpoints.get(&key) == Some(&sock) {
            self.by_endpoints.remove(&key);
        }
        Some(conn)
    }

    /// `process`, shared with the connections of the same process seen lately.
    fn intern(&mut self, process: &Process) -> Arc<Process> {
        if let Some(p) = self.processes.iter().rev().find(|p| ***p == *process) {
            return p.clone();
        }
        if self.processes.len() == RECENT_PROCESSES {
            self.processes.remove(0);
        }
        let p = Arc::new(process.clone());
        self.processes.push(p.clone());
        p
    }

    /// Applies `ev` to the table. Packet-level events (HTTP status) carry only
    /// addresses: they get the netns, owner and role of their connection here.
    pub fn apply(&mut self, ev: &mut Event) -> Applied {
        match ev.kind {
            EventKind::HttpStatus => match self.by_endpoints(ev.local, ev.remote) {
                Some(conn) => {
                    ev.netns = conn.netns;
                    ev.process = (*conn.process).clone();
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
            | EventKind::Reuse => Applied::Open {
                id: self.upsert(ev).id,
            },
        }
    }

    fn upsert(&mut self, ev: &Event) -> &mut Connection {
        if !self.open.contains_key(&ev.sock) && self.open.len() >= self.capacity {
            self.evict_one();
        }
        self.compact_recency();
        let touched = self.touches;
        self.touches += 1;
        self.recency.push_back((ev.sock, touched));
        let id = if self.open.contains_key(&ev.sock) {
            0
        } else {
            let id = self.allocate_id();
            self.compact_audit();
            self.audit.push_back((ev.sock, id));
            id
        };
        let process = match self.open.get(&ev.sock) {
            Some(t) if ev.process.pid == 0 || *t.conn.process == ev.process => None,
            _ => Some(self.intern(&ev.process)),
        };
        let tracked = self.open.entry(ev.sock).or_insert_with(|| Tracked {
            conn: Connection::with_process(id, ev, process.clone().unwrap_or_default()),
            touched,
        });
        tracked.touched = touched;
        if let Some(process) = process {
            tracked.conn.process = process;
        }
        tracked.conn.update(ev);
        if tracked.conn.local.port() != 0 {
            let key = self
                .endpoints_hasher
                .hash_one((tracked.conn.local, tracked.conn.remote));
            self.by_endpoints.insert(key, ev.sock);
        }
        &mut tracked.conn
    }

    fn is_current(&self, sock: u64, touched: u64) -> bool {
        self.open.get(&sock).is_some_and(|t| t.touched == touched)
    }

    /// Drops the connection touched least recently.
    fn evict_one(&mut self) {
        while let Some((sock, touched)) = self.recency.pop_front() {
            if self.is_current(sock, touched) {
                self.remove(sock);
                self.evicted += 1;
                return;
            }
        }
    }

    /// Keeps the recency queue within twice the table (amortised O(1) per event).
    fn compact_recency(&mut self) {
        if self.recency.len() > 2 * self.open.len() + 1024 {
            let open = &self.open;
            self.recency
                .retain(|&(sock, touched)| open.get(&sock).is_some_and(|t| t.touched == touched));
        }
    }

    /// Keeps the audit queue within twice the table: under churn most
    /// connections close before the audit reaches them.
    fn compact_audit(&mut self) {
        if self.audit.len() > 2 * self.open.len() + 1024 {
            let open = &self.open;
            self.audit
                .retain(|&(sock, id)| open.get(&sock).is_some_and(|t| t.conn.id == id));
        }
    }

    /// One audit round: drops the connections the kernel no longer tracks
    /// (`kernel_tracks` false) at two rounds in a row with no event between
    /// (the first sighting may be a close still in the ring buffer), then
    /// visits the next `budget` entries. Returns how many it dropped.
    pub fn audit(&mut self, budget: usize, kernel_tracks: impl Fn(u64) -> bool) -> u64 {
        let mut dropped = 0;
        for (sock, touched) in std::mem::take(&mut self.suspects) {
            if self.is_current(sock, touched) && !kernel_tracks(sock) {
                self.remove(sock);
                dropped += 1;
            }
        }
        for _ in 0..budget.min(self.audit.len()) {
            let Some((sock, id)) = self.audit.pop_front() else {
                break;
            };
            // Closed (or its socket reused by a newer connection): forget it.
            let Some(tracked) = self.open.get(&sock).filter(|t| t.conn.id == id) else {
                continue;
            };
            if !kernel_tracks(sock) {
                self.suspects.push((sock, tracked.touched));
            }
            self.audit.push_back((sock, id));
        }
        self.expired += dropped;
        dropped
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
        assert_eq!(conn.last_reuse_idle(), Some(Duration::from_millis(700)));
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

    fn connect(table: &mut ConnectionTable, sock: u64) {
        table.apply(&mut event(EventKind::Connect, sock, ConnStats::default()));
    }

    #[test]
    fn the_entry_touched_least_recently_is_evicted() {
        let mut table = ConnectionTable::new(3);
        for sock in 1..=3 {
            connect(&mut table, sock);
        }
        // 1 is touched again: 2 is now the oldest.
        table.apply(&mut event(EventKind::Reuse, 1, ConnStats::default()));
        connect(&mut table, 4);
        let mut socks: Vec<u64> = table.open.keys().copied().collect();
        socks.sort();
        assert_eq!(socks, [1, 3, 4]);
    }

    #[test]
    fn the_recency_queue_stays_within_twice_the_table() {
        let mut table = ConnectionTable::new(100);
        for sock in 1..=100 {
            connect(&mut table, sock);
        }
        for round in 0..1_000u64 {
            let sock = round % 100 + 1;
            table.apply(&mut event(EventKind::Reuse, sock, ConnStats::default()));
        }
        assert_eq!(table.len(), 100);
        assert!(
            table.recency.len() <= 2 * 100 + 1024 + 1,
            "{}",
            table.recency.len()
        );
    }

    #[test]
    fn churn_does_not_grow_the_bookkeeping() {
        let mut table = ConnectionTable::new(100);
        for sock in 1..=100_000u64 {
            connect(&mut table, sock);
            table.apply(&mut event(EventKind::Close, sock, ConnStats::default()));
        }
        assert!(table.is_empty());
        assert!(table.recency.len() <= 1024 + 1, "{}", table.recency.len());
        assert!(table.audit.len() <= 1024 + 1, "{}", table.audit.len());
    }

    #[test]
    fn connections_the_kernel_forgot_are_dropped_after_two_audit_rounds() {
        let mut table = ConnectionTable::new(100);
        for sock in 1..=10 {
            connect(&mut table, sock);
        }
        // The kernel lost sockets 3 and 7 (their close events were lost).
        let kernel = |sock: u64| sock != 3 && sock != 7;
        assert_eq!(table.audit(100, kernel), 0, "first sighting: only suspects");
        assert_eq!(table.len(), 10);
        assert_eq!(table.audit(100, kernel), 2);
        assert_eq!(table.len(), 8);
        assert_eq!(table.expired, 2);
        assert!(table.open.keys().all(|&s| s != 3 && s != 7));
    }

    #[test]
    fn a_suspect_with_a_newer_event_is_kept() {
        let mut table = ConnectionTable::new(100);
        connect(&mut table, 1);
        // Not yet in the kernel's map when audited (a race), then active.
        table.audit(10, |_| false);
        table.apply(&mut event(EventKind::Reuse, 1, ConnStats::default()));
        assert_eq!(table.audit(10, |_| false), 0);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn the_audit_visits_a_bounded_number_per_round_round_robin() {
        let mut table = ConnectionTable::new(1_000);
        for sock in 1..=1_000 {
            connect(&mut table, sock);
        }
        let visited = std::cell::RefCell::new(Vec::new());
        for _ in 0..4 {
            table.audit(250, |s| {
                visited.borrow_mut().push(s);
                true
            });
        }
        let mut visited = visited.into_inner();
        assert_eq!(visited.len(), 1_000, "250 per round");
        visited.sort();
        visited.dedup();
        assert_eq!(visited.len(), 1_000, "each once over four rounds");
        // Closed connections leave the audit queue when met.
        for sock in 1..=500 {
            table.apply(&mut event(EventKind::Close, sock, ConnStats::default()));
        }
        table.audit(1_000, |_| true);
        assert_eq!(table.audit.len(), 500);
    }
}
