//! Mounting the kernel pseudo filesystems the tracer needs when they are absent.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

/// `mount -t FSTYPE nodev TARGET`.
pub fn mount_pseudo_fs(fstype: &str, target: &Path) -> io::Result<()> {
    let source = CString::new("nodev")?;
    let fstype_c = CString::new(fstype)?;
    let target_c = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` is a mount point of filesystem type `fstype` per /proc/self/mounts.
pub fn is_mounted(fstype: &str, path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut cols = line.split_whitespace();
            let (_, point, kind) = (cols.next(), cols.next(), cols.next());
            point == path.to_str() && kind == Some(fstype)
        })
    })
}

/// Mount point of the cgroup v2 hierarchy, if any.
pub fn cgroup2_mount() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(2) == Some(&"cgroup2")).then(|| cols[1].to_owned())
    })
}

/// What to do when no cgroup v2 hierarchy is mounted (cgroup v1 only).
pub const CGROUP2_MISSING: &str = "cgroup v2 is not mounted (cgroup v1 only): mount it, e.g. \
     `mount -t cgroup2 none /sys/fs/cgroup/unified`, or boot with systemd.unified_cgroup_hierarchy=1";
