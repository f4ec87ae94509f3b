//! What the node's pods listen on and which addresses they own, learned from
//! the events themselves (no Kubernetes needed): listener opens and closes per
//! network namespace, and the local addresses of connections in each one.

use std::net::{IpAddr, SocketAddr};

use super::direction::canonical;
use crate::fastmap::FastMap;

/// A listening socket's life in one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerState {
    pub address: SocketAddr,
    pub opened_ns: u64,
    /// Set while the port is not listened on any more.
    pub closed_ns: Option<u64>,
}

/// Entries each map keeps at most. Pods (and their addresses and ports)
/// churn: past this, what is no longer listening is forgotten, and the
/// address owners are forgotten all at once (traffic teaches them again).
pub const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Default)]
pub struct Topology {
    /// (netns, port) → listeners on that port (one per bound address).
    listeners: FastMap<(u32, u16), Vec<ListenerState>>,
    /// Non-loopback address → the netns that owns it.
    owners: FastMap<IpAddr, u32>,
}

/// How a destination's listener looked at some moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerView {
    /// Never seen (the pod may be elsewhere, or listened before we started).
    Unknown,
    /// Listening on an address that accepts this destination.
    Listening,
    /// Listening on this port, but only on other addresses (e.g. 127.0.0.1 only).
    OtherAddressOnly(Vec<SocketAddr>),
    /// Not listening any more since this time.
    Closed { at_ns: u64 },
}

impl Topology {
    pub fn listen(&mut self, netns: u32, address: SocketAddr, now_ns: u64) {
        if self.listeners.len() >= MAX_ENTRIES {
            self.listeners
                .retain(|_, list| list.iter().any(|l| l.closed_ns.is_none()));
        }
        let list = self.listeners.entry((netns, address.port())).or_default();
        list.retain(|l| l.address != address);
        list.push(ListenerState {
            address,
            opened_ns: now_ns,
            closed_ns: None,
        });
        self.own(netns, address.ip());
    }

    pub fn unlisten(&mut self, netns: u32, address: SocketAddr, now_ns: u64) {
        if let Some(list) = self.listeners.get_mut(&(netns, address.port())) {
            for l in list.iter_mut().filter(|l| l.address == address) {
                l.closed_ns = Some(now_ns);
            }
        }
    }

    /// Records that `netns` owns `ip` (seen as a connection's local address).
    pub fn own(&mut self, netns: u32, ip: IpAddr) {
        let ip = canonical(ip);
        if !ip.is_loopback() && !ip.is_unspecified() {
            if self.owners.len() >= MAX_ENTRIES && !self.owners.contains_key(&ip) {
                self.owners.clear();
            }
            self.owners.insert(ip, netns);
        }
    }

    /// The netns a remote address lives in, seen from `from_netns`: loopback
    /// stays in the pod; other addresses by ownership.
    pub fn netns_of(&self, from_netns: u32, ip: IpAddr) -> Option<u32> {
        let ip = canonical(ip);
        if ip.is_loopback() {
            Some(from_netns)
        } else {
            self.owners.get(&ip).copied()
        }
    }

    /// The listener situation for `destination` in `netns`.
    pub fn listener(&self, netns: u32, destination: SocketAddr) -> ListenerView {
        let Some(list) = self.listeners.get(&(netns, destination.port())) else {
            return ListenerView::Unknown;
        };
        let dest_ip = canonical(destination.ip());
        let accepts = |l: &ListenerState| {
            let ip = canonical(l.address.ip());
            ip.is_unspecified() || ip == dest_ip
        };
        if list.iter().any(|l| l.closed_ns.is_none() && accepts(l)) {
            return ListenerView::Listening;
        }
        if let Some(at_ns) = list
            .iter()
            .filter(|l| accepts(l))
            .filter_map(|l| l.closed_ns)
            .max()
        {
            return ListenerView::Closed { at_ns };
        }
        let others: Vec<SocketAddr> = list
            .iter()
            .filter(|l| l.closed_ns.is_none())
            .map(|l| l.address)
            .collect();
        if others.is_empty() {
            // Only closed listeners on other addresses.
            let at_ns = list.iter().filter_map(|l| l.closed_ns).max().unwrap_or(0);
            ListenerView::Closed { at_ns }
        } else {
            ListenerView::OtherAddressOnly(others)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listener_views() {
        let mut t = Topology::default();
        assert_eq!(t.listener(1, addr("10.0.0.2:80")), ListenerView::Unknown);
        t.listen(1, addr("127.0.0.1:8080"), 10);
        assert_eq!(
            t.listener(1, addr("127.0.0.1:8080")),
            ListenerView::Listening
        );
        assert_eq!(
            t.listener(1, addr("10.0.0.2:8080")),
            ListenerView::OtherAddressOnly(vec![addr("127.0.0.1:8080")])
        );
        t.listen(1, addr("0.0.0.0:9090"), 20);
        assert_eq!(
            t.listener(1, addr("10.0.0.2:9090")),
            ListenerView::Listening
        );
        t.unlisten(1, addr("0.0.0.0:9090"), 30);
        assert_eq!(
            t.listener(1, addr("10.0.0.2:9090")),
            ListenerView::Closed { at_ns: 30 }
        );
        t.listen(1, addr("0.0.0.0:9090"), 40);
        assert_eq!(
            t.listener(1, addr("10.0.0.2:9090")),
            ListenerView::Listening
        );
    }

    #[test]
    fn address_owners() {
        let mut t = Topology::default();
        t.own(7, "10.0.0.2".parse().unwrap());
        assert_eq!(t.netns_of(3, "10.0.0.2".parse().unwrap()), Some(7));
        assert_eq!(t.netns_of(3, "127.0.0.1".parse().unwrap()), Some(3));
        assert_eq!(t.netns_of(3, "10.9.9.9".parse().unwrap()), None);
    }
}
