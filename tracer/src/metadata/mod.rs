//! Who a network namespace belongs to.
//!
//! A [`PodSource`] names the pod that owns a network namespace (today: the
//! netns names under `/run/netns`; next: Kubernetes). [`Pods`] asks it once
//! per namespace and remembers the answer, so nothing downstream resolves a
//! name per event.

pub mod cookies;
pub mod netns;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

pub use netns::NetnsNames;

/// A pod as the metrics and reports name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodName {
    pub namespace: String,
    pub pod: String,
}

impl PodName {
    /// The host's own network namespace.
    pub fn host() -> Self {
        Self {
            namespace: String::new(),
            pod: "host".to_owned(),
        }
    }

    /// A namespace no source can name.
    pub fn unnamed(inode: u32) -> Self {
        Self {
            namespace: String::new(),
            pod: format!("netns-{inode}"),
        }
    }

    /// `namespace/pod`, or just `pod` without a namespace.
    pub fn qualified(&self) -> String {
        if self.namespace.is_empty() {
            self.pod.clone()
        } else {
            format!("{}/{}", self.namespace, self.pod)
        }
    }
}

/// Names the pod that owns a network namespace.
pub trait PodSource: Send {
    /// The owner of the namespace with this inode, or `None` when this source
    /// cannot tell (yet: the pod may not be known to it so far).
    fn lookup(&mut self, netns: u32) -> Option<PodName>;
}

/// How long a namespace no source could name keeps its `netns-INODE` name
/// before the source is asked again.
const RETRY_UNNAMED: Duration = Duration::from_secs(1);

/// The pod of each network namespace, asked of the source once per namespace.
pub struct Pods {
    source: Box<dyn PodSource>,
    named: HashMap<u32, PodName>,
    /// Namespaces the source could not name, and when to ask again.
    unnamed: HashMap<u32, (PodName, Instant)>,
    /// Times the source was asked (for tests: never per event).
    pub lookups: u64,
}

impl Pods {
    pub fn new(source: Box<dyn PodSource>) -> Self {
        Self {
            source,
            named: HashMap::new(),
            unnamed: HashMap::new(),
            lookups: 0,
        }
    }

    /// The pod that owns `netns`.
    pub fn get(&mut self, netns: u32) -> PodName {
        if let Some(pod) = self.named.get(&netns) {
            return pod.clone();
        }
        let now = Instant::now();
        if let Some((pod, retry_at)) = self.unnamed.get(&netns)
            && now < *retry_at
        {
            return pod.clone();
        }
        self.lookups += 1;
        match self.source.lookup(netns) {
            Some(pod) => {
                self.unnamed.remove(&netns);
                self.named.insert(netns, pod.clone());
                pod
            }
            None => {
                let pod = PodName::unnamed(netns);
                self.unnamed
                    .insert(netns, (pod.clone(), now + RETRY_UNNAMED));
                pod
            }
        }
    }

    /// The pod that owns `netns`, if it is already known; asks nothing.
    pub fn peek(&self, netns: u32) -> PodName {
        self.named
            .get(&netns)
            .or_else(|| self.unnamed.get(&netns).map(|(pod, _)| pod))
            .cloned()
            .unwrap_or_else(|| PodName::unnamed(netns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names netns 1 only after the first question (a pod appearing late).
    struct Late {
        asked: u32,
    }

    impl PodSource for Late {
        fn lookup(&mut self, netns: u32) -> Option<PodName> {
            self.asked += 1;
            (netns == 1 && self.asked > 1).then(|| PodName {
                namespace: "shop".into(),
                pod: "cart".into(),
            })
        }
    }

    #[test]
    fn asks_once_per_namespace_and_retries_unnamed_ones_slowly() {
        let mut pods = Pods::new(Box::new(Late { asked: 0 }));
        for _ in 0..1000 {
            assert_eq!(pods.get(1).pod, "netns-1");
        }
        assert_eq!(
            pods.lookups, 1,
            "an unnamed namespace is not asked per event"
        );
        // Past the retry time the source is asked again, and its answer sticks.
        pods.unnamed.get_mut(&1).unwrap().1 = Instant::now();
        assert_eq!(pods.get(1).qualified(), "shop/cart");
        for _ in 0..1000 {
            pods.get(1);
        }
        assert_eq!(pods.lookups, 2);
        assert_eq!(pods.peek(1).pod, "cart");
        assert_eq!(pods.peek(9).pod, "netns-9");
    }
}
