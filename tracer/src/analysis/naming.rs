//! Naming what a connection is counted under: its pod (from the pod
//! source, once per namespace), its direction, and a bounded `peer` label —
//! what the cluster says the address is (its Service, or its pod's
//! `namespace/workload`, on any node), else the destination's pod when it
//! is on this node, else `port-N` (addresses only when asked for); at most
//! `cap` distinct peers per pod, the rest `other`. DNS names as label values are bounded the same way.
//!
//! Metric observations admit new label values; reports (findings, gauges)
//! only [`peek`](Naming::peek_labels), so reading never spends a slot.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use tracer_common::event::Role;

use super::{
    direction::{Direction, DirectionClassifier},
    topology::Topology,
};
use crate::metadata::{PodName, Pods};

pub const OVERFLOW: &str = "other";

/// The bounded labels a connection is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    pub namespace: String,
    pub pod: String,
    /// The pod's workload, where a cluster names it.
    pub workload: Option<String>,
    pub direction: Direction,
    pub peer: String,
}

/// At most `cap` distinct values per pod (network namespace), then `other`.
#[derive(Debug)]
pub struct BoundedLabels {
    cap: usize,
    seen: HashMap<u32, HashSet<String>>,
    /// Observations counted under `other` because their pod was at the cap.
    pub overflowed: u64,
}

impl BoundedLabels {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: HashMap::new(),
            overflowed: 0,
        }
    }

    /// The label for `candidate` in `netns`, admitting it if there is room.
    pub fn admit(&mut self, netns: u32, candidate: String) -> String {
        let seen = self.seen.entry(netns).or_default();
        if seen.contains(&candidate) {
            return candidate;
        }
        if seen.len() >= self.cap {
            self.overflowed += 1;
            return OVERFLOW.to_owned();
        }
        seen.insert(candidate.clone());
        candidate
    }

    /// The label `candidate` has, or would get, in `netns`; admits nothing.
    pub fn peek(&self, netns: u32, candidate: String) -> String {
        match self.seen.get(&netns) {
            Some(seen) if !seen.contains(&candidate) && seen.len() >= self.cap => {
                OVERFLOW.to_owned()
            }
            _ => candidate,
        }
    }
}

pub struct Naming {
    pub pods: Pods,
    directions: DirectionClassifier,
    peers: BoundedLabels,
    dns_names: BoundedLabels,
    peer_addresses: bool,
}

impl Naming {
    pub fn new(
        pods: Pods,
        directions: DirectionClassifier,
        cap: usize,
        peer_addresses: bool,
    ) -> Self {
        Self {
            pods,
            directions,
            peers: BoundedLabels::new(cap),
            dns_names: BoundedLabels::new(cap),
            peer_addresses,
        }
    }

    /// The pod of a socket in `netns` owned by a process in `cgroup_id`
    /// (0: unknown), which names hostNetwork pods in the host's namespace.
    pub fn pod(&mut self, netns: u32, cgroup_id: u64) -> PodName {
        self.pods.get_owned(netns, cgroup_id)
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
        let pod = self.pods.get_owned(netns, cgroup_id);
        let dest_netns = topology.netns_of(netns, remote.ip());
        let dest_pod = dest_netns.map(|n| self.pods.get(n));
        let candidate = self.peer_candidate(dest_pod, role, remote);
        Labels {
            namespace: pod.namespace,
            pod: pod.pod,
            workload: pod.workload,
            direction: self.direction(dest_netns, netns, role, remote),
            peer: self.peers.admit(netns, candidate),
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
        let pod = self.pods.peek_owned(netns, cgroup_id);
        let dest_netns = topology.netns_of(netns, remote.ip());
        let candidate = self.peer_candidate(dest_netns.map(|n| self.pods.peek(n)), role, remote);
        Labels {
            namespace: pod.namespace,
            pod: pod.pod,
            workload: pod.workload,
            direction: self.direction(dest_netns, netns, role, remote),
            peer: self.peers.peek(netns, candidate),
        }
    }

    /// Observations labelled `other` so far: (peers, DNS names).
    pub fn overflows(&self) -> (u64, u64) {
        (self.peers.overflowed, self.dns_names.overflowed)
    }

    /// The bounded label for a DNS name asked in `netns`.
    pub fn dns_name(&mut self, netns: u32, name: &str) -> String {
        self.dns_names.admit(netns, name.to_owned())
    }

    pub fn peek_dns_name(&self, netns: u32, name: &str) -> String {
        self.dns_names.peek(netns, name.to_owned())
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
        let mut p = BoundedLabels::new(2);
        assert_eq!(p.admit(1, "a".into()), "a");
        assert_eq!(p.peek(1, "b".into()), "b");
        assert_eq!(
            p.peek(1, "c".into()),
            "c",
            "room left: it would be admitted"
        );
        assert_eq!(p.admit(1, "b".into()), "b");
        assert_eq!(p.peek(1, "c".into()), OVERFLOW);
        assert_eq!(p.admit(1, "c".into()), OVERFLOW);
        assert_eq!(p.overflowed, 1, "counted");
        assert_eq!(p.admit(1, "a".into()), "a");
        assert_eq!(p.admit(2, "c".into()), "c");
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
            1,
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
