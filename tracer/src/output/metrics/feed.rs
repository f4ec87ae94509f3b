//! [`MetricsOutput`]: keeps the registry current from a session, with
//! observations as they come and gauges and kernel counters after each drain.

use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use tracer_common::counters::Counter as KernelCounter;

use super::{LabelLabels, Metrics, NameLabels, PodLabels, ReasonLabels};
use crate::{
    analysis::Observation,
    metadata::kubernetes::ClusterState,
    probes::counters::CounterTotals,
    session::{Flow, Output, State},
};

/// Keeps the registry current from a session: observations as they come,
/// gauges and kernel counters after each drain.
pub struct MetricsOutput {
    metrics: Arc<Metrics>,
    /// The Kubernetes picture, when pods are named from it.
    kubernetes: Option<Arc<RwLock<ClusterState>>>,
    /// Totals already added to the counters.
    kernel_before: CounterTotals,
    table_evicted_before: u64,
}

impl MetricsOutput {
    pub fn new(metrics: Arc<Metrics>, kubernetes: Option<Arc<RwLock<ClusterState>>>) -> Self {
        Self {
            metrics,
            kubernetes,
            kernel_before: CounterTotals::default(),
            table_evicted_before: 0,
        }
    }
}

/// Raises a counter to `total` (counters only go up).
fn raise_to(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Output for MetricsOutput {
    fn observation(&mut self, observation: &Observation) {
        self.metrics.observe(observation);
    }

    fn drained(&mut self, state: &State<'_>) -> std::io::Result<Flow> {
        let m = &self.metrics;
        let p = state.pipeline;
        let (now, before) = (&state.kernel, &self.kernel_before);
        m.events_lost.inc_by(
            now.get(KernelCounter::EventsLost)
                .saturating_sub(before.get(KernelCounter::EventsLost)),
        );
        let evicted = |t: &CounterTotals| {
            t.get(KernelCounter::UntrackedClose) + t.get(KernelCounter::SockMapFull)
        };
        m.map_evictions.inc_by(
            evicted(now).saturating_sub(evicted(before)) + p.table.evicted
                - self.table_evicted_before,
        );
        self.table_evicted_before = p.table.evicted;
        raise_to(&m.connections_expired, p.table.expired);
        if let Some(cluster) = &self.kubernetes {
            let cluster = cluster.read().expect("cluster lock");
            m.kubernetes_synced.set(i64::from(
                cluster.synced() && cluster.failures().next().is_none(),
            ));
        }
        self.kernel_before = state.kernel;
        raise_to(&m.seeded_connections, p.seeded.connections);
        raise_to(&m.seeded_listeners, p.seeded.listeners);
        m.tracked_connections.set(p.table.len() as i64);

        let stale = p.analysis.open_to_stale_dns(p.table.iter(), state.now_ns);
        m.open_to_stale_dns.clear();
        for ((pod, name), n) in stale {
            m.open_to_stale_dns
                .get_or_create(&NameLabels {
                    namespace: pod.namespace,
                    pod: pod.pod,
                    name,
                })
                .set(n as i64);
        }
        let terminating = p.analysis.open_to_terminating(p.table.iter());
        m.open_to_terminating.clear();
        for (pod, n) in terminating {
            m.open_to_terminating
                .get_or_create(&PodLabels {
                    namespace: pod.namespace,
                    pod: pod.pod,
                })
                .set(n as i64);
        }
        if let Some(usage) = ProcessUsage::read() {
            let cpu = &m.process_cpu_seconds;
            cpu.inc_by((usage.cpu_seconds - cpu.get()).max(0.0));
            m.process_resident_memory.set(usage.resident_bytes as i64);
        }
        let overflows = p.analysis.label_overflows();
        for (label, total) in [
            ("pod", overflows.pods),
            ("peer", overflows.peers),
            ("name", overflows.names),
        ] {
            raise_to(
                &m.label_overflows.get_or_create(&LabelLabels {
                    label: label.to_owned(),
                }),
                total,
            );
        }
        raise_to(&m.findings_dropped, p.analysis.findings_dropped());
        let skipped = p.skipped;
        for (family, reason, total) in [
            (&m.dns_skipped, "malformed", skipped.dns_malformed),
            (&m.dns_skipped, "truncated", skipped.dns_truncated),
            (&m.dns_skipped, "forwarded", skipped.dns_forwarded),
            (&m.records_skipped, "short", state.short_records),
            (&m.records_skipped, "unknown_kind", skipped.unknown_kind),
        ] {
            raise_to(
                &family.get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                }),
                total,
            );
        }
        Ok(Flow::Continue)
    }
}

/// The daemon's own CPU time and resident memory, from /proc/self.
struct ProcessUsage {
    cpu_seconds: f64,
    resident_bytes: u64,
}

impl ProcessUsage {
    fn read() -> Option<Self> {
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name: utime and stime are 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(Self {
            cpu_seconds: (utime + stime) / ticks.max(1) as f64,
            resident_bytes: resident * page.max(1) as u64,
        })
    }
}
