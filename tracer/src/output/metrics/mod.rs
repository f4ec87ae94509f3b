//! The Prometheus metrics of DESIGN.md (prefix `conntracer_`), in
//! OpenMetrics text via `prometheus-client`. Names are a contract.
//! [`MetricsOutput`] (in `feed`) feeds them from a session; `handles`
//! keeps the per-event path cheap.

mod feed;
mod handles;
mod labels;

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    sync::Mutex,
};

use prometheus_client::metrics::{
    counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info,
};
use prometheus_client::registry::Registry;

use tracer_common::event::{ResetSide, Role};

use crate::{
    analysis::{
        Labels, Observation,
        naming::{LabelIds, PodId},
        observation::side_name,
    },
    events::role_name,
    fastmap::{FastMap, FastSet},
};
pub use feed::MetricsOutput;
use handles::Handles;
pub use labels::*;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Idle and lifetime buckets: from the reuse-event threshold up to an hour
/// (Envoy's default pool idle timeout).
fn seconds_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
    ])
}

/// The series made for one pod, so that they can go when it is forgotten.
#[derive(Debug, Default)]
struct PodSeries {
    opened: HashSet<OpenedLabels>,
    failures: HashSet<PeerCauseLabels>,
    stale_failures: HashSet<PeerCauseLabels>,
    http_503: HashSet<PodCauseLabels>,
    proxy_answered_503: HashSet<PodCauseLabels>,
    resets: HashSet<ResetLabels>,
    idle_before_reuse: HashSet<PeerLabels>,
    peer_idle_close: HashSet<PeerLabels>,
    lifetime: HashSet<DirectionLabels>,
    dns_answer_changes: HashSet<NameLabels>,
    /// The pod ids its handles are cached under.
    ids: FastSet<PodId>,
}

/// Namespace → pod → its series.
type SeriesByPod = HashMap<String, HashMap<String, PodSeries>>;

/// Every pod's series, and the handles cached for them: one lock.
#[derive(Debug, Default)]
struct Series {
    by_pod: SeriesByPod,
    handles: Handles,
}

/// `pod`'s series.
fn of_pod<'a>(series: &'a mut SeriesByPod, (namespace, pod): (&str, &str)) -> &'a mut PodSeries {
    // Looked up before an entry is made: no key String for known pods.
    if !series.contains_key(namespace) {
        series.insert(namespace.to_owned(), HashMap::new());
    }
    let pods = series.get_mut(namespace).expect("just made");
    if !pods.contains_key(pod) {
        pods.insert(pod.to_owned(), PodSeries::default());
    }
    pods.get_mut(pod).expect("just made")
}

/// Notes `labels` among `pod`'s series of the family `set` picks.
fn remember<L: Clone + Hash + Eq>(
    series: &mut SeriesByPod,
    pod: (&str, &str),
    set: impl FnOnce(&mut PodSeries) -> &mut HashSet<L>,
    labels: &L,
) {
    let set = set(of_pod(series, pod));
    if !set.contains(labels) {
        set.insert(labels.clone());
    }
}

/// The handle cached under `key`, else the one `make` finds or creates (and
/// notes among the pod's series), then cached under `key` if there is one.
fn cached<K: Hash + Eq, M: Clone>(
    by_pod: &mut SeriesByPod,
    cache: &mut FastMap<K, M>,
    key: Option<(K, PodId)>,
    labels: &Labels,
    make: impl FnOnce(&mut SeriesByPod) -> M,
) -> M {
    let Some((key, pod_id)) = key else {
        return make(by_pod);
    };
    if let Some(handle) = cache.get(&key) {
        return handle.clone();
    }
    let handle = make(by_pod);
    of_pod(by_pod, pod_of(labels)).ids.insert(pod_id);
    cache.insert(key, handle.clone());
    handle
}

