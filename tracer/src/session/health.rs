//! What `/readyz` reports: probes attached, and the reader draining.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::metadata::kubernetes::ClusterState;

/// Shared between the session (which drains) and whoever reports on it.
#[derive(Debug, Clone)]
pub struct Health {
    pub probes_attached: usize,
    started: Instant,
    /// Milliseconds after `started` of the last drain.
    last_drain_ms: Arc<AtomicU64>,
    /// The Kubernetes picture, when pods are named from it: not ready
    /// before its first full sync.
    pub kubernetes: Option<Arc<RwLock<ClusterState>>>,
}

impl Health {
    pub fn new(probes_attached: usize) -> Self {
        Self {
            probes_attached,
            started: Instant::now(),
            last_drain_ms: Arc::new(AtomicU64::new(0)),
            kubernetes: None,
        }
    }

    pub fn drained(&self) {
        self.last_drain_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether Kubernetes metadata (if used) has synced once.
    pub fn kubernetes_synced(&self) -> bool {
        self.kubernetes
            .as_ref()
            .is_none_or(|c| c.read().expect("cluster lock").synced())
    }

    /// How long ago the reader last drained.
    pub fn since_drain(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_drain_ms.load(Ordering::Relaxed),
        ))
    }
}
