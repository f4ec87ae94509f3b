//! The HTTP endpoints: `/metrics` (OpenMetrics), `/healthz`, `/readyz`
//! (probes attached and the reader draining), `/findings` (JSON, asked of
//! the session), served within [`HttpLimits`] so that idle, slow, oversized
//! or garbage clients cannot starve scrapes.

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query as UrlQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use serde::Deserialize;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::{self, AbortHandle, JoinSet},
};

use super::{findings::FindingsReport, metrics::Metrics};
pub use crate::config::HttpLimits;
use crate::{
    analysis::findings::Scope,
    session::{Health, Query},
};

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The reader counts as alive if it drained within this long.
const STALL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Where `/findings` is asked (none: `/findings` is turned off).
    pub queries: Option<mpsc::Sender<Query>>,
}

pub fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/findings", get(findings))
        .with_state(endpoints)
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], e.metrics.encode())
}

async fn readyz(State(e): State<Endpoints>) -> impl IntoResponse {
    let drained = e.health.since_drain();
    if e.health.probes_attached == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no probes attached\n".to_owned(),
        )
    } else if !e.health.kubernetes_synced() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sync with the Kubernetes API\n".to_owned(),
        )
    } else if drained > STALL {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("events not drained for {drained:?}\n"),
        )
    } else {
        (
            StatusCode::OK,
            format!("ok: {} probes attached\n", e.health.probes_attached),
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct FindingsParams {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

async fn findings(State(e): State<Endpoints>, UrlQuery(q): UrlQuery<FindingsParams>) -> Response {
    let (reply, answer) = oneshot::channel();
    let query = Query::Findings {
        scope: Scope {
            namespace: q.namespace,
            pod: q.pod,
        },
        reply,
    };
    let Some(queries) = &e.queries else {
        return (
            StatusCode::NOT_FOUND,
            "/findings is turned off on this daemon (--findings false)\n",
        )
            .into_response();
    };
    if queries.send(query).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the session has ended\n").into_response();
    }
    match answer.await {
        Ok(findings) => Json(FindingsReport::now(findings)).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the session has ended\n").into_response(),
    }
}

/// The largest request head (request line and headers) read; a longer one
/// is answered 431 and the connection closed.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines a request may have (more: 431).
pub const MAX_HEADERS: usize = 64;
/// How long a connection may finish its request once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// An open connection, in accept order.
struct Open {
    task: AbortHandle,
    /// A request is being answered (it is not closed to make room).
    in_request: Arc<AtomicBool>,
}

/// Serves until `stop` resolves, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoints: Endpoints,
    limits: HttpLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(router(endpoints));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let (stopping, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    // By accept order; and each task's place in it (a task that panicked
    // returns no value, but still its id).
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    let mut order: HashMap<task::Id, u64> = HashMap::new();
    let mut accepted_total = 0u64;
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                let task = match done {
                    Ok((task, ())) => task,
                    Err(e) => e.id(),
                };
                if let Some(id) = order.remove(&task) {
                    open.remove(&id);
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors, or the client went away: keep serving.
                Err(e) => {
                    tracing::debug!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if open.len() >= limits.max_connections {
            let idle = open
                .iter()
                .find(|(_, c)| !c.in_request.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            match idle.and_then(|id| open.remove(&id)) {
                Some(oldest) => {
                    order.remove(&oldest.task.id());
                    oldest.task.abort();
                }
                None => {
                    tracing::debug!(
                        "http: {} requests in flight, closing a new connection",
                        open.len()
                    );
                    drop(stream);
                    continue;
                }
            }
        }
        accepted_total += 1;
        let id = accepted_total;
        let in_request = Arc::new(AtomicBool::new(false));
        let marked = MarkRequests {
            inner: service.clone(),
            in_request: in_request.clone(),
        };
        let connection = http.serve_connection(TokioIo::new(stream), marked);
        let mut stopped = stopped.clone();
        let task = connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("http connection: {e}");
                    }
                    return;
                }
                _ = stopped.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(STOP_GRACE, connection).await;
        });
        order.insert(task.id(), id);
        open.insert(id, Open { task, in_request });
    }
    let _ = stopping.send(true);
    let _ = tokio::time::timeout(STOP_GRACE * 2, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// The service, marking while a request of its connection is answered.
#[derive(Clone)]
struct MarkRequests<S> {
    inner: S,
    in_request: Arc<AtomicBool>,
}

impl<S, R> hyper::service::Service<R> for MarkRequests<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: R) -> Self::Future {
        self.in_request.store(true, Ordering::Relaxed);
        let answer = self.inner.call(request);
        let in_request = self.in_request.clone();
        Box::pin(async move {
            let response = answer.await;
            in_request.store(false, Ordering::Relaxed);
            response
        })
    }
}
