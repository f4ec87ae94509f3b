//! Test hosts for the kernel tests: network namespaces joined by veth pairs,
//! code run inside them on named threads, and a `conntracer trace` child.
//! Everything is torn down on drop, so a failing test cleans up too.
#![allow(dead_code)]

pub mod apiserver;
pub mod daemon;
pub mod dns;
pub mod http;
pub mod netns;
pub mod tracer;

/// The kernel tests load eBPF programs and create namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests need root (they load eBPF programs and create network namespaces)"
    );
}

/// A name unique to this test process and call, usable in netns and link names.
pub fn unique_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
