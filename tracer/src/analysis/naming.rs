//! Naming what a connection is counted under: its pod (from the pod
//! source, once per namespace), its direction, and a bounded `peer` label —
//! what the cluster says the address is (its Service, or its pod's
//! `namespace/workload`, on any node), else the destination's pod when it
//! is on this node, else `port-N` (addresses only when asked for); at most
//! `peer_cap` distinct peers per pod, the rest `other`. DNS names as label
//! values are bounded the same way. Pods themselves are bounded too: at most
//! `pod_cap` distinct pods are labelled, later ones count under
//! `namespace="other", pod="other"` (which has its own peer and name caps),
//! so every family has at most `(pod_cap + 1) × (peer_cap + 1)` values per
//! combination of its fixed-set labels, and the state behind the caps is as
//! bounded. Pods churn: at the cap, a new pod takes the place of the
//! labelled pod seen least recently if that one has been silent for
//! [`POD_LABEL_IDLE`] (it is forgotten, with its peers and names, and its
//! series are removed).
//!
//! Metric observations admit new label values; reports (findings, gauges)
//! only [`peek`](Naming::peek_labels), so reading never spends a slot.

use std::{hash::Hash, net::SocketAddr, time::Duration};

use tracer_common::event::Role;

use super::{
    direction::{Direction, DirectionClassifier},
    topology::Topology,
};
use crate::{
    fastmap::FastMap,
    metadata::{PodName, Pods},
};

pub const OVERFLOW: &str = "other";

/// A labelled pod silent this long gives its place to a new pod at the cap.
pub const POD_LABEL_IDLE: Duration = Duration::from_secs(600);

/// A labelled pod's id: fixed while it keeps its place and never reused,
/// so what is cached under it (metric handles) cannot be taken for another
/// pod's after it is forgotten.
pub type PodId = u64;

/// The id of the pod `other`.
pub const OVERFLOW_POD: PodId = 0;

/// The id of the peer `other` (past the cap).
pub const OVERFLOW_PEER: u32 = u32::MAX;

/// Ids of admitted labels: the pod's, and the peer's among that pod's peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LabelIds {
    pub pod: PodId,
    pub peer: u32,
}

/// The bounded labels a connection is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    pub namespace: String,
    pub pod: String,
    /// The pod's workload, where a cluster names it.
    pub workload: Option<String>,
    pub direction: Direction,
    pub peer: String,
    /// Set when the labels were admitted (the metrics path), not peeked:
    /// a small key for caches in place of the strings.
    pub ids: Option<LabelIds>,
}

/// A pod as labelled: (namespace, pod).
type PodKey = (String, String);

/// At most `cap` distinct values per key (a labelled pod), then `other`.
#[derive(Debug)]
pub struct BoundedLabels<K = PodKey> {
    cap: usize,
    /// Each key's values, with their ids (in order of admission).
    seen: FastMap<K, FastMap<String, u32>>,
    /// Observations counted under `other` because their key was at the cap.
    pub overflowed: u64,
}

impl<K: Hash + Eq + Clone> BoundedLabels<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: FastMap::default(),
            overflowed: 0,
        }
    }

    /// The label for `candidate` under `key`, admitting it if there is room.
    pub fn admit(&mut self, key: &K, candidate: String) -> String {
        self.admit_id(key, candidate).0
    }

    /// [`admit`](Self::admit), with the value's id under `key`
    /// ([`OVERFLOW_PEER`] for `other`).
    pub fn admit_id(&mut self, key: &K, candidate: String) -> (String, u32) {
        let seen = match self.seen.get_mut(key) {
            Some(seen) => seen,
            None => self.seen.entry(key.clone()).or_default(),
        };
        if let Some(&id) = seen.get(&candidate) {
            return (candidate, id);
        }
        if seen.len() >= self.cap {
            self.overflowed += 1;
            return (OVERFLOW.to_owned(), OVERFLOW_PEER);
        }
        let id = seen.len() as u32;
        seen.insert(candidate.clone(), id);
        (candidate, id)
    }

    /// Frees `key`'s values.
    pub fn forget(&mut self, key: &K) {
        self.seen.remove(key);
    }

    /// The label `candidate` has, or would get, in `netns`; admits nothing.
    pub fn peek(&self, key: &K, candidate: String) -> String {
        match self.seen.get(key) {
            Some(seen) if !seen.contains_key(&candidate) && seen.len() >= self.cap => {
                OVERFLOW.to_owned()
            }
            _ => candidate,
        }
    }
}

