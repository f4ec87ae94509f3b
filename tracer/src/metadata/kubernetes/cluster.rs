//! The cluster as the watchers last saw it: every pod (by uid, and by IP —
//! the newest pod on an IP owns it, so a reused IP is a new peer), every
//! Service's cluster IPs, every endpoint with its conditions. Updated by
//! watch events, including the relist after `410 Gone`: objects the relist
//! no longer has are dropped.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};

use super::model::{EndpointInfo, PodInfo, ServicePort, endpoints, service_ports};

/// The kinds watched, each synced on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pods,
    Services,
    EndpointSlices,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Pods, Kind::Services, Kind::EndpointSlices];
}

/// A Service, `namespace/name`.
pub type ServiceName = (String, String);

#[derive(Debug, Default)]
pub struct ClusterState {
    pods: HashMap<String, PodInfo>,
    pod_by_ip: HashMap<IpAddr, String>,
    services: HashMap<String, (ServiceName, Vec<IpAddr>)>,
    service_ports: HashMap<ServiceName, Vec<ServicePort>>,
    service_by_ip: HashMap<IpAddr, ServiceName>,
    slices: HashMap<String, Vec<EndpointInfo>>,
    /// Endpoints by IP: one IP may be in several slices (several Services).
    endpoint_by_ip: HashMap<IpAddr, Vec<EndpointInfo>>,
    /// Keys seen since a relist began, per kind (`None`: not relisting).
    relisting: HashMap<Kind, HashSet<String>>,
    synced: HashSet<Kind>,
    /// Kinds whose watch is failing now, with the error.
    failing: HashMap<Kind, String>,
}

/// One change a watcher saw.
pub enum Change<K> {
    /// Added or modified (also each object of a relist).
    Apply(K),
    Delete(K),
    /// A (re)list begins.
    ListStart,
    /// The (re)list is complete.
    ListDone,
}

/// Whether a pod's IPs are its own: not the node's (hostNetwork), and not
/// released (Succeeded or Failed pods keep listing an IP another pod may have).
fn owns_ips(p: &PodInfo) -> bool {
    !p.host_network && !p.finished
}

fn key(namespace: &Option<String>, name: &Option<String>) -> Option<String> {
    Some(format!(
        "{}/{}",
        namespace.as_deref().unwrap_or(""),
        name.as_deref()?
    ))
}

