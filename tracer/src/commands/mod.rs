//! The subcommands: each resolves its configuration, starts a session with
//! the outputs it wants, and reports. No subcommand has a loop of its own.

pub mod check;
pub mod daemon;
pub mod diagnose;
pub mod trace;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    cli::CommonArgs,
    config::{Config, Settings},
    kernel,
    metadata::{NetnsNames, Pods},
    output::{
        http::{self, Endpoints},
        metrics::{Metrics, MetricsOutput, ProbeLabels},
    },
    session::Session,
};

/// Flags over `--config` over the mode's defaults over the embedded ones.
pub fn resolve(common: &CommonArgs, mode_defaults: Settings) -> anyhow::Result<Config> {
    Ok(Config::resolve(
        common.settings(),
        common.config.as_deref(),
        mode_defaults,
    )?)
}

/// Pods as the netns names under `/run/netns` say (no Kubernetes).
pub fn pods() -> Pods {
    Pods::new(Box::new(NetnsNames::new()))
}

/// A running HTTP server; `stop` ends it gracefully.
pub struct Served {
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), self.task).await;
    }
}

/// Binds `address` first (so a busy port fails before the probes load).
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (--listen / listen)"))
}

/// Plugs the metrics into `session` and serves them, health and findings.
pub fn serve(session: &mut Session, listener: tokio::net::TcpListener) -> anyhow::Result<Served> {
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), &kernel::release()));
    for (probe, _) in &session.tracer().probes.failed {
        metrics
            .probe_attach_failures
            .get_or_create(&ProbeLabels {
                probe: (*probe).to_owned(),
            })
            .inc();
    }
    session.add_output(MetricsOutput::new(metrics.clone()));
    let endpoints = Endpoints {
        metrics,
        health: session.health.clone(),
        queries: session.serve_queries(),
    };
    let address = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(http::serve(listener, endpoints, async move {
        let _ = stopped.changed().await;
    }));
    Ok(Served {
        address,
        stop,
        task,
    })
}
