//! Keeping [`ClusterState`] current: one watcher per kind (list, then
//! watch from the list's resourceVersion, bookmarks on; a `410 Gone` starts
//! a relist), backing off on errors. While the API server is unreachable
//! the last known state stays in use; that is logged once per outage.

use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use futures::TryStreamExt as _;
use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client,
    api::WatchParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::task::JoinSet;

use super::cluster::{Change, ClusterState, Kind};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        error: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (not in a cluster, and no kubeconfig)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, else the in-cluster service account (or
/// `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let fail = |error| ClientError::Kubeconfig {
                path: path.display().to_string(),
                error,
            };
            let file = Kubeconfig::read_from(path).map_err(fail)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(fail)?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    Client::try_from(config).map_err(ClientError::Client)
}

/// Starts the watchers; they run until the returned set is dropped.
pub fn spawn(client: Client, cluster: Arc<RwLock<ClusterState>>) -> JoinSet<()> {
    let mut set = JoinSet::new();
    set.spawn(watch(
        Api::<Pod>::all(client.clone()),
        cluster.clone(),
        Kind::Pods,
        ClusterState::pod,
    ));
    set.spawn(watch(
        Api::<Service>::all(client.clone()),
        cluster.clone(),
        Kind::Services,
        ClusterState::service,
    ));
    set.spawn(watch(
        Api::<EndpointSlice>::all(client),
        cluster,
        Kind::EndpointSlices,
        ClusterState::endpoint_slice,
    ));
    set
}

async fn watch<K>(
    api: Api<K>,
    cluster: Arc<RwLock<ClusterState>>,
    kind: Kind,
    apply: fn(&mut ClusterState, Change<K>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    // A resumed watch says nothing until something changes: while failing,
    // a one-second watch every few seconds tells when the API answers again.
    let mut probe = tokio::time::interval(PROBE_WHILE_FAILING);
    let mut failing = false;
    loop {
        let next = tokio::select! {
            next = stream.try_next() => next,
            _ = probe.tick(), if failing => {
                // A watch (not a list): it needs the verb the watcher needs.
                if api.watch(&WatchParams::default().timeout(1), "0").await.is_ok() {
                    recovered(&cluster, kind, &mut failing);
                }
                continue;
            }
        };
        match next {
            Ok(Some(event)) => {
                let change = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => Change::Apply(o),
                    watcher::Event::Delete(o) => Change::Delete(o),
                    watcher::Event::Init => Change::ListStart,
                    watcher::Event::InitDone => Change::ListDone,
                };
                recovered(&cluster, kind, &mut failing);
                apply(&mut cluster.write().expect("cluster lock"), change);
            }
            Ok(None) => return,
            Err(e) => {
                let error = crate::errors::chain(&e);
                if !failing {
                    tracing::warn!(
                        "Kubernetes {kind:?}: {error} (keeping the last known state; retrying with backoff)"
                    );
                    failing = true;
                    probe.reset();
                }
                cluster
                    .write()
                    .expect("cluster lock")
                    .set_failing(kind, Some(error));
            }
        }
    }
}

/// How often a failing watcher checks whether the API answers again.
const PROBE_WHILE_FAILING: std::time::Duration = std::time::Duration::from_secs(2);

fn recovered(cluster: &RwLock<ClusterState>, kind: Kind, failing: &mut bool) {
    if *failing {
        tracing::info!("Kubernetes {kind:?}: the API answers again");
        cluster
            .write()
            .expect("cluster lock")
            .set_failing(kind, None);
        *failing = false;
    }
}
