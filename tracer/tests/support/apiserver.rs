//! A stand-in Kubernetes API server that speaks the real protocol over real
//! HTTP: list with `resourceVersion`, `watch=true` streams of
//! `ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK` lines, `410 Gone` (an `ERROR`
//! event with an `Expired` Status) for a resourceVersion older than the
//! compaction point, `fieldSelector=spec.nodeName=`, bearer-token auth
//! (401), forbidden resources (403 with the API server's message), and
//! outages (connections refused while it is down). Objects are `k8s-openapi`
//! types serialised, so their JSON is the real shape.

use std::{
    collections::{BTreeMap, HashSet},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::{
    api::{
        core::v1::{Container, Pod, PodIP, PodSpec, PodStatus, Service, ServiceSpec},
        discovery::v1::{Endpoint, EndpointConditions, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A kubeconfig file for the stand-in server, removed on drop.
pub struct Kubeconfig {
    pub path: std::path::PathBuf,
}

impl Kubeconfig {
    pub fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for Kubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A resource collection: its path, and its kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resource {
    pub path: &'static str,
    pub kind: &'static str,
    pub api_version: &'static str,
    pub plural: &'static str,
    pub group: &'static str,
}

pub const PODS: Resource = Resource {
    path: "/api/v1/pods",
    kind: "Pod",
    api_version: "v1",
    plural: "pods",
    group: "",
};
pub const SERVICES: Resource = Resource {
    path: "/api/v1/services",
    kind: "Service",
    api_version: "v1",
    plural: "services",
    group: "",
};
pub const ENDPOINT_SLICES: Resource = Resource {
    path: "/apis/discovery.k8s.io/v1/endpointslices",
    kind: "EndpointSlice",
    api_version: "discovery.k8s.io/v1",
    plural: "endpointslices",
    group: "discovery.k8s.io",
};
const RESOURCES: [Resource; 3] = [PODS, SERVICES, ENDPOINT_SLICES];

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    resource: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches from before this resourceVersion get `410 Gone`.
    compacted: u64,
    /// (collection path, namespace/name) → object.
    objects: BTreeMap<(&'static str, String), Value>,
    history: Vec<Change>,
    forbidden: HashSet<&'static str>,
    /// Every request line received, for assertions.
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch (a dropped connection).
    cut: broadcast::Sender<()>,
    token: Arc<String>,
    /// Down: no new connections, and requests on kept-alive ones get 503.
    down: Arc<std::sync::atomic::AtomicBool>,
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Shared,
    /// Its own runtime, on its own thread (the process's tests may have theirs).
    runtime: tokio::runtime::Handle,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl FakeApiServer {
    pub fn start(token: &str) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let (cut, _) = broadcast::channel(16);
        let shared = Shared {
            store: Arc::new(Mutex::new(Store {
                rv: 100,
                ..Store::default()
            })),
            changes,
            cut,
            token: Arc::new(token.to_owned()),
            down: Arc::default(),
        };
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                handle_tx.send(runtime.handle().clone()).unwrap();
                runtime.block_on(std::future::pending::<()>());
            })
            .unwrap();
        let runtime = handle_rx.recv().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Self {
            addr,
            shared,
            runtime,
            server: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        self.server = Some(self.runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// A kubeconfig file that points at this server with `token`, removed on drop.
    pub fn kubeconfig(&self, token: &str) -> Kubeconfig {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "conntracer-kubeconfig-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
                 users:\n- name: conntracer\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    \
                 cluster: fake\n    user: conntracer\ncurrent-context: fake\n",
                self.addr
            ),
        )
        .unwrap();
        Kubeconfig { path }
    }

    /// Creates or replaces an object (`k8s-openapi` value).
    pub fn put(&self, resource: Resource, object: impl serde::Serialize) {
        let mut object = serde_json::to_value(object).unwrap();
        object["kind"] = json!(resource.kind);
        object["apiVersion"] = json!(resource.api_version);
        let key = (resource.path, object_key(&object));
        let mut store = self.shared.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let kind = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects.insert(key, object.clone());
        self.record(&mut store, resource, kind, object);
    }

    /// Deletes an object; `silently`: no watch event (as if it happened while
    /// the watcher was away and the event was compacted).
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str, silently: bool) {
        let mut store = self.shared.store.lock().unwrap();
        let Some(mut object) = store
            .objects
            .remove(&(resource.path, format!("{namespace}/{name}")))
        else {
            return;
        };
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if !silently {
            self.record(&mut store, resource, "DELETED", object);
        }
    }

    fn record(&self, store: &mut Store, resource: Resource, kind: &'static str, object: Value) {
        let change = Change {
            rv: store.rv,
            resource: resource.path,
            kind,
            object,
        };
        store.history.push(change.clone());
        // While down nothing is delivered: watchers learn of it on their return.
        if !self.shared.down.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.shared.changes.send(change);
        }
    }

    /// Forgets history: a watch resuming from before now gets `410 Gone`;
    /// and ends every open watch, so watchers must resume (and relist).
    pub fn compact_and_cut_watches(&self) {
        {
            let mut store = self.shared.store.lock().unwrap();
            store.compacted = store.rv;
            store.history.clear();
        }
        let _ = self.shared.cut.send(());
    }

    pub fn forbid(&self, resource: Resource) {
        self.shared
            .store
            .lock()
            .unwrap()
            .forbidden
            .insert(resource.path);
    }

    /// Takes the server down (connections refused) until `up`.
    pub fn down(&mut self) {
        use std::sync::atomic::Ordering;
        self.shared.down.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let _ = self.shared.cut.send(());
    }

    pub fn up(&mut self) {
        use std::sync::atomic::Ordering;
        self.shared.down.store(false, Ordering::SeqCst);
        // The aborted server lets go of its socket on its own thread: retry a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared.store.lock().unwrap().requests.clone()
    }
}

fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// `fieldSelector=spec.nodeName=X` (the only selector the daemon uses).
fn selected(object: &Value, query: &BTreeMap<String, String>) -> bool {
    match query
        .get("fieldSelector")
        .and_then(|s| s.strip_prefix("spec.nodeName="))
    {
        Some(node) => object["spec"]["nodeName"].as_str() == Some(node),
        None => true,
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    shared.store.lock().unwrap().requests.push(uri.to_string());
    if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable", "the API server is shutting down"),
        );
    }
    let Some(resource) = RESOURCES.iter().find(|r| r.path == uri.path()).copied() else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == format!("Bearer {}", shared.token));
    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &status(401, "Unauthorized", "Unauthorized"),
        );
    }
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if shared
        .store
        .lock()
        .unwrap()
        .forbidden
        .contains(resource.path)
    {
        let verb = if watch { "watch" } else { "list" };
        return json_response(
            StatusCode::FORBIDDEN,
            &status(
                403,
                "Forbidden",
                &format!(
                    "{plural} is forbidden: User \"system:serviceaccount:conntracer:conntracer\" cannot {verb} resource \"{plural}\" in API group \"{group}\" at the cluster scope",
                    plural = resource.plural,
                    group = resource.group
                ),
            ),
        );
    }
    if watch {
        watch_stream(shared, resource, query)
    } else {
        let store = shared.store.lock().unwrap();
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((path, _), o)| *path == resource.path && selected(o, &query))
            .map(|(_, o)| o.clone())
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version,
                "metadata": { "resourceVersion": store.rv.to_string() },
                "items": items,
            }),
        )
    }
}

