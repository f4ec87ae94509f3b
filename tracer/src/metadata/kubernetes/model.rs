//! What conntracer keeps of Kubernetes objects: a pod's identity, its owner
//! workload, addresses and termination; a Service's endpoints and their
//! conditions. Built from the API's own types (`k8s-openapi`).

use std::{net::IpAddr, time::SystemTime};

use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};

/// A workload: the controller a pod belongs to, as `kubectl` names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`,
    /// `ReplicaSet` (without a Deployment), or `Pod` for a bare pod.
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub workload: Workload,
    pub service_account: String,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// An Istio sidecar is injected (container `istio-proxy`, or a native
    /// sidecar init container of that name).
    pub sidecar: bool,
    /// When the pod was asked to terminate: `metadata.deletionTimestamp` is
    /// that moment plus the grace period (the deadline), so the grace period
    /// (`deletionGracePeriodSeconds`) is taken off again.
    pub deleting_since: Option<SystemTime>,
    /// Succeeded or Failed: its IP may be given to another pod already.
    pub finished: bool,
    pub created: Option<SystemTime>,
}

/// Label a ReplicaSet's pods carry: its name is the Deployment's plus `-HASH`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A Job made by a CronJob is named `CRONJOB-<scheduled minute>`.
const CRONJOB_SUFFIX_DIGITS: usize = 8;

impl PodInfo {
    /// `None` for pods without a name or uid (not a real API object).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let name = meta.name.clone()?;
        let uid = meta.uid.clone()?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.ip.parse().ok())
            .collect();
        if let Some(ip) = status
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse().ok())
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
        let istio = |c: &k8s_openapi::api::core::v1::Container| c.name == "istio-proxy";
        Some(Self {
            workload: workload(pod, &name),
            uid,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name,
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            sidecar: spec.is_some_and(|s| {
                s.containers.iter().any(istio)
                    || s.init_containers
                        .iter()
                        .flatten()
                        .any(|c| istio(c) && c.restart_policy.as_deref() == Some("Always"))
            }),
            deleting_since: meta.deletion_timestamp.as_ref().map(|t| {
                let deadline: SystemTime = t.0.into();
                let grace = meta.deletion_grace_period_seconds.unwrap_or(0).max(0) as u64;
                deadline - std::time::Duration::from_secs(grace)
            }),
            finished: status
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed"),
            created: meta.creation_timestamp.as_ref().map(|t| t.0.into()),
        })
    }
}

/// The pod's controller, followed one step further where the name says how
/// (ReplicaSet → Deployment by the pod-template-hash, Job → CronJob by the
/// schedule suffix), so no ReplicaSet or Job has to be watched.
fn workload(pod: &Pod, pod_name: &str) -> Workload {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .or_else(|| pod.metadata.owner_references.iter().flatten().next());
    let Some(owner) = owner else {
        return Workload {
            kind: "Pod".into(),
            name: pod_name.to_owned(),
        };
    };
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH));
    match owner.kind.as_str() {
        "ReplicaSet" => match hash.and_then(|h| owner.name.strip_suffix(&format!("-{h}"))) {
            Some(deployment) => Workload {
                kind: "Deployment".into(),
                name: deployment.to_owned(),
            },
            None => Workload {
                kind: "ReplicaSet".into(),
                name: owner.name.clone(),
            },
        },
        "Job" => match owner.name.rsplit_once('-') {
            Some((cronjob, minute))
                if minute.len() == CRONJOB_SUFFIX_DIGITS
                    && minute.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Workload {
                    kind: "CronJob".into(),
                    name: cronjob.to_owned(),
                }
            }
            _ => Workload {
                kind: "Job".into(),
                name: owner.name.clone(),
            },
        },
        kind => Workload {
            kind: kind.to_owned(),
            name: owner.name.clone(),
        },
    }
}

/// One endpoint address of a Service, with its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub service_namespace: String,
    pub service: String,
    pub ip: IpAddr,
    pub serving: bool,
    pub terminating: bool,
    /// The pod behind it (`targetRef`), when the slice names one.
    pub pod_uid: Option<String>,
    /// The slice's ports: (name, the endpoint's port).
    pub ports: Vec<(String, u16)>,
}

/// A Service port: its name, the port it exposes, and where it sends it
/// (a number, or a named container port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target: Option<u16>,
}

pub fn service_ports(svc: &k8s_openapi::api::core::v1::Service) -> Vec<ServicePort> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: u16::try_from(p.port).ok()?,
                target: match &p.target_port {
                    Some(IntOrString::Int(t)) => u16::try_from(*t).ok(),
                    Some(IntOrString::String(_)) => None,
                    None => u16::try_from(p.port).ok(),
                },
            })
        })
        .collect()
}

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

pub fn endpoints(slice: &EndpointSlice) -> Vec<EndpointInfo> {
    let Some(service) = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
    else {
        return Vec::new();
    };
    let namespace = slice
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let ports: Vec<(String, u16)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u16::try_from(p.port?).ok()?,
            ))
        })
        .collect();
    slice
        .endpoints
        .iter()
        .flat_map(|e| {
            let conditions = e.conditions.as_ref();
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            // `serving` is unset on old API servers: then `ready` says it.
            let serving = conditions
                .and_then(|c| c.serving.or(c.ready))
                .unwrap_or(true);
            let pod_uid = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.uid.clone());
            let (namespace, ports) = (&namespace, &ports);
            e.addresses.iter().filter_map(move |a| {
                Some(EndpointInfo {
                    service_namespace: namespace.clone(),
                    service: service.clone(),
                    ip: a.parse().ok()?,
                    serving,
                    terminating,
                    pod_uid: pod_uid.clone(),
                    ports: ports.clone(),
                })
            })
        })
        .collect()
}
