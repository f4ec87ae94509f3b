//! Who a network namespace belongs to.
//!
//! A [`PodSource`] names the pod that owns a network namespace (the netns
//! names under `/run/netns`, or the Kubernetes API). [`Pods`] asks it once
//! per namespace and remembers the answer, so nothing downstream resolves a
//! name per event.

pub mod addresses;
pub mod cgroups;
pub mod cookies;
pub mod kubernetes;
pub mod namespaces;
pub mod netns;
pub mod sockets;

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use crate::fastmap::FastMap;

pub use netns::NetnsNames;

/// A pod as the metrics and reports name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodName {
    pub namespace: String,
    pub pod: String,
    /// Its workload (Deployment, StatefulSet, ...) where a cluster says so.
    pub workload: Option<String>,
}

impl PodName {
    /// The host's own network namespace.
    pub fn host() -> Self {
        Self {
            namespace: String::new(),
            pod: "host".to_owned(),
            workload: None,
        }
    }

    /// A namespace no source can name.
    pub fn unnamed(inode: u32) -> Self {
        Self {
            namespace: String::new(),
            pod: format!("netns-{inode}"),
            workload: None,
        }
    }

    /// What it is as a peer: `namespace/workload` when known, else `namespace/pod`.
    pub fn as_peer(&self) -> String {
        match &self.workload {
            Some(w) if !self.namespace.is_empty() => format!("{}/{w}", self.namespace),
            _ => self.qualified(),
        }
    }

    /// `namespace/pod`, or just `pod` without a namespace.
    pub fn qualified(&self) -> String {
        if self.namespace.is_empty() {
            self.pod.clone()
        } else {
            format!("{}/{}", self.namespace, self.pod)
        }
    }
}

/// What a cluster says about a remote address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// `namespace/workload` of the pod, or `namespace/service` for a Service IP.
    pub label: String,
    /// The Service host the destination is known by (`cart.shop.svc.cluster.local`).
    pub service_host: Option<String>,
    /// The Service's port for the destination's port (a pod's targetPort
    /// maps back to the port the Service exposes).
    pub service_port: Option<u16>,
    /// The pod behind the address is terminating (deletion requested, or its
    /// endpoint marked `terminating`), since when if known.
    pub terminating: Option<Termination>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    /// `metadata.deletionTimestamp` of the pod, when known.
    pub since: Option<SystemTime>,
}

/// Names the pod that owns a network namespace, and what a remote address is.
pub trait PodSource: Send {
    /// The owner of the namespace with this inode, or `None` when this source
    /// cannot tell (yet: the pod may not be known to it so far).
    fn lookup(&mut self, netns: u32) -> Option<PodName>;

    /// What the cluster knows about `addr` as a destination (any node).
    fn peer(&self, _addr: SocketAddr) -> Option<Peer> {
        None
    }

    /// Whether the answer given for `netns` still holds: the kernel reuses a
    /// namespace's inode number for the next one, so a named namespace is
    /// checked again now and then (default: names never go stale).
    fn still_current(&self, _netns: u32) -> bool {
        true
    }

    /// The pod a process in the host's network namespace belongs to, by its
    /// cgroup (hostNetwork pods); `None` for the host's own processes.
    fn lookup_cgroup(&mut self, _cgroup_id: u64) -> Option<PodName> {
        None
    }
}

/// How long a namespace no source could name keeps its `netns-INODE` name
/// (or a cgroup no pod claimed stays the host's) before the source is asked again.
const RETRY_UNNAMED: Duration = Duration::from_secs(1);

/// The longest wait before asking again about a namespace no source names.
const MAX_RETRY_UNNAMED: Duration = Duration::from_secs(60);

/// How often a named namespace's name is checked to still hold.
const RECHECK_NAMED: Duration = Duration::from_secs(5);

/// Host-network cgroups remembered at most (then forgotten all at once).
const MAX_CGROUPS: usize = 65_536;

/// Network namespaces remembered at most (then forgotten all at once, and
/// asked about again): pods churn.
const MAX_NAMESPACES: usize = 65_536;

/// The pod of each network namespace, asked of the source once per namespace.
pub struct Pods {
    source: Box<dyn PodSource>,
    /// Named namespaces, and when to check their name still holds.
    named: FastMap<u32, (PodName, Instant)>,
    /// Host-network processes' cgroups that belong to a pod.
    by_cgroup: FastMap<u64, PodName>,
    /// Host-network cgroups no pod claimed, and when to ask again.
    host_cgroups: FastMap<u64, Instant>,
    /// Namespaces the source could not name, when to ask again, and how
    /// long the wait after that will be (it doubles up to a minute).
    unnamed: FastMap<u32, (PodName, Instant, Duration)>,
    /// Times the source was asked (for tests: never per event).
    pub lookups: u64,
}

impl Pods {
    pub fn new(source: Box<dyn PodSource>) -> Self {
        Self {
            source,
            named: FastMap::default(),
            by_cgroup: FastMap::default(),
            host_cgroups: FastMap::default(),
            unnamed: FastMap::default(),
            lookups: 0,
        }
    }