/// At most `cap` distinct pods labelled, then `other`; a pod silent for
/// [`POD_LABEL_IDLE`] gives its place to a new one.
#[derive(Debug)]
pub struct BoundedPods {
    cap: usize,
    /// Labelled pods, their ids, and when each was last seen (monotonic ns).
    seen: FastMap<PodKey, (PodId, u64)>,
    /// The id the next admitted pod gets.
    next_id: PodId,
    /// No labelled pod can have been idle long enough before this time.
    no_idle_before_ns: u64,
    /// Observations counted under pod `other`.
    pub overflowed: u64,
    /// Pods that gave their place, not yet reported.
    pub forgotten: Vec<(PodKey, PodId)>,
}

impl BoundedPods {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: FastMap::default(),
            next_id: OVERFLOW_POD + 1,
            no_idle_before_ns: 0,
            overflowed: 0,
            forgotten: Vec::new(),
        }
    }

    /// `pod` as labelled at `now_ns`, admitting it if there is room (made,
    /// at the cap, by forgetting the least recently seen pod if it is idle),
    /// with its id.
    pub fn admit(&mut self, pod: PodName, now_ns: u64) -> (PodName, PodId) {
        let key = (pod.namespace, pod.pod);
        let known = match self.seen.get_mut(&key) {
            Some((id, seen)) => {
                *seen = (*seen).max(now_ns);
                Some(*id)
            }
            None => None,
        };
        let id = match known {
            Some(id) => id,
            None => {
                if self.seen.len() >= self.cap && !self.forget_one_idle(now_ns) {
                    self.overflowed += 1;
                    return (overflow_pod(), OVERFLOW_POD);
                }
                let id = self.next_id;
                self.next_id += 1;
                self.seen.insert(key.clone(), (id, now_ns));
                id
            }
        };
        let named = PodName {
            namespace: key.0,
            pod: key.1,
            workload: pod.workload,
        };
        (named, id)
    }

    /// Forgets the least recently seen pod if it has been idle for
    /// [`POD_LABEL_IDLE`]; whether one went.
    fn forget_one_idle(&mut self, now_ns: u64) -> bool {
        if now_ns < self.no_idle_before_ns {
            return false;
        }
        let idle_ns = POD_LABEL_IDLE.as_nanos() as u64;
        let Some((oldest, (id, seen_ns))) = self
            .seen
            .iter()
            .min_by_key(|(_, (_, seen))| *seen)
            .map(|(key, seen)| (key.clone(), *seen))
        else {
            return false;
        };
        if now_ns.saturating_sub(seen_ns) < idle_ns {
            // Nothing to scan for again until the oldest could be idle.
            self.no_idle_before_ns = seen_ns.saturating_add(idle_ns);
            return false;
        }
        self.seen.remove(&oldest);
        self.forgotten.push((oldest, id));
        true
    }

    /// `pod` as it is, or would be, labelled, and its id if it has one
    /// (`None`: not labelled yet, and there is room); admits nothing.
    pub fn peek(&self, pod: PodName) -> (PodName, Option<PodId>) {
        let known = self
            .seen
            .get(&(pod.namespace.clone(), pod.pod.clone()))
            .map(|(id, _)| *id);
        if known.is_some() || self.seen.len() < self.cap {
            (pod, known)
        } else {
            (overflow_pod(), Some(OVERFLOW_POD))
        }
    }
}