pub struct Metrics {
    pub registry: Registry,
    /// Every pod's series (the pod-labelled families), and cached handles.
    series: Mutex<Series>,
    pub connections_opened: Family<OpenedLabels, Counter>,
    pub connection_failures: Family<PeerCauseLabels, Counter>,
    pub stale_connection_failures: Family<PeerCauseLabels, Counter>,
    pub http_503: Family<PodCauseLabels, Counter>,
    pub proxy_answered_503: Family<PodCauseLabels, Counter>,
    pub resets: Family<ResetLabels, Counter>,
    pub idle_before_reuse: Histograms<PeerLabels>,
    pub peer_idle_close: Histograms<PeerLabels>,
    pub connection_lifetime: Histograms<DirectionLabels>,
    pub open_to_terminating: Family<PodLabels, Gauge>,
    pub open_to_stale_dns: Family<NameLabels, Gauge>,
    pub dns_answer_changes: Family<NameLabels, Counter>,
    pub dns_skipped: Family<ReasonLabels, Counter>,
    pub records_skipped: Family<ReasonLabels, Counter>,
    pub label_overflows: Family<LabelLabels, Counter>,
    pub findings_dropped: Counter,
    pub kubernetes_synced: Gauge,
    pub process_cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub process_resident_memory: Gauge,
    pub events_lost: Counter,
    pub tracked_connections: Gauge,
    pub map_evictions: Counter,
    pub connections_expired: Counter,
    pub seeded_connections: Counter,
    pub seeded_listeners: Counter,
    pub probe_attach_failures: Family<ProbeLabels, Counter>,
}

