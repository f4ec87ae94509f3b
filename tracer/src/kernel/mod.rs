//! What the running kernel offers and where its data sits: tracefs formats,
//! BTF offsets, capabilities, mounts. Everything is resolved at start-up.

pub mod btf;
pub mod format;
pub mod layouts;
pub mod mount;
pub mod privileges;
pub mod reset_reasons;
pub mod seed_offsets;
pub mod tracefs;

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `(major, minor)` of a release string such as `6.18.44-fc-v657`.
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}
