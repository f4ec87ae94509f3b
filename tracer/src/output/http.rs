//! The HTTP endpoints: `/metrics` (OpenMetrics), `/healthz`, `/readyz`
//! (probes attached and the reader draining), `/findings` (JSON, asked of
//! the session).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Query as UrlQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{findings::FindingsReport, metrics::Metrics};
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

/// Serves until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoints: Endpoints,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(endpoints))
        .with_graceful_shutdown(stop)
        .await
}
