//! `conntracer daemon`: the DaemonSet mode. Follows every connection on the
//! node, attributes failures and 503s, and serves metrics and findings.

pub mod config;
pub mod http;
pub mod metrics;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::counters::Counter;

use crate::{
    analysis::findings::Finding, pipeline::Pipeline, probes::counters::CounterTotals, startup,
};
use config::{DaemonArgs, DaemonConfig};
use metrics::{Metrics, NameLabels, PodLabels, ProbeLabels, ReasonLabels};

/// State shared between the event loop and the HTTP handlers.
pub struct Core {
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub last_drain: Instant,
    pub probes_attached: usize,
    kernel_totals: CounterTotals,
    table_evicted: u64,
}

impl Core {
    pub fn findings(&mut self, namespace: Option<&str>, pod: Option<&str>) -> Vec<Finding> {
        let p = &mut self.pipeline;
        let mismatches = p.analyzer.mismatches(&mut p.pods);
        p.analyzer.findings.report(&mismatches, namespace, pod)
    }

    /// Gauges and kernel counters, refreshed once per drain.
    fn refresh(&mut self, totals: CounterTotals) {
        let m = &self.metrics;
        let lost = totals.get(Counter::EventsLost);
        m.events_lost
            .inc_by(lost.saturating_sub(self.kernel_totals.get(Counter::EventsLost)));
        let evicted_kernel = totals.get(Counter::UntrackedClose) + totals.get(Counter::SockMapFull);
        let evicted_before = self.kernel_totals.get(Counter::UntrackedClose)
            + self.kernel_totals.get(Counter::SockMapFull);
        let table_evicted = self.pipeline.table.evicted;
        m.map_evictions.inc_by(
            evicted_kernel.saturating_sub(evicted_before) + table_evicted - self.table_evicted,
        );
        self.table_evicted = table_evicted;
        self.kernel_totals = totals;
        m.tracked_connections.set(self.pipeline.table.len() as i64);
        let p = &mut self.pipeline;
        let terminating = p.analyzer.open_to_terminating(p.table.iter(), &mut p.pods);
        let stale = p.analyzer.open_to_stale_dns(p.table.iter(), &mut p.pods);
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
        for (reason, total) in [
            ("malformed", p.dns_malformed),
            ("truncated", p.dns_truncated),
        ] {
            let counter = m.dns_skipped.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        m.open_to_terminating.clear();
        for (pod, n) in terminating {
            m.open_to_terminating
                .get_or_create(&PodLabels {
                    namespace: pod.namespace,
                    pod: pod.pod,
                })
                .set(n as i64);
        }
    }
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let config = DaemonConfig::resolve(&args)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let mut tracer = startup::start(&args.probes)?;
    let metrics = Metrics::new(env!("CARGO_PKG_VERSION"), &crate::kernel::release());
    for (probe, _) in &tracer.probes.failed {
        metrics
            .probe_attach_failures
            .get_or_create(&ProbeLabels {
                probe: (*probe).to_owned(),
            })
            .inc();
    }
    let pipeline = Pipeline::new(
        config.analysis.clone(),
        args.probes.max_connections as usize,
        tracer.setup.reset_reasons.clone(),
    );
    let core = Arc::new(Mutex::new(Core {
        pipeline,
        metrics,
        last_drain: Instant::now(),
        probes_attached: tracer.probes.program_ids().len(),
        kernel_totals: CounterTotals::default(),
        table_evicted: 0,
    }));

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server =
        axum::serve(listener, http::router(core.clone())).with_graceful_shutdown(async move {
            let _ = stop_rx.changed().await;
        });
    let server = tokio::spawn(async move { server.await });
    tracing::info!(
        "conntracer daemon: {}; serving http://{}/metrics",
        tracer.probes.attached_summary(),
        config.listen
    );

    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut observations = Vec::new();
    loop {
        let stop = tokio::select! {
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = tracer.reader.wait() => false,
        };
        let totals = CounterTotals::read(&tracer.counters);
        {
            let mut core = core.lock().expect("core lock");
            let core = &mut *core;
            core.pipeline
                .ingest(&mut tracer.reader, &mut observations, |_, _, _| {});
            for obs in observations.drain(..) {
                core.metrics.observe(&obs);
            }
            core.refresh(totals);
            core.last_drain = Instant::now();
        }
        if stop {
            break;
        }
    }
    tracing::info!("conntracer daemon: stopping (no more scrapes, detaching probes)");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    drop(tracer);
    Ok(())
}
