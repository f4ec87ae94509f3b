//! The Kubernetes watchers against a stand-in API server that speaks the
//! real list/watch protocol over HTTP (`support/apiserver.rs`): the picture
//! of the cluster follows adds, changes, deletions, IP reuse, a compaction
//! (`410 Gone` → relist, dropping what the relist no longer has), an
//! outage, and a 403 that names the missing permission.

mod support;

use std::{
    net::IpAddr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use support::apiserver::{
    ENDPOINT_SLICES, FakeApiServer, PODS, SERVICES, pod, service, slice, time,
};
use tracer::metadata::kubernetes::{ClusterState, watch};

const TOKEN: &str = "s3cr3t-token";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Polls `check` on the cluster picture for up to 10 s.
async fn eventually(
    cluster: &Arc<RwLock<ClusterState>>,
    what: &str,
    check: impl Fn(&ClusterState) -> bool,
) {
    eventually_within(cluster, what, Duration::from_secs(10), check).await
}

async fn eventually_within(
    cluster: &Arc<RwLock<ClusterState>>,
    what: &str,
    within: Duration,
    check: impl Fn(&ClusterState) -> bool,
) {
    let deadline = Instant::now() + within;
    while !check(&cluster.read().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_cluster_picture_follows_the_api_server() {
    let mut api = FakeApiServer::start(TOKEN);
    api.put(
        PODS,
        pod("shop", "cart-7d9f8-x1", "u1", "10.40.0.10", "node-a", 0),
    );
    api.put(
        PODS,
        pod("shop", "frontend-7d9f8-y1", "u2", "10.40.0.11", "node-a", 0),
    );
    api.put(
        PODS,
        pod("pay", "ledger-7d9f8-z1", "u3", "10.40.1.20", "node-b", 0),
    );
    api.put(SERVICES, service("shop", "cart", "10.96.0.10"));
    api.put(ENDPOINT_SLICES, slice("shop", "cart", "10.40.0.10", false));
    let kubeconfig = api.kubeconfig(TOKEN);
    let client = watch::client(Some(&kubeconfig.path)).await.expect("client");
    let cluster = Arc::new(RwLock::new(ClusterState::default()));
    let _watchers = watch::spawn(client, cluster.clone());
    eventually(&cluster, "the first sync", ClusterState::synced).await;
    {
        let c = cluster.read().unwrap();
        let cart = c.pod_by_ip(ip("10.40.0.10")).expect("cart by IP");
        assert_eq!(
            (cart.namespace.as_str(), cart.name.as_str()),
            ("shop", "cart-7d9f8-x1")
        );
        assert_eq!(
            (cart.workload.kind.as_str(), cart.workload.name.as_str()),
            ("Deployment", "cart")
        );
        assert_eq!(cart.service_account, "cart");
        assert!(cart.sidecar);
        assert_eq!(cart.node.as_deref(), Some("node-a"));
        assert_eq!(
            c.pod_by_ip(ip("10.40.1.20")).unwrap().name,
            "ledger-7d9f8-z1"
        );
        assert_eq!(
            c.service_by_ip(ip("10.96.0.10")),
            Some(&("shop".to_owned(), "cart".to_owned()))
        );
        let endpoint = c.endpoint(ip("10.40.0.10")).unwrap();
        assert_eq!(endpoint.service, "cart");
        assert!(!endpoint.terminating);
    }

    // The cart pod is deleted: it terminates (deletionTimestamp, a terminating endpoint) ...
    let mut terminating = pod("shop", "cart-7d9f8-x1", "u1", "10.40.0.10", "node-a", 0);
    terminating.metadata.deletion_timestamp = Some(time(60));
    api.put(PODS, terminating);
    api.put(ENDPOINT_SLICES, slice("shop", "cart", "10.40.0.10", true));
    eventually(&cluster, "the termination", |c| {
        c.pod_by_ip(ip("10.40.0.10"))
            .is_some_and(|p| p.deleting_since.is_some())
            && c.endpoint(ip("10.40.0.10")).is_some_and(|e| e.terminating)
    })
    .await;
    // ... and a new pod reuses its IP before the old one is gone: a new peer.
    api.put(
        PODS,
        pod("shop", "cart-7d9f8-x2", "u4", "10.40.0.10", "node-a", 120),
    );
    eventually(&cluster, "the IP reuse", |c| {
        c.pod_by_ip(ip("10.40.0.10"))
            .is_some_and(|p| p.name == "cart-7d9f8-x2")
    })
    .await;
    // A finished Job pod still listing the IP never takes it.
    let mut job = pod(
        "shop",
        "migrate-29340000-q7",
        "u9",
        "10.40.0.10",
        "node-a",
        180,
    );
    job.status.as_mut().unwrap().phase = Some("Succeeded".into());
    api.put(PODS, job);
    api.delete(PODS, "shop", "cart-7d9f8-x1", false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster
            .read()
            .unwrap()
            .pod_by_ip(ip("10.40.0.10"))
            .unwrap()
            .name,
        "cart-7d9f8-x2",
        "deleting the old pod keeps the new one on the IP"
    );

    // While the watchers are away, the ledger pod goes and the frontend is
    // recreated under its name (a new uid, as a StatefulSet does), and the
    // history is compacted: the watch resumes with 410 Gone, relists, and
    // the relist drops the ledger and the old frontend.
    api.down();
    api.delete(PODS, "pay", "ledger-7d9f8-z1", true);
    api.delete(PODS, "shop", "frontend-7d9f8-y1", true);
    api.put(
        PODS,
        pod(
            "shop",
            "frontend-7d9f8-y1",
            "u2-new",
            "10.40.0.13",
            "node-a",
            190,
        ),
    );
    api.compact_and_cut_watches();
    api.up();
    // The watchers back off exponentially (at most 30 s between tries).
    eventually_within(
        &cluster,
        "the relist after 410 Gone",
        Duration::from_secs(45),
        |c| c.pod_by_ip(ip("10.40.1.20")).is_none() && c.pod_by_ip(ip("10.40.0.13")).is_some(),
    )
    .await;
    assert!(
        cluster.read().unwrap().pod_by_uid("u2").is_none(),
        "the old uid of a recreated pod is gone"
    );

    // An outage: the last known state stays; the failure is said; then it recovers.
    api.down();
    eventually(&cluster, "the outage to be noticed", |c| {
        c.failures().next().is_some()
    })
    .await;
    assert!(
        cluster
            .read()
            .unwrap()
            .pod_by_ip(ip("10.40.0.13"))
            .is_some()
    );
    api.put(
        PODS,
        pod("shop", "cart-7d9f8-x3", "u5", "10.40.0.12", "node-a", 200),
    );
    api.up();
    // The watchers back off exponentially (at most 30 s between tries).
    eventually_within(&cluster, "the recovery", Duration::from_secs(45), |c| {
        c.failures().next().is_none() && c.pod_by_ip(ip("10.40.0.12")).is_some()
    })
    .await;

    let requests = api.requests();
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("allowWatchBookmarks=true")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_forbidden_resource_names_the_missing_permission() {
    let api = FakeApiServer::start(TOKEN);
    api.forbid(ENDPOINT_SLICES);
    let kubeconfig = api.kubeconfig(TOKEN);
    let client = watch::client(Some(&kubeconfig.path)).await.unwrap();
    let cluster = Arc::new(RwLock::new(ClusterState::default()));
    let _watchers = watch::spawn(client, cluster.clone());
    eventually(&cluster, "the 403", |c| c.failures().next().is_some()).await;
    let failures: Vec<String> = cluster
        .read()
        .unwrap()
        .failures()
        .map(|(_, e)| e.to_owned())
        .collect();
    assert!(
        failures[0]
            .contains("cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\""),
        "{failures:?}"
    );
    assert!(!cluster.read().unwrap().synced());

    // A wrong token: 401, said as such.
    let wrong = api.kubeconfig("not-the-token");
    let client = watch::client(Some(&wrong.path)).await.unwrap();
    let cluster = Arc::new(RwLock::new(ClusterState::default()));
    let _watchers = watch::spawn(client, cluster.clone());
    eventually(&cluster, "the 401", |c| c.failures().next().is_some()).await;
    let failure = cluster
        .read()
        .unwrap()
        .failures()
        .map(|(_, e)| e.to_owned())
        .next()
        .unwrap();
    assert!(failure.contains("Unauthorized"), "{failure}");
}