impl Metrics {
    /// `kubernetes`: pods are named from the API (adds `kubernetes_synced`);
    /// `sources`: which source each feature uses on this kernel (`build_info` labels).
    pub fn new(version: &str, kernel: &str, sources: &[(&str, &str)], kubernetes: bool) -> Self {
        let mut registry = Registry::with_prefix("conntracer");
        let m = Self {
            connections_opened: Family::default(),
            connection_failures: Family::default(),
            stale_connection_failures: Family::default(),
            http_503: Family::default(),
            proxy_answered_503: Family::default(),
            resets: Family::default(),
            idle_before_reuse: Family::new_with_constructor(seconds_histogram),
            peer_idle_close: Family::new_with_constructor(seconds_histogram),
            connection_lifetime: Family::new_with_constructor(seconds_histogram),
            open_to_terminating: Family::default(),
            open_to_stale_dns: Family::default(),
            dns_answer_changes: Family::default(),
            dns_skipped: Family::default(),
            records_skipped: Family::default(),
            label_overflows: Family::default(),
            findings_dropped: Counter::default(),
            kubernetes_synced: Gauge::default(),
            process_cpu_seconds: Counter::default(),
            process_resident_memory: Gauge::default(),
            events_lost: Counter::default(),
            tracked_connections: Gauge::default(),
            map_evictions: Counter::default(),
            connections_expired: Counter::default(),
            seeded_connections: Counter::default(),
            seeded_listeners: Counter::default(),
            probe_attach_failures: Family::default(),
            registry: Registry::default(),
            series: Mutex::default(),
        };
        registry.register(
            "connections_opened",
            "TCP connections established, by pod, direction and role",
            m.connections_opened.clone(),
        );
        registry.register(
            "connection_failures",
            "Connections ended by the peer with a request in flight, or connects refused or timed out, by cause",
            m.connection_failures.clone(),
        );
        registry.register(
            "stale_connection_failures",
            "Failures on reused (pooled) connections with a request in flight: each is a 503 unless a retry hid it",
            m.stale_connection_failures.clone(),
        );
        registry.register(
            "http_503",
            "HTTP 503 responses proxies wrote to their downstream, by the cause of the upstream failure behind them",
            m.http_503.clone(),
        );
        registry.register(
            "proxy_answered_503",
            "Failures of a proxy's upstream connection with a request in flight that no 503 seen on this node took: 503s this proxy will have answered (unless it retried), not seen as 503s here (e.g. mTLS downstream), by the proxy's pod and cause",
            m.proxy_answered_503.clone(),
        );
        registry.register(
            "resets",
            "TCP resets sent and received, with the kernel's reason for resets sent",
            m.resets.clone(),
        );
        registry.register(
            "idle_before_reuse_seconds",
            "Idle time before a pooled connection was reused (reuses after at least the reuse-event threshold)",
            m.idle_before_reuse.clone(),
        );
        registry.register(
            "peer_idle_close_seconds",
            "Idle time at which the peer closed an idle connection: the peer's keep-alive timeout",
            m.peer_idle_close.clone(),
        );
        registry.register(
            "connection_lifetime_seconds",
            "Connection lifetime, established to closed",
            m.connection_lifetime.clone(),
        );
        registry.register(
            "open_connections_to_terminating_pods",
            "Open connections whose destination is terminating: its listener on this node closed, or the cluster marked its pod terminating",
            m.open_to_terminating.clone(),
        );
        registry.register(
            "open_connections_to_stale_dns",
            "Open connections to IPs the latest DNS answer for their name no longer has: a warning before the 503s",
            m.open_to_stale_dns.clone(),
        );
        registry.register(
            "dns_answer_changes",
            "DNS answers whose addresses differ from the previous answer",
            m.dns_answer_changes.clone(),
        );
        registry.register(
            "dns_payloads_skipped",
            "DNS payloads not used: malformed (or hostile), or truncated",
            m.dns_skipped.clone(),
        );
        registry.register(
            "records_skipped",
            "Kernel records not decoded: shorter than their type, or of an unknown kind (a build mismatch)",
            m.records_skipped.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "CPU time the daemon used (user and system)",
            m.process_cpu_seconds.clone(),
        );
        registry.register_with_unit(
            "process_resident_memory",
            "The daemon's resident memory",
            prometheus_client::registry::Unit::Bytes,
            m.process_resident_memory.clone(),
        );
        registry.register(
            "label_overflows",
            "Observations counted under the label value `other` because the cap of distinct values was reached: `pod` (--pod-cap pods), `peer` and `name` (--peer-cap per pod)",
            m.label_overflows.clone(),
        );
        registry.register(
            "findings_dropped",
            "Findings dropped for newer ones: at most --findings-cap are kept, the least recently seen goes first",
            m.findings_dropped.clone(),
        );
        if kubernetes {
            registry.register(
                "kubernetes_synced",
                "1 while pod names come from a Kubernetes API that is synced and reachable; 0 before the first sync or while watching fails (the last known state is used)",
                m.kubernetes_synced.clone(),
            );
        }
        registry.register(
            "events_lost",
            "Kernel events dropped because the ring buffer was full",
            m.events_lost.clone(),
        );
        registry.register(
            "tracked_connections",
            "Connections currently tracked",
            m.tracked_connections.clone(),
        );
        registry.register(
            "map_evictions",
            "Connections lost from tracking (kernel LRU map or the userspace table was full)",
            m.map_evictions.clone(),
        );
        registry.register(
            "connections_expired",
            "Connections dropped from tracking because the kernel no longer knew their socket (their close event was lost)",
            m.connections_expired.clone(),
        );
        registry.register(
            "seeded_connections",
            "Connections that existed before this start, found at attach and tracked from then on",
            m.seeded_connections.clone(),
        );
        registry.register(
            "seeded_listeners",
            "Listening sockets that existed before this start, found at attach",
            m.seeded_listeners.clone(),
        );
        registry.register(
            "probe_attach_failures",
            "Probes that could not be attached",
            m.probe_attach_failures.clone(),
        );
        registry.register(
            "build",
            "Build and kernel information",
            Info::new(
                [("version", version), ("kernel", kernel)]
                    .iter()
                    .chain(sources)
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<Vec<_>>(),
            ),
        );
        Self { registry, ..m }
    }

