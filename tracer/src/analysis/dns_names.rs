//! The DNS stage: answers seen in each pod (their history), the name each
//! outbound connection was opened for, and whether that name's latest answer
//! has moved away from the connection's address.

use std::{collections::HashMap, net::IpAddr};

use crate::dns::{DnsAnswer, DnsHistory, Staleness};

#[derive(Debug, Default)]
pub struct DnsNames {
    history: DnsHistory,
    /// Open client connection id → the DNS name it was opened for.
    by_connection: HashMap<u64, String>,
}

impl DnsNames {
    /// Records an answer received in `netns` at `at_ns`; true if it changed the
    /// name's addresses.
    pub fn answer(&mut self, netns: u32, answer: &DnsAnswer, at_ns: u64) -> bool {
        self.history.record(netns, answer, at_ns).is_some()
    }

    /// A connection `id` from `netns` to `ip` opened at `at_ns`: remembers the
    /// name whose latest answer before then contained `ip`.
    pub fn connected(&mut self, id: u64, netns: u32, ip: IpAddr, at_ns: u64) {
        if let Some(name) = self.history.name_for(netns, ip, at_ns) {
            self.by_connection.insert(id, name);
        }
    }

    /// The connection is gone: its name, if it had one.
    pub fn closed(&mut self, id: u64) -> Option<String> {
        self.by_connection.remove(&id)
    }

    /// The name an open connection was opened for.
    pub fn name_of(&self, id: u64) -> Option<&str> {
        self.by_connection.get(&id).map(String::as_str)
    }

    /// Whether `ip` had dropped out of `name`'s answer in `netns` by `at_ns`.
    pub fn staleness(&self, netns: u32, name: &str, ip: IpAddr, at_ns: u64) -> Option<Staleness> {
        self.history.staleness(netns, name, ip, at_ns)
    }

    /// Open connections with a name (bounded by the connection table).
    pub fn named_connections(&self) -> usize {
        self.by_connection.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn answer(ips: &[&str]) -> DnsAnswer {
        DnsAnswer {
            name: "api.example".into(),
            rcode: "NoError".into(),
            addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ttl: 30,
            cnames: Vec::new(),
            truncated: false,
        }
    }

    #[test]
    fn a_connection_keeps_the_name_it_was_opened_for() {
        let mut dns = DnsNames::default();
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(!dns.answer(1, &answer(&["203.0.113.7"]), S));
        dns.connected(10, 1, a, 2 * S);
        dns.connected(11, 2, a, 2 * S); // another pod never asked
        assert_eq!(dns.name_of(10), Some("api.example"));
        assert_eq!(dns.name_of(11), None);
        assert!(dns.staleness(1, "api.example", a, 3 * S).is_none());
        assert!(dns.answer(1, &answer(&["203.0.113.9"]), 4 * S));
        let stale = dns.staleness(1, "api.example", a, 5 * S).unwrap();
        assert_eq!(stale.since_ns, 4 * S);
        assert_eq!(dns.closed(10).as_deref(), Some("api.example"));
        assert_eq!(dns.named_connections(), 0);
    }
}
