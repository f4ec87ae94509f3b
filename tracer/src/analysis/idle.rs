//! Learning each destination's idle-close time (the peer's keep-alive
//! timeout) from peer closes of idle connections, and how long the local pool
//! leaves connections idle before reusing them.

use std::{net::SocketAddr, time::Duration};

use crate::fastmap::FastMap;

/// A destination as seen from one network namespace.
pub type Destination = (u32, SocketAddr);

const SAMPLES: usize = 16;

/// Destinations remembered at most; past that the least recently updated
/// is forgotten (peers churn; the state must not grow with them).
pub const MAX_DESTINATIONS: usize = 4096;

#[derive(Debug, Default, Clone)]
pub struct DestinationIdle {
    /// Idle times at which the peer closed idle connections (newest last).
    pub peer_idle_closes: Vec<Duration>,
    pub peer_idle_close_count: u64,
    /// Longest idle gap the local side let pass before reusing a connection.
    pub max_reuse_idle: Duration,
    /// When it last changed, in updates since the start (for eviction).
    touched: u64,
}

impl DestinationIdle {
    /// The peer's idle-close time: the median of recent observations.
    pub fn learned_peer_idle_close(&self) -> Option<Duration> {
        let mut v = self.peer_idle_closes.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        Some(v[v.len() / 2])
    }
}

#[derive(Debug, Default)]
pub struct IdleLearner {
    destinations: FastMap<Destination, DestinationIdle>,
    updates: u64,
    /// Destinations forgotten for newer ones.
    pub forgotten: u64,
}

impl IdleLearner {
    /// The entry of `dest`, made (room first) if new, marked as just updated.
    fn entry(&mut self, dest: Destination) -> &mut DestinationIdle {
        let full = self.destinations.len() >= MAX_DESTINATIONS;
        if full && !self.destinations.contains_key(&dest) {
            let oldest = self
                .destinations
                .iter()
                .min_by_key(|(_, d)| d.touched)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.destinations.remove(&oldest);
                self.forgotten += 1;
            }
        }
        self.updates += 1;
        let d = self.destinations.entry(dest).or_default();
        d.touched = self.updates;
        d
    }

    pub fn len(&self) -> usize {
        self.destinations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.destinations.is_empty()
    }

    pub fn peer_idle_close(&mut self, dest: Destination, idle: Duration) {
        let d = self.entry(dest);
        if d.peer_idle_closes.len() == SAMPLES {
            d.peer_idle_closes.remove(0);
        }
        d.peer_idle_closes.push(idle);
        d.peer_idle_close_count += 1;
    }

    pub fn reuse(&mut self, dest: Destination, idle: Duration) {
        let d = self.entry(dest);
        d.max_reuse_idle = d.max_reuse_idle.max(idle);
    }

    pub fn get(&self, dest: &Destination) -> Option<&DestinationIdle> {
        self.destinations.get(dest)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Destination, &DestinationIdle)> {
        self.destinations.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_median_idle_close() {
        let mut l = IdleLearner::default();
        let dest = (1, "10.0.0.2:80".parse().unwrap());
        assert!(l.get(&dest).is_none());
        for ms in [2010, 2003, 5000, 2001, 2008] {
            l.peer_idle_close(dest, Duration::from_millis(ms));
        }
        l.reuse(dest, Duration::from_secs(3));
        l.reuse(dest, Duration::from_secs(1));
        let d = l.get(&dest).unwrap();
        assert_eq!(
            d.learned_peer_idle_close(),
            Some(Duration::from_millis(2008))
        );
        assert_eq!(d.max_reuse_idle, Duration::from_secs(3));
        assert_eq!(d.peer_idle_close_count, 5);
    }

    #[test]
    fn past_the_cap_the_least_recently_updated_destination_is_forgotten() {
        let mut idle = IdleLearner::default();
        let dest = |i: usize| (1, SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)));
        for i in 0..MAX_DESTINATIONS {
            idle.reuse(dest(i), Duration::from_secs(1));
        }
        idle.reuse(dest(0), Duration::from_secs(2));
        idle.reuse(dest(MAX_DESTINATIONS), Duration::from_secs(1));
        assert_eq!(idle.len(), MAX_DESTINATIONS);
        assert_eq!(idle.forgotten, 1);
        assert!(
            idle.get(&dest(1)).is_none(),
            "the least recently updated went"
        );
        assert!(idle.get(&dest(0)).is_some());
    }
}
