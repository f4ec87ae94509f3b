//! Network namespace → pod without Kubernetes (DESIGN.md "Metadata"): a
//! namespace named under `/run/netns` is a pod of that name (`NAMESPACE.POD`
//! sets both; no dot means namespace `default`), and the host's own
//! namespace is pod `host`. Any other this source cannot name ([`Pods`]
//! calls it `netns-INODE`). Host and unnamed namespaces have an empty
//! Kubernetes namespace.
//!
//! [`Pods`]: super::Pods

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{PodName, PodSource};

/// From an `ip netns` name: `NAMESPACE.POD`, or `POD` in namespace `default`.
pub fn pod_from_netns_name(name: &str) -> PodName {
    match name.split_once('.') {
        Some((namespace, pod)) if !namespace.is_empty() && !pod.is_empty() => PodName {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            workload: None,
        },
        _ => PodName {
            namespace: "default".to_owned(),
            pod: name.to_owned(),
            workload: None,
        },
    }
}

/// Pods named by `/run/netns`: re-reads the directory when asked about a
/// namespace it does not know (at most every 200 ms).
pub struct NetnsNames {
    netns_dir: PathBuf,
    host_inode: Option<u32>,
    names: HashMap<u32, PodName>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl NetnsNames {
    pub fn new() -> Self {
        Self::with_dir("/run/netns", host_netns_inode())
    }

    pub fn with_dir(dir: impl Into<PathBuf>, host_inode: Option<u32>) -> Self {
        Self {
            netns_dir: dir.into(),
            host_inode,
            names: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_millis(200),
        }
    }

    /// Re-reads the named namespaces (they come and go with pods).
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.names = scan(&self.netns_dir);
    }
}

impl PodSource for NetnsNames {
    fn lookup(&mut self, inode: u32) -> Option<PodName> {
        if Some(inode) == self.host_inode {
            return Some(PodName::host());
        }
        if !self.names.contains_key(&inode)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() >= self.min_rescan)
        {
            self.rescan();
        }
        self.names.get(&inode).cloned()
    }
}

impl Default for NetnsNames {
    fn default() -> Self {
        Self::new()
    }
}

/// Inode of every named namespace in `dir` (bind mounts of nsfs files).
fn scan(dir: &Path) -> HashMap<u32, PodName> {
    let Ok(entries) = fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let inode = fs::metadata(entry.path()).ok()?.ino();
            Some((inode as u32, pod_from_netns_name(&name)))
        })
        .collect()
}

/// The host's network namespace: PID 1's, which is also ours when the
/// tracer runs with the host network as the DaemonSet does. If we run in
/// another one (a sandbox, a debugging session), ours counts as the host.
pub fn host_netns_inode() -> Option<u32> {
    fs::metadata("/proc/self/ns/net")
        .or_else(|_| fs::metadata("/proc/1/ns/net"))
        .ok()
        .map(|m| m.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_map_to_pods() {
        assert_eq!(
            pod_from_netns_name("shop.cart-7d9f"),
            PodName {
                namespace: "shop".into(),
                pod: "cart-7d9f".into(),
                workload: None,
            }
        );
        // Pod names may contain dots; namespaces cannot.
        assert_eq!(
            pod_from_netns_name("shop.cart.v2"),
            PodName {
                namespace: "shop".into(),
                pod: "cart.v2".into(),
                workload: None,
            }
        );
        assert_eq!(
            pod_from_netns_name("client"),
            PodName {
                namespace: "default".into(),
                pod: "client".into(),
                workload: None,
            }
        );
        assert_eq!(pod_from_netns_name(".x").namespace, "default");
    }

    #[test]
    fn host_and_unnamed_namespaces() {
        let dir = std::env::temp_dir().join(format!("ct-netns-test-{}", std::process::id()));
        let mut names = NetnsNames::with_dir(&dir, Some(4026531840));
        assert_eq!(names.lookup(4026531840), Some(PodName::host()));
        assert_eq!(names.lookup(4026532999), None);
    }

    #[test]
    fn named_namespaces_resolve_by_inode() {
        let dir = std::env::temp_dir().join(format!("ct-netns-scan-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("team.api");
        fs::write(&file, b"").unwrap();
        let inode = fs::metadata(&file).unwrap().ino() as u32;
        let mut names = NetnsNames::with_dir(&dir, None);
        let name = names.lookup(inode);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(name.map(|n| n.qualified()).as_deref(), Some("team/api"));
    }
}
