//! The subcommands: each resolves its configuration, starts a session with
//! the outputs it wants, and reports. No subcommand has a loop of its own.

pub mod check;
pub mod daemon;
pub mod diagnose;
pub mod lock;
pub mod trace;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use crate::{
    cli::CommonArgs,
    config::{Config, Environment, Identity, Settings},
    kernel,
    metadata::{
        NetnsNames, Pods,
        kubernetes::{self, ClusterState, KubernetesPods},
    },
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
        &Environment::read(),
    )?)
}

/// Where the session's pod names come from, and what keeps them current.
pub struct PodIdentity {
    pub pods: Pods,
    /// The cluster picture and its watchers (they stop when this is dropped).
    pub kubernetes: Option<(Arc<RwLock<ClusterState>>, JoinSet<()>)>,
}

/// Pods named by the configured source: netns names, or the Kubernetes API
/// (watchers started here; their first sync is awaited by `/readyz`).
pub async fn identity(config: &Config) -> anyhow::Result<PodIdentity> {
    match &config.identity {
        Identity::NetnsNames => Ok(PodIdentity {
            pods: Pods::new(Box::new(NetnsNames::new())),
            kubernetes: None,
        }),
        Identity::Kubernetes { kubeconfig, node } => {
            let client = kubernetes::watch::client(kubeconfig.as_deref()).await?;
            let cluster = Arc::new(RwLock::new(ClusterState::default()));
            let watchers = kubernetes::watch::spawn(client, cluster.clone());
            tracing::info!("pods named from the Kubernetes API (node {node})");
            Ok(PodIdentity {
                pods: Pods::new(Box::new(KubernetesPods::new(cluster.clone(), node.clone()))),
                kubernetes: Some((cluster, watchers)),
            })
        }
    }
}

/// Keeps the Kubernetes watchers running while it lives.
pub type Watchers = Option<JoinSet<()>>;

/// What every subcommand does first: binds the configured listen address
/// (so a busy port fails before the probes load), names pods by the
/// configured source, and starts the session.
pub async fn start(
    config: &Config,
) -> anyhow::Result<(Session, Option<tokio::net::TcpListener>, Watchers)> {
    let listener = match config.listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let identity = identity(config).await?;
    let mut session = Session::start(config, identity.pods)?;
    let (cluster, watchers) = identity.kubernetes.unzip();
    session.health.kubernetes = cluster;
    Ok((session, listener, watchers))
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
    tokio::net::TcpListener::bind(address).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "; another process listens there: stop it or choose another address"
            }
            std::io::ErrorKind::AddrNotAvailable => "; that address is not on this host",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {address} (--listen / listen): {e}{hint}")
    })
}

/// Plugs the metrics into `session` and serves them, health and findings.
pub fn serve(
    session: &mut Session,
    listener: tokio::net::TcpListener,
    config: &Config,
) -> anyhow::Result<Served> {
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        &kernel::release(),
        &session.tracer().setup.modes.describe(),
        session.health.kubernetes.is_some(),
    ));
    for (probe, _) in &session.tracer().probes.failed {
        metrics
            .probe_attach_failures
            .get_or_create(&ProbeLabels {
                probe: (*probe).to_owned(),
            })
            .inc();
    }
    session.add_output(MetricsOutput::new(
        metrics.clone(),
        session.health.kubernetes.clone(),
    ));
    let endpoints = Endpoints {
        metrics,
        health: session.health.clone(),
        queries: config.findings.then(|| session.serve_queries()),
    };
    let address = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(http::serve(listener, endpoints, config.http, async move {
        let _ = stopped.changed().await;
    }));
    Ok(Served {
        address,
        stop,
        task,
    })
}