impl ClusterState {
    /// Every kind has finished its first list.
    pub fn synced(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced.contains(k))
    }

    /// Why watching fails now, for each kind that fails.
    pub fn failures(&self) -> impl Iterator<Item = (Kind, &str)> {
        self.failing.iter().map(|(k, e)| (*k, e.as_str()))
    }

    /// A watch of `kind` failed (`Some`) or works again (`None`).
    pub fn set_failing(&mut self, kind: Kind, error: Option<String>) {
        match error {
            Some(e) => self.failing.insert(kind, e),
            None => self.failing.remove(&kind),
        };
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    pub fn pod_by_uid(&self, uid: &str) -> Option<&PodInfo> {
        self.pods.get(uid)
    }

    /// The pod that owns `ip` now.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pods.get(self.pod_by_ip.get(&ip)?)
    }

    /// The Service whose cluster IP this is.
    pub fn service_by_ip(&self, ip: IpAddr) -> Option<&ServiceName> {
        self.service_by_ip.get(&ip)
    }

    /// The port `endpoint`'s Service exposes for the endpoint's `port`: by the
    /// slice's port name (named target ports), else by the target number.
    pub fn service_port(&self, endpoint: &EndpointInfo, port: u16) -> Option<u16> {
        let ports = self
            .service_ports
            .get(&(endpoint.service_namespace.clone(), endpoint.service.clone()))?;
        let by_name = endpoint
            .ports
            .iter()
            .find(|(_, p)| *p == port)
            .and_then(|(name, _)| ports.iter().find(|s| s.name == *name));
        by_name
            .or_else(|| ports.iter().find(|s| s.target == Some(port)))
            .map(|s| s.port)
    }

    /// The endpoint (of some Service) at `ip`, with its conditions; none for
    /// endpoints of hostNetwork pods (their IP is the node's, which every
    /// host process shares).
    pub fn endpoint(&self, ip: IpAddr) -> Option<&EndpointInfo> {
        self.endpoint_by_ip.get(&ip)?.iter().find(|e| {
            e.pod_uid
                .as_ref()
                .and_then(|uid| self.pods.get(uid))
                .is_none_or(owns_ips)
        })
    }

    pub fn pod(&mut self, change: Change<Pod>) {
        match change {
            Change::Apply(pod) => {
                let Some(info) = PodInfo::from_pod(&pod) else {
                    return;
                };
                // Relists are matched by uid: a pod recreated under the same
                // name (a StatefulSet's) is another pod.
                self.seen(Kind::Pods, info.uid.clone());
                let same_addresses = self.pods.get(&info.uid).is_some_and(|old| {
                    old.ips == info.ips
                        && old.host_network == info.host_network
                        && old.finished == info.finished
                });
                if !same_addresses {
                    self.remove_pod(&info.uid);
                    for ip in &info.ips {
                        // The newest running pod on an IP owns it (a reused IP is a new peer).
                        let newer = self
                            .pod_by_ip
                            .get(ip)
                            .and_then(|uid| self.pods.get(uid))
                            .is_none_or(|old| old.created <= info.created);
                        if newer && owns_ips(&info) {
                            self.pod_by_ip.insert(*ip, info.uid.clone());
                        }
                    }
                }
                self.pods.insert(info.uid.clone(), info);
            }
            Change::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.remove_pod(uid);
                }
            }
            Change::ListStart => self.list_start(Kind::Pods),
            Change::ListDone => {
                let gone: Vec<String> = self.list_gone(Kind::Pods, |s| {
                    s.pods
                        .keys()
                        .map(|uid| (uid.clone(), uid.clone()))
                        .collect()
                });
                for uid in gone {
                    self.remove_pod(&uid);
                }
            }
        }
    }

    pub fn service(&mut self, change: Change<Service>) {
        match change {
            Change::Apply(svc) => {
                let Some(k) = key(&svc.metadata.namespace, &svc.metadata.name) else {
                    return;
                };
                self.seen(Kind::Services, k.clone());
                self.remove_service(&k);
                let name = (
                    svc.metadata.namespace.clone().unwrap_or_default(),
                    svc.metadata.name.clone().unwrap_or_default(),
                );
                let spec = svc.spec.as_ref();
                let ips: Vec<IpAddr> = spec
                    .and_then(|s| s.cluster_ips.clone())
                    .into_iter()
                    .flatten()
                    .chain(spec.and_then(|s| s.cluster_ip.clone()))
                    .filter_map(|ip| ip.parse().ok())
                    .collect();
                for ip in &ips {
                    self.service_by_ip.insert(*ip, name.clone());
                }
                self.service_ports.insert(name.clone(), service_ports(&svc));
                self.services.insert(k, (name, ips));
            }
            Change::Delete(svc) => {
                if let Some(k) = key(&svc.metadata.namespace, &svc.metadata.name) {
                    self.remove_service(&k);
                }
            }
            Change::ListStart => self.list_start(Kind::Services),
            Change::ListDone => {
                let gone = self.list_gone(Kind::Services, |s| {
                    s.services.keys().map(|k| (k.clone(), k.clone())).collect()
                });
                for k in gone {
                    self.remove_service(&k);
                }
            }
        }
    }

    pub fn endpoint_slice(&mut self, change: Change<EndpointSlice>) {
        match change {
            Change::Apply(slice) => {
                let Some(k) = key(&slice.metadata.namespace, &slice.metadata.name) else {
                    return;
                };
                self.seen(Kind::EndpointSlices, k.clone());
                self.remove_slice(&k);
                let list = endpoints(&slice);
                for e in &list {
                    self.endpoint_by_ip.entry(e.ip).or_default().push(e.clone());
                }
                self.slices.insert(k, list);
            }
            Change::Delete(slice) => {
                if let Some(k) = key(&slice.metadata.namespace, &slice.metadata.name) {
                    self.remove_slice(&k);
                }
            }
            Change::ListStart => self.list_start(Kind::EndpointSlices),
            Change::ListDone => {
                let gone = self.list_gone(Kind::EndpointSlices, |s| {
                    s.slices.keys().map(|k| (k.clone(), k.clone())).collect()
                });
                for k in gone {
                    self.remove_slice(&k);
                }
            }
        }
    }

    fn remove_pod(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for ip in old.ips {
                if self.pod_by_ip.get(&ip).is_some_and(|u| u == uid) {
                    self.pod_by_ip.remove(&ip);
                    // Another live pod may still hold the IP (the old one's replacement).
                    if let Some(next) = self
                        .pods
                        .values()
                        .filter(|p| owns_ips(p) && p.ips.contains(&ip))
                        .max_by_key(|p| p.created)
                    {
                        self.pod_by_ip.insert(ip, next.uid.clone());
                    }
                }
            }
        }
    }

    fn remove_service(&mut self, k: &str) {
        if let Some((name, ips)) = self.services.remove(k) {
            self.service_ports.remove(&name);
            for ip in ips {
                if self.service_by_ip.get(&ip) == Some(&name) {
                    self.service_by_ip.remove(&ip);
                }
            }
        }
    }

    fn remove_slice(&mut self, k: &str) {
        if let Some(list) = self.slices.remove(k) {
            for e in list {
                if let Some(at_ip) = self.endpoint_by_ip.get_mut(&e.ip) {
                    if let Some(i) = at_ip.iter().position(|x| *x == e) {
                        at_ip.remove(i);
                    }
                    if at_ip.is_empty() {
                        self.endpoint_by_ip.remove(&e.ip);
                    }
                }
            }
        }
    }

    fn list_start(&mut self, kind: Kind) {
        self.relisting.insert(kind, HashSet::new());
    }

    fn seen(&mut self, kind: Kind, key: String) {
        if let Some(seen) = self.relisting.get_mut(&kind) {
            seen.insert(key);
        }
    }

    /// Ends a relist: the ids of objects it did not list again.
    fn list_gone(
        &mut self,
        kind: Kind,
        present: impl FnOnce(&Self) -> Vec<(String, String)>,
    ) -> Vec<String> {
        self.synced.insert(kind);
        let Some(seen) = self.relisting.remove(&kind) else {
            return Vec::new();
        };
        present(self)
            .into_iter()
            .filter(|(key, _)| !seen.contains(key))
            .map(|(_, id)| id)
            .collect()
    }
}