    pub fn observe(&self, obs: &Observation) {
        let mut guard = self.series.lock().expect("series lock");
        let series = &mut *guard;
        match obs {
            Observation::Opened { labels, role } => self.opened(series, labels, *role),
            Observation::Reset {
                labels,
                side,
                reason,
            } => self.reset(series, labels, *side, reason),
            Observation::Reuse { labels, idle } => {
                let key = labels.ids.map(|ids| ((ids, labels.direction), ids.pod));
                let by_pod = &mut series.by_pod;
                cached(
                    by_pod,
                    &mut series.handles.idle_before_reuse,
                    key,
                    labels,
                    |by_pod| {
                        let l = peer_labels(labels);
                        remember(by_pod, pod_of(labels), |s| &mut s.idle_before_reuse, &l);
                        Histogram::clone(&self.idle_before_reuse.get_or_create(&l))
                    },
                )
                .observe(idle.as_secs_f64());
            }
            Observation::Closed {
                labels,
                lifetime,
                peer_idle_close,
            } => {
                let by_pod = &mut series.by_pod;
                if let Some(lifetime) = lifetime {
                    let key = labels.ids.map(|ids| ((ids.pod, labels.direction), ids.pod));
                    cached(
                        by_pod,
                        &mut series.handles.lifetime,
                        key,
                        labels,
                        |by_pod| {
                            let l = DirectionLabels {
                                namespace: labels.namespace.clone(),
                                pod: labels.pod.clone(),
                                direction: labels.direction.as_str().to_owned(),
                            };
                            remember(by_pod, pod_of(labels), |s| &mut s.lifetime, &l);
                            Histogram::clone(&self.connection_lifetime.get_or_create(&l))
                        },
                    )
                    .observe(lifetime.as_secs_f64());
                }
                if let Some(idle) = peer_idle_close {
                    let key = labels.ids.map(|ids| ((ids, labels.direction), ids.pod));
                    cached(
                        by_pod,
                        &mut series.handles.peer_idle_close,
                        key,
                        labels,
                        |by_pod| {
                            let l = peer_labels(labels);
                            remember(by_pod, pod_of(labels), |s| &mut s.peer_idle_close, &l);
                            Histogram::clone(&self.peer_idle_close.get_or_create(&l))
                        },
                    )
                    .observe(idle.as_secs_f64());
                }
            }
            Observation::Failure(f) => {
                let l = PeerCauseLabels {
                    namespace: f.namespace.clone(),
                    pod: f.pod.clone(),
                    direction: f.direction.as_str().to_owned(),
                    peer: f.peer.clone(),
                    cause: f.cause.as_str().to_owned(),
                };
                self.connection_failures.get_or_create(&l).inc();
                let pod = (f.namespace.as_str(), f.pod.as_str());
                remember(&mut series.by_pod, pod, |s| &mut s.failures, &l);
                if f.stale {
                    self.stale_connection_failures.get_or_create(&l).inc();
                    remember(&mut series.by_pod, pod, |s| &mut s.stale_failures, &l);
                }
            }
            Observation::Dns(d) => {
                if d.changed {
                    let l = NameLabels {
                        namespace: d.namespace.clone(),
                        pod: d.pod.clone(),
                        name: d.name_label.clone(),
                    };
                    self.dns_answer_changes.get_or_create(&l).inc();
                    let pod = (d.namespace.as_str(), d.pod.as_str());
                    remember(&mut series.by_pod, pod, |s| &mut s.dns_answer_changes, &l);
                }
            }
            Observation::Http503(h) => {
                let l = PodCauseLabels {
                    namespace: h.namespace.clone(),
                    pod: h.pod.clone(),
                    cause: h.cause_name().to_owned(),
                };
                self.http_503.get_or_create(&l).inc();
                let pod = (h.namespace.as_str(), h.pod.as_str());
                remember(&mut series.by_pod, pod, |s| &mut s.http_503, &l);
            }
            Observation::ProxyAnswered503(f) => {
                let l = PodCauseLabels {
                    namespace: f.namespace.clone(),
                    pod: f.pod.clone(),
                    cause: f.cause.as_str().to_owned(),
                };
                self.proxy_answered_503.get_or_create(&l).inc();
                let pod = (f.namespace.as_str(), f.pod.as_str());
                remember(&mut series.by_pod, pod, |s| &mut s.proxy_answered_503, &l);
            }
            Observation::PodForgotten { namespace, pod } => self.forget(series, namespace, pod),
        }
    }

