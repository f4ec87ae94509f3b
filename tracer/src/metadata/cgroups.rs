//! cgroup v2 id → the pod it belongs to, by the path kubelet gives pod
//! cgroups: `.../kubepods-burstable-pod<UID>.slice/...` (systemd driver,
//! `_` for `-` in the uid) or `.../kubepods/burstable/pod<UID>/...`
//! (cgroupfs driver). The second key where a pod IP is not enough:
//! hostNetwork pods share the host's network namespace.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// At most one walk of the cgroup tree this often (only on unknown ids).
const MIN_RESCAN: Duration = Duration::from_secs(2);

/// Paths of cgroup directories by id (the directory's inode).
pub struct CgroupPaths {
    root: Option<PathBuf>,
    by_id: HashMap<u64, PathBuf>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    /// The cgroup v2 hierarchy at `root` (none: no lookups).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_scan: None,
        }
    }

    /// The path of the cgroup with this id, relative to the hierarchy's root.
    pub fn path(&mut self, id: u64) -> Option<&Path> {
        if !self.by_id.contains_key(&id) && self.last_scan.is_none_or(|t| t.elapsed() >= MIN_RESCAN)
        {
            self.rescan();
        }
        self.by_id.get(&id).map(PathBuf::as_path)
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = &self.root else { return };
        let mut by_id = HashMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            if let Ok(meta) = std::fs::metadata(&dir)
                && let Ok(relative) = dir.strip_prefix(root)
            {
                by_id.insert(meta.ino(), Path::new("/").join(relative));
            }
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        self.by_id = by_id;
    }
}

/// The uid of the pod whose cgroup `path` is (or is inside).
pub fn pod_uid(path: &Path) -> Option<String> {
    path.components().rev().find_map(|c| {
        let name = c.as_os_str().to_str()?;
        // systemd: kubepods-burstable-pod1f0c_..._9a.slice
        if let Some(slice) = name.strip_suffix(".slice")
            && let Some((_, uid)) = slice.rsplit_once("-pod")
        {
            return Some(uid.replace('_', "-"));
        }
        // cgroupfs: pod1f0c-...-9a
        name.strip_prefix("pod")
            .filter(|uid| uid.len() >= 32 && uid.contains('-'))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_uids_from_both_drivers() {
        let uid = "1f0c2a4e-5b6d-4e8f-9a0b-1c2d3e4f5a6b";
        let systemd = Path::new(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1f0c2a4e_5b6d_4e8f_9a0b_1c2d3e4f5a6b.slice/cri-containerd-0123abcd.scope",
        );
        assert_eq!(pod_uid(systemd).as_deref(), Some(uid));
        let besteffort = Path::new(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1f0c2a4e_5b6d_4e8f_9a0b_1c2d3e4f5a6b.slice",
        );
        assert_eq!(pod_uid(besteffort).as_deref(), Some(uid));
        let cgroupfs =
            Path::new("/kubepods/burstable/pod1f0c2a4e-5b6d-4e8f-9a0b-1c2d3e4f5a6b/0123abcd");
        assert_eq!(pod_uid(cgroupfs).as_deref(), Some(uid));
        assert_eq!(pod_uid(Path::new("/system.slice/sshd.service")), None);
        assert_eq!(
            pod_uid(Path::new("/kubepods.slice/kubepods-burstable.slice")),
            None
        );
    }
}
