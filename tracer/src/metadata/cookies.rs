//! Network namespace cookies (what `bpf_get_netns_cookie` returns in socket
//! programs) to namespace inodes. The kernel hands a namespace's cookie to
//! any socket in it (`SO_NETNS_COOKIE`, Linux 5.14+), so we open a socket in
//! each namespace we can reach and ask.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::kernel::privileges::{CAP_SYS_ADMIN, Capabilities};

const SO_NETNS_COOKIE: libc::c_int = 71;

pub struct NetnsCookies {
    map: HashMap<u64, u32>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl Default for NetnsCookies {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_millis(500),
        }
    }
}

impl NetnsCookies {
    /// Built from known data (tests, fuzzing): never rescanned.
    pub fn from_map(map: HashMap<u64, u32>) -> Self {
        Self {
            map,
            last_scan: Some(Instant::now()),
            min_rescan: Duration::MAX,
        }
    }

    /// The inode of the namespace with this cookie, rescanning (rate-limited) when unknown.
    pub fn inode(&mut self, cookie: u64) -> Option<u32> {
        if let Some(inode) = self.map.get(&cookie) {
            return Some(*inode);
        }
        if self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.min_rescan)
        {
            self.rescan();
        }
        self.map.get(&cookie).copied()
    }

    /// Rebuilds the map from the namespaces alive now. Every one is asked
    /// again: the kernel gives a dead namespace's inode to the next one, and
    /// only the cookie tells them apart (cookies are never reused).
    pub fn rescan(&mut self) {
        if self.last_scan.is_none() && !Capabilities::current().has(&CAP_SYS_ADMIN) {
            tracing::warn!(
                "DNS answers are tied only to this network namespace, not to pods': \
                 a namespace's cookie is read inside it (setns needs CAP_SYS_ADMIN)"
            );
        }
        self.last_scan = Some(Instant::now());
        let ours = super::netns::host_netns_inode();
        self.map = super::namespaces::distinct_namespaces()
            .into_iter()
            .filter_map(|(inode, path)| {
                // Our own namespace needs no setns (and so no CAP_SYS_ADMIN).
                let cookie = if Some(inode) == ours {
                    cookie_here()
                } else {
                    cookie_of(path)
                };
                Some((cookie?, inode))
            })
            .collect();
    }
}

/// Asks a socket inside the namespace at `path` for its cookie.
fn cookie_of(path: PathBuf) -> Option<u64> {
    super::namespaces::in_namespace(&path, cookie_here)
}

/// The cookie of the calling thread's namespace.
fn cookie_here() -> Option<u64> {
    // SAFETY: plain socket syscalls on a descriptor we own and close.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return None;
        }
        let mut cookie = 0u64;
        let mut len = size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        );
        libc::close(fd);
        (rc == 0).then_some(cookie)
    }
}
