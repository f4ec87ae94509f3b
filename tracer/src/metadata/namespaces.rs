//! Finding network namespaces and running code inside one.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Named namespaces, ours, and those of every process.
pub fn namespace_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.push("/proc/self/ns/net".into());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            files.push(entry.path().join("ns/net"));
        }
    }
    files
}

/// One file per distinct namespace, by inode (the first path that opens it).
pub fn distinct_namespaces() -> Vec<(u32, PathBuf)> {
    let mut seen = std::collections::HashSet::new();
    namespace_files()
        .into_iter()
        .filter_map(|path| {
            let inode = std::fs::metadata(&path).ok()?.ino() as u32;
            seen.insert(inode).then_some((inode, path))
        })
        .collect()
}

/// A file that opens the namespace with this inode.
pub fn namespace_file(inode: u32) -> Option<PathBuf> {
    namespace_files()
        .into_iter()
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.ino() as u32 == inode))
}

/// Runs `f` on a short-lived thread that has entered the namespace at `path`.
pub fn in_namespace<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let ns = File::open(&path).ok()?;
        // SAFETY: valid fd; setns affects only this thread, which ends here.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        f()
    })
    .join()
    .ok()
    .flatten()
}

/// The IP addresses configured in the current thread's network namespace.
pub fn local_addresses() -> Option<Vec<std::net::IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned; each sockaddr is
        // as long as its family says.
        unsafe {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                            u32::from_be(sin.sin_addr.s_addr),
                        )));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                            sin6.sin6_addr.s6_addr,
                        )));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
    }
    // SAFETY: the list came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_listed_once() {
        let all = distinct_namespaces();
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        assert_eq!(all.iter().filter(|(inode, _)| *inode == ours).count(), 1);
    }

    #[test]
    fn our_own_namespace_has_loopback() {
        let inode = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let path = namespace_file(inode).expect("our namespace");
        let addresses = in_namespace(&path, local_addresses).expect("addresses");
        assert!(addresses.iter().any(|a| a.is_loopback()), "{addresses:?}");
    }
}
