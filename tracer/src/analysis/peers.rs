//! Bounded `peer` label values: the destination's pod when it is on this
//! node, else `port-N`; at most `cap` distinct peers per pod, the rest `other`.
//! Addresses become labels only when asked for.

use std::collections::{HashMap, HashSet};

pub const OVERFLOW: &str = "other";

#[derive(Debug)]
pub struct PeerLabels {
    cap: usize,
    seen: HashMap<u32, HashSet<String>>,
}

impl PeerLabels {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: HashMap::new(),
        }
    }

    /// The label for `candidate` as a peer of the pod in `netns`.
    pub fn label(&mut self, netns: u32, candidate: String) -> String {
        let seen = self.seen.entry(netns).or_default();
        if seen.contains(&candidate) {
            return candidate;
        }
        if seen.len() >= self.cap {
            return OVERFLOW.to_owned();
        }
        seen.insert(candidate.clone());
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_distinct_peers_per_pod() {
        let mut p = PeerLabels::new(2);
        assert_eq!(p.label(1, "a".into()), "a");
        assert_eq!(p.label(1, "b".into()), "b");
        assert_eq!(p.label(1, "c".into()), OVERFLOW);
        assert_eq!(p.label(1, "a".into()), "a");
        assert_eq!(p.label(2, "c".into()), "c");
    }
}
