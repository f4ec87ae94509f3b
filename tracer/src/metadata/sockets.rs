//! Who holds a socket, by its inode: the way `ss -p` finds out, through the
//! `socket:[N]` links in `/proc/PID/fd`. Only for sockets that existed
//! before the tracer started (the probes see everyone else's owner), so it
//! runs once, at start-up.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
};

use crate::kernel::privileges::{CAP_SYS_PTRACE, Capabilities};

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOwner {
    pub pid: u32,
    pub uid: u32,
    /// cgroup v2 id (the cgroup directory's inode), 0 when unknown.
    pub cgroup_id: u64,
    pub comm: String,
}

/// The owners of the sockets with these inodes (the first process found
/// holding each; forked children share them).
pub fn owners(inodes: &HashSet<u64>) -> HashMap<u64, SocketOwner> {
    let mut found = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    let cgroup_root = crate::kernel::mount::cgroup2_mount();
    let mut unreadable = 0;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fds = match fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) => {
                unreadable += usize::from(e.kind() == std::io::ErrorKind::PermissionDenied);
                continue;
            }
        };
        let mut owner = None;
        let mut denied = false;
        for fd in fds.flatten() {
            let target = match fs::read_link(fd.path()) {
                Ok(target) => target,
                Err(e) => {
                    denied |= e.kind() == std::io::ErrorKind::PermissionDenied;
                    continue;
                }
            };
            let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                continue;
            };
            if !inodes.contains(&inode) || found.contains_key(&inode) {
                continue;
            }
            let owner =
                owner.get_or_insert_with(|| process(&entry.path(), pid, cgroup_root.as_deref()));
            found.insert(inode, owner.clone());
        }
        unreadable += usize::from(denied);
        if found.len() == inodes.len() {
            break;
        }
    }
    if unreadable > 0 && found.len() < inodes.len() {
        let why = if Capabilities::current().has(&CAP_SYS_PTRACE) {
            "refused even with CAP_SYS_PTRACE: a security module, or another user namespace"
        } else {
            "needs CAP_SYS_PTRACE"
        };
        tracing::warn!(
            "owners of {} sockets open before start are unknown until their first send or receive: \
             /proc/PID/fd of {unreadable} processes could not be read ({why})",
            inodes.len() - found.len()
        );
    }
    found
}

/// `socket:[12345]` → 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn process(dir: &Path, pid: u32, cgroup_root: Option<&str>) -> SocketOwner {
    let comm = fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_default();
    let uid = fs::metadata(dir).map(|m| m.uid()).unwrap_or(0);
    let cgroup_id = cgroup_root
        .and_then(|root| {
            let text = fs::read_to_string(dir.join("cgroup")).ok()?;
            let path = cgroup_v2_path(&text)?;
            fs::metadata(format!("{root}{path}")).ok()
        })
        .map_or(0, |m| m.ino());
    SocketOwner {
        pid,
        uid,
        cgroup_id,
        comm,
    }
}

/// The unified hierarchy's line of `/proc/PID/cgroup` (`0::/path`).
fn cgroup_v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, os::fd::AsRawFd};

    use super::*;

    #[test]
    fn socket_links_parse() {
        assert_eq!(socket_inode("socket:[4026]"), Some(4026));
        assert_eq!(socket_inode("pipe:[4026]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(
            cgroup_v2_path("1:name=systemd:/a\n0::/kubepods/pod1\n"),
            Some("/kubepods/pod1")
        );
    }

    #[test]
    fn finds_our_own_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let inode = socket_inode(&link.to_string_lossy()).unwrap();
        let owners = owners(&HashSet::from([inode]));
        let owner = &owners[&inode];
        assert_eq!(owner.pid, std::process::id());
        assert!(!owner.comm.is_empty());
    }
}