    fn opened(&self, series: &mut Series, labels: &Labels, role: Role) {
        let key = labels
            .ids
            .map(|ids| (ids.pod, labels.direction, role as u8));
        if let Some(key) = key
            && let Some((workload, counter)) = series.handles.opened.get(&key)
            && *workload == labels.workload
        {
            counter.inc();
            return;
        }
        let l = OpenedLabels {
            namespace: labels.namespace.clone(),
            pod: labels.pod.clone(),
            workload: labels.workload.clone().unwrap_or_default(),
            direction: labels.direction.as_str().to_owned(),
            role: role_name(role).unwrap_or("unknown").to_owned(),
        };
        let counter = Counter::clone(&self.connections_opened.get_or_create(&l));
        counter.inc();
        remember(&mut series.by_pod, pod_of(labels), |s| &mut s.opened, &l);
        if let (Some(key), Some(LabelIds { pod, .. })) = (key, labels.ids) {
            of_pod(&mut series.by_pod, pod_of(labels)).ids.insert(pod);
            series
                .handles
                .opened
                .insert(key, (labels.workload.clone(), counter));
        }
    }

    fn reset(&self, series: &mut Series, labels: &Labels, side: ResetSide, reason: &str) {
        let key = labels
            .ids
            .map(|ids| (ids.pod, labels.direction, side as u8));
        if let Some(counter) = key
            .and_then(|key| series.handles.resets.get(&key))
            .and_then(|reasons| reasons.get(reason))
        {
            counter.inc();
            return;
        }
        let l = ResetLabels {
            namespace: labels.namespace.clone(),
            pod: labels.pod.clone(),
            direction: labels.direction.as_str().to_owned(),
            side: side_name(side).unwrap_or("unknown").to_owned(),
            reason: reason.to_owned(),
        };
        let counter = Counter::clone(&self.resets.get_or_create(&l));
        counter.inc();
        remember(&mut series.by_pod, pod_of(labels), |s| &mut s.resets, &l);
        if let (Some(key), Some(LabelIds { pod, .. })) = (key, labels.ids) {
            of_pod(&mut series.by_pod, pod_of(labels)).ids.insert(pod);
            series
                .handles
                .resets
                .entry(key)
                .or_default()
                .insert(reason.to_owned(), counter);
        }
    }

    /// Removes every series of a pod that gave its label's place, and the
    /// handles cached for them.
    fn forget(&self, series: &mut Series, namespace: &str, pod: &str) {
        let Some(pods) = series.by_pod.get_mut(namespace) else {
            return;
        };
        let gone = pods.remove(pod);
        if pods.is_empty() {
            series.by_pod.remove(namespace);
        }
        let Some(s) = gone else { return };
        series.handles.forget(&s.ids);
        for l in &s.opened {
            self.connections_opened.remove(l);
        }
        for l in &s.failures {
            self.connection_failures.remove(l);
        }
        for l in &s.stale_failures {
            self.stale_connection_failures.remove(l);
        }
        for l in &s.http_503 {
            self.http_503.remove(l);
        }
        for l in &s.proxy_answered_503 {
            self.proxy_answered_503.remove(l);
        }
        for l in &s.resets {
            self.resets.remove(l);
        }
        for l in &s.idle_before_reuse {
            self.idle_before_reuse.remove(l);
        }
        for l in &s.peer_idle_close {
            self.peer_idle_close.remove(l);
        }
        for l in &s.lifetime {
            self.connection_lifetime.remove(l);
        }
        for l in &s.dns_answer_changes {
            self.dns_answer_changes.remove(l);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

fn pod_of(l: &Labels) -> (&str, &str) {
    (&l.namespace, &l.pod)
}

fn peer_labels(l: &Labels) -> PeerLabels {
    PeerLabels {
        namespace: l.namespace.clone(),
        pod: l.pod.clone(),
        direction: l.direction.as_str().to_owned(),
        peer: l.peer.clone(),
    }
}

#[cfg(test)]
mod tests;
