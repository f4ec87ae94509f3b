//! The daemon's HTTP endpoints: `/metrics` (OpenMetrics), `/healthz`,
//! `/readyz` (probes attached and the reader draining), `/findings` (JSON).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::Core;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The reader counts as alive if it drained within this long.
const STALL: Duration = Duration::from_secs(5);

pub type Shared = Arc<Mutex<Core>>;

pub fn router(core: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/findings", get(findings))
        .with_state(core)
}

async fn metrics(State(core): State<Shared>) -> impl IntoResponse {
    let body = core.lock().expect("core lock").metrics.encode();
    ([(header::CONTENT_TYPE, OPENMETRICS)], body)
}

async fn readyz(State(core): State<Shared>) -> impl IntoResponse {
    let core = core.lock().expect("core lock");
    let drained = core.last_drain.elapsed();
    if core.probes_attached == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no probes attached\n".to_owned(),
        )
    } else if drained > STALL {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("events not drained for {drained:?}\n"),
        )
    } else {
        (
            StatusCode::OK,
            format!("ok: {} probes attached\n", core.probes_attached),
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct FindingsQuery {
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FindingsResponse {
    pub node: String,
    pub generated: String,
    pub findings: Vec<serde_json::Value>,
}

async fn findings(State(core): State<Shared>, Query(q): Query<FindingsQuery>) -> impl IntoResponse {
    let mut core = core.lock().expect("core lock");
    let findings = core.findings(q.namespace.as_deref(), q.pod.as_deref());
    Json(FindingsResponse {
        node: hostname(),
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        findings: findings
            .into_iter()
            .map(|f| serde_json::to_value(f).expect("serializable"))
            .collect(),
    })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
