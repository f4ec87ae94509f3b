//! Recent proxy connections by address, to follow a request from one hop to
//! the next on this node: a proxy's upstream connection (client role) is
//! known by its local address, a proxy's downstream connection (accepted) by
//! its peer's. With iptables REDIRECT only the accepted socket's local port
//! differs from what the caller dialled; its peer address and port are the
//! caller's own local address, so `upstream.local == downstream.remote`.
//!
//! The connection table forgets a connection at its close; a 503 is decided
//! up to two attribution windows later, so closed entries linger that long.
//! Bounded: past `cap` entries the oldest one goes.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use tracer_common::event::Role;

/// One proxy connection as attribution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConn {
    pub netns: u32,
    pub pid: u32,
    /// The worker thread that uses it (0: not known).
    pub tid: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel monotonic time of its close, once closed.
    pub closed_ns: Option<u64>,
}

impl ProxyConn {
    /// Open at `at_ns`, or closed no earlier than `since_ns`.
    pub fn live_since(&self, since_ns: u64) -> bool {
        self.closed_ns.is_none_or(|c| c >= since_ns)
    }
}

fn unlist<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<u64>>, key: &K, id: u64) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

/// Threads are compared only when both are known.
pub fn same_thread(a: u32, b: u32) -> bool {
    a == 0 || b == 0 || a == b
}

/// Loopback addresses repeat in every network namespace: they only join
/// connections of the same one. Pod addresses are unique on a node.
fn same_place(addr: SocketAddr, netns_a: u32, netns_b: u32) -> bool {
    !addr.ip().is_loopback() || netns_a == netns_b
}

#[derive(Debug)]
pub struct ProxyConns {
    cap: usize,
    linger_ns: u64,
    conns: HashMap<u64, (Role, ProxyConn)>,
    /// Upstream connections by their local address.
    by_local: HashMap<SocketAddr, Vec<u64>>,
    /// Downstream connections by their peer's address.
    by_remote: HashMap<SocketAddr, Vec<u64>>,
    /// Upstream connections of each process.
    by_pid: HashMap<u32, Vec<u64>>,
    /// Ids in the order they were added (stale ids skipped when met).
    order: VecDeque<u64>,
    /// (id, closed_ns) in close order, for expiry.
    closed: VecDeque<(u64, u64)>,
}

impl ProxyConns {
    pub fn new(cap: usize, linger_ns: u64) -> Self {
        Self {
            cap: cap.max(1),
            linger_ns,
            conns: HashMap::new(),
            by_local: HashMap::new(),
            by_remote: HashMap::new(),
            by_pid: HashMap::new(),
            order: VecDeque::new(),
            closed: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A proxy connection `id` opened or was seen again (its thread may be
    /// known only later: an accepted socket's first I/O names it).
    pub fn upsert(&mut self, id: u64, role: Role, conn: ProxyConn) {
        if !matches!(role, Role::Client | Role::Server) || conn.local.port() == 0 {
            return;
        }
        if let Some((_, known)) = self.conns.get_mut(&id) {
            if conn.tid != 0 {
                known.tid = conn.tid;
            }
            return;
        }
        while self.conns.len() >= self.cap {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(oldest);
        }
        match role {
            Role::Client => {
                self.by_local.entry(conn.local).or_default().push(id);
                self.by_pid.entry(conn.pid).or_default().push(id);
            }
            _ => self.by_remote.entry(conn.remote).or_default().push(id),
        }
        self.order.push_back(id);
        self.conns.insert(id, (role, conn));
    }

    /// The thread of connection `id`, once its I/O shows it.
    pub fn thread(&mut self, id: u64, tid: u32) {
        if let Some((_, c)) = self.conns.get_mut(&id)
            && tid != 0
        {
            c.tid = tid;
        }
    }

    pub fn closed(&mut self, id: u64, at_ns: u64) {
        if let Some((_, c)) = self.conns.get_mut(&id) {
            c.closed_ns = Some(at_ns);
            self.closed.push_back((id, at_ns));
        }
    }

    /// Forgets connections closed more than the linger time before `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(id, at)) = self.closed.front() {
            if now_ns.saturating_sub(at) <= self.linger_ns {
                break;
            }
            self.closed.pop_front();
            self.remove(id);
        }
        if self.order.len() > 2 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.order.retain(|id| conns.contains_key(id));
        }
    }