/// The pod every pod past the cap is counted under.
fn overflow_pod() -> PodName {
    PodName {
        namespace: OVERFLOW.to_owned(),
        pod: OVERFLOW.to_owned(),
        workload: None,
    }
}

fn key(pod: &PodName) -> PodKey {
    (pod.namespace.clone(), pod.pod.clone())
}

/// Label overflows so far, per bounded label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overflows {
    pub pods: u64,
    pub peers: u64,
    pub names: u64,
}

pub struct Naming {
    pub pods: Pods,
    directions: DirectionClassifier,
    labelled: BoundedPods,
    peers: BoundedLabels<PodId>,
    dns_names: BoundedLabels,
    peer_addresses: bool,
    /// The latest event time seen (monotonic ns): when pods were last seen.
    now_ns: u64,
}

impl Naming {
    pub fn new(
        pods: Pods,
        directions: DirectionClassifier,
        (pod_cap, peer_cap): (usize, usize),
        peer_addresses: bool,
    ) -> Self {
        Self {
            pods,
            directions,
            labelled: BoundedPods::new(pod_cap),
            peers: BoundedLabels::new(peer_cap),
            dns_names: BoundedLabels::new(peer_cap),
            peer_addresses,
            now_ns: 0,
        }
    }

    /// Time moves on to `now_ns` (monotonic; earlier times are ignored).
    pub fn advance(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// Pods forgotten (to make room) since the last call, with their peer
    /// and name slots freed.
    pub fn take_forgotten(&mut self) -> Vec<PodName> {
        let forgotten = std::mem::take(&mut self.labelled.forgotten);
        forgotten
            .into_iter()
            .map(|(key, id)| {
                self.peers.forget(&id);
                self.dns_names.forget(&key);
                PodName {
                    namespace: key.0,
                    pod: key.1,
                    workload: None,
                }
            })
            .collect()
    }

    /// The pod of a socket in `netns` owned by a process in `cgroup_id`
    /// (0: unknown), which names hostNetwork pods in the host's namespace.
    /// Its true name (for printing), not bounded.
    pub fn pod(&mut self, netns: u32, cgroup_id: u64) -> PodName {
        self.pods.get_owned(netns, cgroup_id)
    }

    /// The pod as labelled (bounded), admitting it if there is room.
    pub fn pod_label(&mut self, netns: u32, cgroup_id: u64) -> PodName {
        let pod = self.pods.get_owned(netns, cgroup_id);
        self.labelled.admit(pod, self.now_ns).0
    }

    /// The pod as labelled, admitting nothing and asking no source.
    pub fn peek_pod_label(&self, netns: u32, cgroup_id: u64) -> PodName {
        self.labelled.peek(self.pods.peek_owned(netns, cgroup_id)).0
    }

    /// Labels for a connection of `netns` with `role` to `remote`, admitting
    /// its peer label (the metrics path).
    pub fn labels(
        &mut self,
        topology: &Topology,
        (netns, cgroup_id): (u32, u64),
        role: Role,
        remote: SocketAddr,
    ) -> Labels {
        let owner = self.pods.get_owned(netns, cgroup_id);
        let (pod, pod_id) = self.labelled.admit(owner, self.now_ns);
        let dest_netns = topology.netns_of(netns, remote.ip());
        let dest_pod = dest_netns.map(|n| self.pods.get(n));
        let candidate = self.peer_candidate(dest_pod, role, remote);
        let (peer, peer_id) = self.peers.admit_id(&pod_id, candidate);
        Labels {
            direction: self.direction(dest_netns, netns, role, remote),
            namespace: pod.namespace,
            pod: pod.pod,
            workload: pod.workload,
            peer,
            ids: Some(LabelIds {
                pod: pod_id,
                peer: peer_id,
            }),
        }
    }

    /// The same labels without admitting anything or asking the pod source.
    pub fn peek_labels(
        &self,
        topology: &Topology,
        (netns, cgroup_id): (u32, u64),
        role: Role,
        remote: SocketAddr,
    ) -> Labels {
        let (pod, pod_id) = self.labelled.peek(self.pods.peek_owned(netns, cgroup_id));
        let dest_netns = topology.netns_of(netns, remote.ip());
        let candidate = self.peer_candidate(dest_netns.map(|n| self.pods.peek(n)), role, remote);
        let peer = match pod_id {
            Some(id) => self.peers.peek(&id, candidate),
            None => candidate,
        };
        Labels {
            direction: self.direction(dest_netns, netns, role, remote),
            namespace: pod.namespace,
            pod: pod.pod,
            workload: pod.workload,
            peer,
            ids: None,
        }
    }

    /// Observations labelled `other` so far.
    pub fn overflows(&self) -> Overflows {
        Overflows {
            pods: self.labelled.overflowed,
            peers: self.peers.overflowed,
            names: self.dns_names.overflowed,
        }
    }

    /// The bounded label for a DNS name asked by `pod` (as labelled).
    pub fn dns_name(&mut self, pod: &PodName, name: &str) -> String {
        self.dns_names.admit(&key(pod), name.to_owned())
    }

    pub fn peek_dns_name(&self, pod: &PodName, name: &str) -> String {
        self.dns_names.peek(&key(pod), name.to_owned())
    }

    fn direction(
        &self,
        dest_netns: Option<u32>,
        netns: u32,
        role: Role,
        remote: SocketAddr,
    ) -> Direction {
        self.directions
            .classify(role, remote.ip(), dest_netns == Some(netns))
    }

    /// What the cluster says the address is (its Service, or its pod's
    /// `namespace/workload` on any node), else the destination's pod on this
    /// node (`namespace/pod` from netns names), else its port.
    fn peer_candidate(&self, dest_pod: Option<PodName>, role: Role, remote: SocketAddr) -> String {
        if role == Role::Client {
            // The cluster's name for an address wins over what this node saw.
            if let Some(peer) = self.pods.peer(remote) {
                return peer.label;
            }
            if let Some(pod) = dest_pod {
                return pod.as_peer();
            }
        }
        match role {
            _ if self.peer_addresses => remote.to_string(),
            Role::Server => "downstream".to_owned(),
            _ => format!("port-{}", remote.port()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::PodSource;

    #[test]
    fn caps_distinct_values_per_pod_and_peeking_admits_nothing() {
        let mut p = BoundedLabels::<u32>::new(2);
        assert_eq!(p.admit(&1, "a".into()), "a");
        assert_eq!(p.peek(&1, "b".into()), "b");
        assert_eq!(
            p.peek(&1, "c".into()),
            "c",
            "room left: it would be admitted"
        );
        assert_eq!(p.admit(&1, "b".into()), "b");
        assert_eq!(p.peek(&1, "c".into()), OVERFLOW);
        assert_eq!(p.admit(&1, "c".into()), OVERFLOW);
        assert_eq!(p.overflowed, 1, "counted");
        assert_eq!(p.admit(&1, "a".into()), "a");
        assert_eq!(p.admit(&2, "c".into()), "c");
    }

    #[test]
    fn pods_past_the_cap_are_other_and_share_its_peer_cap() {
        let mut naming = Naming::new(
            Pods::new(Box::new(ByInode)),
            DirectionClassifier::default(),
            (2, 1),
            true,
        );
        let topology = Topology::default();
        let remote = |i: u8| SocketAddr::from(([10, 9, 9, i], 443));
        let pods: Vec<Labels> = (1..=4)
            .map(|netns| naming.labels(&topology, (netns, 0), Role::Client, remote(netns as u8)))
            .collect();
        assert_eq!(pods[0].pod, "pod1");
        assert_eq!(pods[1].pod, "pod2");
        assert_eq!(
            (pods[2].namespace.as_str(), pods[2].pod.as_str()),
            (OVERFLOW, OVERFLOW)
        );
        assert_eq!(pods[2].peer, "10.9.9.3:443", "the first peer of `other`");
        assert_eq!(
            pods[3].peer, OVERFLOW,
            "`other` has one peer cap, not one per pod"
        );
        assert_eq!(
            naming.overflows(),
            Overflows {
                pods: 2,
                peers: 1,
                names: 0
            }
        );
        assert_eq!(naming.peek_pod_label(5, 0).pod, OVERFLOW);
        assert_eq!(naming.peek_pod_label(1, 0).pod, "pod1");
    }

    #[test]
    fn a_pod_silent_long_gives_its_place_to_a_new_one() {
        let mut naming = Naming::new(
            Pods::new(Box::new(ByInode)),
            DirectionClassifier::default(),
            (2, 1),
            true,
        );
        let topology = Topology::default();
        let remote = SocketAddr::from(([10, 9, 9, 9], 443));
        let at = |naming: &mut Naming, netns: u32, ns: u64| {
            naming.advance(ns);
            naming.labels(&topology, (netns, 0), Role::Client, remote)
        };
        let idle = POD_LABEL_IDLE.as_nanos() as u64;
        at(&mut naming, 1, 1);
        at(&mut naming, 2, 2);
        at(&mut naming, 1, idle / 2);
        assert_eq!(
            at(&mut naming, 3, idle).pod,
            OVERFLOW,
            "nobody idle long enough yet"
        );
        assert!(naming.take_forgotten().is_empty());
        let third = at(&mut naming, 3, idle + 3);
        assert_eq!(third.pod, "pod3", "pod2 was silent for the idle time");
        let forgotten = naming.take_forgotten();
        assert_eq!(forgotten.len(), 1);
        assert_eq!(forgotten[0].pod, "pod2");
        assert_eq!(
            at(&mut naming, 2, idle + 4).pod,
            OVERFLOW,
            "pod1 is not idle"
        );
        assert_eq!(at(&mut naming, 1, idle + 5).peer, "10.9.9.9:443");
    }

    struct ByInode;

    impl PodSource for ByInode {
        fn lookup(&mut self, netns: u32) -> Option<PodName> {
            Some(PodName {
                namespace: "shop".into(),
                pod: format!("pod{netns}"),
                workload: None,
            })
        }
    }

    #[test]
    fn peers_are_pods_on_this_node_or_ports() {
        let mut naming = Naming::new(
            Pods::new(Box::new(ByInode)),
            DirectionClassifier::default(),
            (10, 1),
            false,
        );
        let mut topology = Topology::default();
        topology.own(2, "10.0.0.2".parse().unwrap());
        let cart = "10.0.0.2:8080".parse().unwrap();
        let l = naming.labels(&topology, (1, 0), Role::Client, cart);
        assert_eq!(
            (l.namespace.as_str(), l.pod.as_str(), l.peer.as_str()),
            ("shop", "pod1", "shop/pod2")
        );
        assert_eq!(l.direction, Direction::Outbound);
        let elsewhere = "10.9.9.9:443".parse().unwrap();
        // Peeking at a second peer past the cap of 1 says `other`, and changes nothing.
        let peeked = naming.peek_labels(&topology, (1, 0), Role::Client, elsewhere);
        assert_eq!(peeked.peer, OVERFLOW);
        let server = naming.labels(
            &topology,
            (2, 0),
            Role::Server,
            "10.0.0.1:5555".parse().unwrap(),
        );
        assert_eq!(
            (server.peer.as_str(), server.direction),
            ("downstream", Direction::Inbound)
        );
        let fresh = naming.peek_labels(&topology, (3, 0), Role::Client, elsewhere);
        assert_eq!(fresh.peer, "port-443");
        assert_eq!(fresh.pod, "netns-3", "peek does not ask the pod source");
    }
}
