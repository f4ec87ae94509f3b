//! Network namespace → pod on Kubernetes: the addresses inside the namespace
//! (read there, once per namespace) matched to the IPs of this node's pods.
//! Remote addresses → the Service (by cluster IP) or the pod's workload
//! (by pod IP, anywhere in the cluster), with its termination.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use super::{cluster::ClusterState, model::PodInfo};
use crate::kernel::mount::cgroup2_mount;
use crate::metadata::{
    Peer, PodName, PodSource, Termination,
    cgroups::{CgroupPaths, pod_uid},
    namespaces::{in_namespace, local_addresses, namespace_file},
    netns::host_netns_inode,
};

fn pod_name(p: &PodInfo) -> PodName {
    PodName {
        namespace: p.namespace.clone(),
        pod: p.name.clone(),
        workload: Some(p.workload.name.clone()),
    }
}

fn host(namespace: &str, service: &str) -> String {
    format!("{service}.{namespace}.svc.cluster.local")
}

pub struct KubernetesPods {
    cluster: Arc<RwLock<ClusterState>>,
    node: String,
    host_inode: Option<u32>,
    cgroups: CgroupPaths,
    /// The pod uid each namespace was named after (checked to still exist).
    named: std::collections::HashMap<u32, String>,
    /// Said once: no pod of the synced cluster runs on this node's name.
    warned_node: bool,
}

impl KubernetesPods {
    pub fn new(cluster: Arc<RwLock<ClusterState>>, node: String) -> Self {
        Self {
            cluster,
            node,
            host_inode: host_netns_inode(),
            cgroups: CgroupPaths::new(cgroup2_mount().map(PathBuf::from)),
            named: std::collections::HashMap::new(),
            warned_node: false,
        }
    }
}

impl PodSource for KubernetesPods {
    fn lookup(&mut self, netns: u32) -> Option<PodName> {
        if Some(netns) == self.host_inode {
            return Some(PodName::host());
        }
        let path = namespace_file(netns)?;
        let addresses = in_namespace(&path, local_addresses)?;
        let cluster = self.cluster.read().expect("cluster lock");
        let pod = addresses.iter().find_map(|ip| {
            cluster
                .pod_by_ip(*ip)
                .filter(|p| p.node.as_deref() == Some(self.node.as_str()))
        });
        if pod.is_none()
            && !self.warned_node
            && cluster.synced()
            && !cluster
                .pods()
                .any(|p| p.node.as_deref() == Some(self.node.as_str()))
        {
            self.warned_node = true;
            tracing::warn!(
                "no pod of the cluster runs on node {:?}: set --node-name (or NODE_NAME) to this node's name in Kubernetes",
                self.node
            );
        }
        let pod = pod?;
        self.named.insert(netns, pod.uid.clone());
        Some(pod_name(pod))
    }

    /// The pod a namespace was named after still exists (its inode may have
    /// gone to another pod's namespace since).
    fn still_current(&self, netns: u32) -> bool {
        let cluster = self.cluster.read().expect("cluster lock");
        self.named
            .get(&netns)
            .is_none_or(|uid| cluster.pod_by_uid(uid).is_some_and(|p| !p.finished))
    }

    /// hostNetwork pods of this node, by the pod uid in their cgroup's path.
    fn lookup_cgroup(&mut self, cgroup_id: u64) -> Option<PodName> {
        let uid = pod_uid(self.cgroups.path(cgroup_id)?)?;
        let cluster = self.cluster.read().expect("cluster lock");
        cluster
            .pod_by_uid(&uid)
            .filter(|p| p.node.as_deref() == Some(self.node.as_str()))
            .map(pod_name)
    }

    fn peer(&self, addr: SocketAddr) -> Option<Peer> {
        let ip = addr.ip();
        let cluster = self.cluster.read().expect("cluster lock");
        if let Some((namespace, service)) = cluster.service_by_ip(ip) {
            return Some(Peer {
                label: format!("{namespace}/{service}"),
                service_host: Some(host(namespace, service)),
                // Before kube-proxy's translation: the Service's own port.
                service_port: Some(addr.port()),
                terminating: None,
            });
        }
        let pod = cluster.pod_by_ip(ip);
        let endpoint = cluster.endpoint(ip);
        if pod.is_none() && endpoint.is_none() {
            return None;
        }
        let deleting = pod.and_then(|p| p.deleting_since);
        let terminating = (deleting.is_some() || endpoint.is_some_and(|e| e.terminating))
            .then_some(Termination { since: deleting });
        Some(Peer {
            label: match (pod, endpoint) {
                (Some(p), _) => pod_name(p).as_peer(),
                (None, Some(e)) => format!("{}/{}", e.service_namespace, e.service),
                (None, None) => unreachable!("checked above"),
            },
            service_host: endpoint.map(|e| host(&e.service_namespace, &e.service)),
            service_port: endpoint.and_then(|e| cluster.service_port(e, addr.port())),
            terminating,
        })
    }
}