fn line(kind: &str, object: &Value) -> Result<Bytes, Infallible> {
    Ok(Bytes::from(format!(
        "{}\n",
        json!({ "type": kind, "object": object })
    )))
}

fn watch_stream(shared: Shared, resource: Resource, query: BTreeMap<String, String>) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(300),
    );
    let (backlog, expired, mut live, mut cut) = {
        let store = shared.store.lock().unwrap();
        let backlog: Vec<Change> = store
            .history
            .iter()
            .filter(|c| c.resource == resource.path && c.rv > from)
            .cloned()
            .collect();
        (
            backlog,
            from < store.compacted,
            shared.changes.subscribe(),
            shared.cut.subscribe(),
        )
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        if expired {
            // What the API server sends for a resourceVersion it no longer has.
            let _ = tx
                .send(line(
                    "ERROR",
                    &status(410, "Expired", &format!("too old resource version: {from}")),
                ))
                .await;
            return;
        }
        for c in backlog.iter().filter(|c| selected(&c.object, &query)) {
            if tx.send(line(c.kind, &c.object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut last_rv = backlog.last().map_or(from, |c| c.rv);
        loop {
            let sent = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = cut.recv() => return,
                change = live.recv() => match change {
                    Ok(c) if c.resource == resource.path && c.rv > last_rv => {
                        last_rv = c.rv;
                        if !selected(&c.object, &query) {
                            continue;
                        }
                        tx.send(line(c.kind, &c.object)).await
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    // Up to the last event this stream delivered: never past an
                    // event it did not (one deleted "silently" was compacted away).
                    let rv = last_rv;
                    tx.send(line(
                        "BOOKMARK",
                        &json!({
                            "kind": resource.kind,
                            "apiVersion": resource.api_version,
                            "metadata": { "resourceVersion": rv.to_string() },
                        }),
                    ))
                    .await
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

// Objects as a cluster would hold them (Deployment pods with an Istio sidecar).

pub fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap())
}

pub fn pod(namespace: &str, name: &str, uid: &str, ip: &str, node: &str, created: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            creation_timestamp: Some(time(created)),
            labels: Some(BTreeMap::from([(
                "pod-template-hash".to_owned(),
                "7d9f8".to_owned(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: format!("{}-7d9f8", name.split('-').next().unwrap()),
                uid: format!("rs-{uid}"),
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            service_account_name: Some(name.split('-').next().unwrap().into()),
            containers: vec![
                Container {
                    name: "app".into(),
                    ..Container::default()
                },
                Container {
                    name: "istio-proxy".into(),
                    ..Container::default()
                },
            ],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            ..PodStatus::default()
        }),
    }
}

pub fn service(namespace: &str, name: &str, cluster_ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn slice(namespace: &str, service: &str, ip: &str, terminating: bool) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(format!("{service}-abcde")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(!terminating),
                serving: Some(true),
                terminating: Some(terminating),
            }),
            ..Endpoint::default()
        }],
        ports: None,
    }
}
