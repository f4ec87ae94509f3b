//! The IP addresses of each network namespace, for records the kernel could
//! not tie to a namespace exactly: a DNS answer seen at a device (kept only
//! where it is addressed to the namespace itself, not routed through it) and
//! a reset sent by a namespace's control socket (owned by the namespace
//! whose address it came from).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use super::namespaces::{distinct_namespaces, in_namespace, local_addresses};

pub struct NetnsAddresses {
    by_netns: HashMap<u32, HashSet<IpAddr>>,
    last_scan: Option<Instant>,
    /// A namespace not seen yet triggers a rescan at most this often.
    min_rescan: Duration,
    /// Known namespaces are rescanned this often (addresses added later).
    max_age: Duration,
}

impl Default for NetnsAddresses {
    fn default() -> Self {
        Self {
            by_netns: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_secs(1),
            max_age: Duration::from_secs(30),
        }
    }
}

impl NetnsAddresses {
    /// Built from known data (tests).
    pub fn from_map(by_netns: HashMap<u32, HashSet<IpAddr>>) -> Self {
        Self {
            by_netns,
            last_scan: Some(Instant::now()),
            min_rescan: Duration::MAX,
            max_age: Duration::MAX,
        }
    }

    /// `ip` is configured in namespace `netns`.
    pub fn is_local(&mut self, netns: u32, ip: IpAddr) -> bool {
        self.refresh(Some(netns));
        self.by_netns
            .get(&netns)
            .is_some_and(|set| set.contains(&ip))
    }

    /// The one namespace with `ip` configured; `None` when none or several
    /// have it (loopback is in every namespace).
    pub fn owner(&mut self, ip: IpAddr) -> Option<u32> {
        if ip.is_loopback() || ip.is_unspecified() {
            return None;
        }
        self.refresh(None);
        let mut owners = self
            .by_netns
            .iter()
            .filter(|(_, set)| set.contains(&ip))
            .map(|(netns, _)| *netns);
        let first = owners.next()?;
        owners.next().is_none().then_some(first)
    }

    fn refresh(&mut self, wanted: Option<u32>) {
        let age = self.last_scan.map(|t| t.elapsed());
        let unknown = wanted.is_some_and(|n| !self.by_netns.contains_key(&n));
        let due = match age {
            None => true,
            Some(age) => age >= self.max_age || (unknown && age >= self.min_rescan),
        };
        if due {
            self.rescan();
        }
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.by_netns = distinct_namespaces()
            .into_iter()
            .filter_map(|(inode, path)| {
                let addresses = in_namespace(&path, local_addresses)?;
                Some((inode, addresses.into_iter().collect()))
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_names_its_namespace_only_when_unique() {
        let mut map = HashMap::new();
        map.insert(1, HashSet::from([ip("127.0.0.1"), ip("10.0.0.1")]));
        map.insert(
            2,
            HashSet::from([ip("127.0.0.1"), ip("10.0.0.2"), ip("10.9.9.9")]),
        );
        map.insert(3, HashSet::from([ip("127.0.0.1"), ip("10.9.9.9")]));
        let mut addresses = NetnsAddresses::from_map(map);
        assert_eq!(addresses.owner(ip("10.0.0.2")), Some(2));
        assert_eq!(addresses.owner(ip("127.0.0.1")), None);
        assert_eq!(
            addresses.owner(ip("10.9.9.9")),
            None,
            "two namespaces have it"
        );
        assert_eq!(addresses.owner(ip("10.0.0.7")), None);
        assert!(addresses.is_local(1, ip("10.0.0.1")));
        assert!(
            !addresses.is_local(1, ip("10.0.0.2")),
            "routed through, not local"
        );
        assert!(!addresses.is_local(9, ip("10.0.0.1")));
    }

    #[test]
    fn this_namespace_has_loopback() {
        let mut addresses = NetnsAddresses::default();
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert!(addresses.is_local(me, ip("127.0.0.1")));
    }
}