    /// The pod that owns `netns`.
    pub fn get(&mut self, netns: u32) -> PodName {
        let now = Instant::now();
        if let Some((pod, check_at)) = self.named.get_mut(&netns) {
            if now < *check_at {
                return pod.clone();
            }
            if self.source.still_current(netns) {
                *check_at = now + RECHECK_NAMED;
                return pod.clone();
            }
            // Another namespace now has this inode: ask again.
            self.named.remove(&netns);
        }
        let wait = match self.unnamed.get(&netns) {
            Some((pod, retry_at, _)) if now < *retry_at => return pod.clone(),
            Some((_, _, wait)) => (*wait * 2).min(MAX_RETRY_UNNAMED),
            None => RETRY_UNNAMED,
        };
        self.lookups += 1;
        if self.named.len() + self.unnamed.len() >= MAX_NAMESPACES {
            self.named.clear();
            self.unnamed.clear();
        }
        match self.source.lookup(netns) {
            Some(pod) => {
                self.unnamed.remove(&netns);
                self.named.insert(netns, (pod.clone(), now + RECHECK_NAMED));
                pod
            }
            None => {
                let pod = PodName::unnamed(netns);
                self.unnamed.insert(netns, (pod.clone(), now + wait, wait));
                pod
            }
        }
    }

    /// The pod of a socket in `netns` owned by a process in cgroup
    /// `cgroup_id`: the namespace's pod, or, in the host's namespace, the
    /// hostNetwork pod of that cgroup (asked once per cgroup; a cgroup no
    /// pod claims is asked again at most every second).
    pub fn get_owned(&mut self, netns: u32, cgroup_id: u64) -> PodName {
        let pod = self.get(netns);
        if cgroup_id == 0 || pod != PodName::host() {
            return pod;
        }
        if let Some(owner) = self.by_cgroup.get(&cgroup_id) {
            return owner.clone();
        }
        let now = Instant::now();
        if self
            .host_cgroups
            .get(&cgroup_id)
            .is_some_and(|retry_at| now < *retry_at)
        {
            return pod;
        }
        self.lookups += 1;
        if self.by_cgroup.len() + self.host_cgroups.len() >= MAX_CGROUPS {
            // Containers come and go: forget them all rather than grow.
            self.by_cgroup.clear();
            self.host_cgroups.clear();
        }
        match self.source.lookup_cgroup(cgroup_id) {
            Some(owner) => {
                self.by_cgroup.insert(cgroup_id, owner.clone());
                owner
            }
            None => {
                self.host_cgroups.insert(cgroup_id, now + RETRY_UNNAMED);
                pod
            }
        }
    }

    /// `get_owned` without asking the source.
    pub fn peek_owned(&self, netns: u32, cgroup_id: u64) -> PodName {
        self.by_cgroup
            .get(&cgroup_id)
            .filter(|_| self.named.get(&netns).map(|(pod, _)| pod) == Some(&PodName::host()))
            .cloned()
            .unwrap_or_else(|| self.peek(netns))
    }

    /// What the source knows about a remote address (not cached: a pod's
    /// termination changes).
    pub fn peer(&self, addr: SocketAddr) -> Option<Peer> {
        self.source.peer(addr)
    }

    /// The pod that owns `netns`, if it is already known; asks nothing.
    pub fn peek(&self, netns: u32) -> PodName {
        self.named
            .get(&netns)
            .map(|(pod, _)| pod)
            .or_else(|| self.unnamed.get(&netns).map(|(pod, _, _)| pod))
            .cloned()
            .unwrap_or_else(|| PodName::unnamed(netns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names netns 1 only after the first question (a pod appearing late).
    struct Late {
        asked: u32,
    }

    impl PodSource for Late {
        fn lookup(&mut self, netns: u32) -> Option<PodName> {
            self.asked += 1;
            (netns == 1 && self.asked > 2).then(|| PodName {
                namespace: "shop".into(),
                pod: "cart".into(),
                workload: None,
            })
        }
    }

    #[test]
    fn asks_once_per_namespace_and_retries_unnamed_ones_slowly() {
        let mut pods = Pods::new(Box::new(Late { asked: 0 }));
        for _ in 0..1000 {
            assert_eq!(pods.get(1).pod, "netns-1");
        }
        assert_eq!(
            pods.lookups, 1,
            "an unnamed namespace is not asked per event"
        );
        // Past the retry time the source is asked again, and its answer sticks.
        pods.unnamed.get_mut(&1).unwrap().1 = Instant::now();
        assert_eq!(pods.get(1).pod, "netns-1", "not named yet");
        assert_eq!(
            pods.unnamed[&1].2,
            RETRY_UNNAMED * 2,
            "the wait doubles while unnamed"
        );
        pods.unnamed.get_mut(&1).unwrap().1 = Instant::now();
        assert_eq!(pods.get(1).qualified(), "shop/cart");
        for _ in 0..1000 {
            pods.get(1);
        }
        assert_eq!(pods.lookups, 3);
        assert_eq!(pods.peek(1).pod, "cart");
        assert_eq!(pods.peek(9).pod, "netns-9");
    }
}