    fn remove(&mut self, id: u64) {
        let Some((role, c)) = self.conns.remove(&id) else {
            return;
        };
        match role {
            Role::Client => {
                unlist(&mut self.by_local, &c.local, id);
                unlist(&mut self.by_pid, &c.pid, id);
            }
            _ => unlist(&mut self.by_remote, &c.remote, id),
        }
    }

    fn get(&self, id: &u64) -> Option<&ProxyConn> {
        self.conns.get(id).map(|(_, c)| c)
    }

    /// The proxy upstream connection whose local address is the peer
    /// `remote` of a socket in `netns` (the caller side of a hop).
    pub fn upstream_at(&self, netns: u32, remote: SocketAddr) -> Option<&ProxyConn> {
        self.by_local
            .get(&remote)?
            .iter()
            .rev()
            .filter_map(|id| self.get(id))
            .find(|c| same_place(remote, c.netns, netns))
    }

    /// Upstream connections of process `pid` on thread `tid` (when known),
    /// live at `since_ns` or later.
    pub fn upstreams_of(
        &self,
        pid: u32,
        tid: u32,
        since_ns: u64,
    ) -> impl Iterator<Item = &ProxyConn> {
        self.by_pid
            .get(&pid)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
            .filter(move |c| same_thread(c.tid, tid) && c.live_since(since_ns))
    }

    /// Downstream connections of another proxy whose peer is `upstream`:
    /// the next hop of a request sent on it.
    pub fn next_hops<'a>(&'a self, upstream: &'a ProxyConn) -> impl Iterator<Item = &'a ProxyConn> {
        self.by_remote
            .get(&upstream.local)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
            .filter(move |d| {
                d.pid != upstream.pid && same_place(upstream.local, d.netns, upstream.netns)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(pid: u32, tid: u32, local: &str, remote: &str) -> ProxyConn {
        ProxyConn {
            netns: 1,
            pid,
            tid,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            closed_ns: None,
        }
    }

    #[test]
    fn a_hop_joins_the_upstream_local_address_to_the_downstream_peer() {
        let mut c = ProxyConns::new(8, 100);
        // Outbound sidecar (pid 1) dialled 10.0.0.2:8080; REDIRECT took it to 15006.
        c.upsert(
            1,
            Role::Client,
            conn(1, 11, "10.0.0.1:40000", "10.0.0.2:8080"),
        );
        let mut inbound = conn(2, 0, "10.0.0.2:15006", "10.0.0.1:40000");
        inbound.netns = 2;
        c.upsert(2, Role::Server, inbound);
        c.thread(2, 22);
        let up: Vec<_> = c.upstreams_of(1, 11, 0).cloned().collect();
        assert_eq!(up.len(), 1);
        assert_eq!(c.upstreams_of(1, 12, 0).count(), 0, "another worker's");
        let hops: Vec<_> = c.next_hops(&up[0]).map(|d| (d.pid, d.tid)).collect();
        assert_eq!(hops, vec![(2, 22)]);
        assert_eq!(
            c.upstream_at(2, "10.0.0.1:40000".parse().unwrap())
                .map(|u| u.pid),
            Some(1)
        );
    }

    #[test]
    fn loopback_joins_only_within_a_namespace_and_closed_entries_expire() {
        let mut c = ProxyConns::new(8, 100);
        c.upsert(
            1,
            Role::Client,
            conn(1, 0, "127.0.0.1:40000", "127.0.0.1:8080"),
        );
        let peer = "127.0.0.1:40000".parse().unwrap();
        assert!(c.upstream_at(1, peer).is_some());
        assert!(c.upstream_at(7, peer).is_none());
        c.closed(1, 1000);
        c.expire(1100);
        assert!(c.upstream_at(1, peer).is_some(), "lingers");
        c.expire(1101);
        assert!(c.is_empty());
    }

    #[test]
    fn past_the_cap_the_oldest_goes() {
        let mut c = ProxyConns::new(2, 100);
        for id in 1..=3u64 {
            let local = format!("10.0.0.1:{}", 40000 + id);
            c.upsert(id, Role::Client, conn(1, 0, &local, "10.0.0.2:80"));
        }
        assert_eq!(c.len(), 2);
        assert!(
            c.upstream_at(1, "10.0.0.1:40001".parse().unwrap())
                .is_none()
        );
        assert_eq!(c.upstreams_of(1, 0, 0).count(), 2);
    }
}
