//! Metric handles cached under small keys (label ids, direction, role), so
//! that an observation of a series seen before is one hash of a few integers
//! and an atomic add: no label strings built, hashed or compared, no family
//! lock. prometheus-client handles share their value with the family (they
//! are `Arc`s), so a cached clone counts into the exported series.
//!
//! A handle stays cached exactly as long as its series: it is cached when
//! the series is noted among its pod's, and dropped when that pod is
//! forgotten (else it would keep counting into a series no longer exported,
//! and keep its memory). Pod ids are never reused, so no cached handle can
//! be taken for another pod's.

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::{
    analysis::{
        direction::Direction,
        naming::{LabelIds, PodId},
    },
    fastmap::{FastMap, FastSet},
};

/// `(pod, direction, role)`.
pub type OpenedKey = (PodId, Direction, u8);
/// `(pod, direction, side)`; the reason is the inner map's key.
pub type ResetKey = (PodId, Direction, u8);
/// `(pod and peer, direction)`.
pub type PeerKey = (LabelIds, Direction);
/// `(pod, direction)`.
pub type DirectionKey = (PodId, Direction);

#[derive(Debug, Default)]
pub struct Handles {
    /// With the workload the series was made with (a cluster may name it later).
    pub opened: FastMap<OpenedKey, (Option<String>, Counter)>,
    pub resets: FastMap<ResetKey, FastMap<String, Counter>>,
    pub idle_before_reuse: FastMap<PeerKey, Histogram>,
    pub peer_idle_close: FastMap<PeerKey, Histogram>,
    pub lifetime: FastMap<DirectionKey, Histogram>,
}

impl Handles {
    /// Drops the handles of the pods with these ids.
    pub fn forget(&mut self, pods: &FastSet<PodId>) {
        if pods.is_empty() {
            return;
        }
        self.opened.retain(|(pod, ..), _| !pods.contains(pod));
        self.resets.retain(|(pod, ..), _| !pods.contains(pod));
        self.idle_before_reuse
            .retain(|(ids, _), _| !pods.contains(&ids.pod));
        self.peer_idle_close
            .retain(|(ids, _), _| !pods.contains(&ids.pod));
        self.lifetime.retain(|(pod, _), _| !pods.contains(pod));
    }

    /// Handles cached, over all families.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.opened.len()
            + self.resets.values().map(FastMap::len).sum::<usize>()
            + self.idle_before_reuse.len()
            + self.peer_idle_close.len()
            + self.lifetime.len()
    }
}
