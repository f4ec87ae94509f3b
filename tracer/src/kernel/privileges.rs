//! Which capabilities we hold, and which the tracer needs.

use std::fs;

/// A Linux capability the tracer may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    pub bit: u32,
    /// What the tracer uses it for.
    pub why: &'static str,
}

pub const CAP_NET_ADMIN: Capability = Capability {
    name: "CAP_NET_ADMIN",
    bit: 12,
    why: "attaching cgroup socket programs (HTTP status peek, DNS capture)",
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    name: "CAP_SYS_ADMIN",
    bit: 21,
    why: "mounting tracefs or bpffs when the host has not (or instead of CAP_BPF+CAP_PERFMON)",
};
pub const CAP_SYS_RESOURCE: Capability = Capability {
    name: "CAP_SYS_RESOURCE",
    bit: 24,
    why: "raising RLIMIT_MEMLOCK for BPF maps, only before Linux 5.11",
};
pub const CAP_PERFMON: Capability = Capability {
    name: "CAP_PERFMON",
    bit: 38,
    why: "attaching tracepoint programs and reading kernel memory from them",
};
pub const CAP_BPF: Capability = Capability {
    name: "CAP_BPF",
    bit: 39,
    why: "creating BPF maps and loading programs",
};

/// The effective capability set of this process.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities(u64);

impl Capabilities {
    pub fn current() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        Self::from_status(&status)
    }

    /// Parses the `CapEff:` line of `/proc/PID/status`.
    pub fn from_status(status: &str) -> Self {
        let bits = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        Self(bits)
    }

    pub fn has(&self, cap: Capability) -> bool {
        self.0 & (1 << cap.bit) != 0
    }

    /// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (and is all kernels
    /// before 5.8 accept).
    pub fn can_trace(&self) -> bool {
        self.has(CAP_SYS_ADMIN) || (self.has(CAP_BPF) && self.has(CAP_PERFMON))
    }

    /// The capabilities still needed to load and attach tracepoints.
    pub fn missing_for_tracing(&self) -> Vec<Capability> {
        if self.can_trace() {
            return Vec::new();
        }
        [CAP_BPF, CAP_PERFMON]
            .into_iter()
            .filter(|c| !self.has(*c))
            .collect()
    }
}
