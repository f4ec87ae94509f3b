//! Which capabilities we hold, and which the tracer needs.

use std::fs;

/// A Linux capability the tracer may need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    pub bit: u32,
    /// What the tracer uses it for.
    pub why: std::borrow::Cow<'static, str>,
}

impl Capability {
    const fn new(name: &'static str, bit: u32, why: &'static str) -> Self {
        Self {
            name,
            bit,
            why: std::borrow::Cow::Borrowed(why),
        }
    }

    fn because(&self, why: String) -> Self {
        Self {
            why: why.into(),
            ..self.clone()
        }
    }
}

/// What this kernel asks beyond CAP_BPF and CAP_PERFMON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelPolicy {
    /// `kernel.perf_event_paranoid`; Debian kernels default to 3, which
    /// lets only CAP_SYS_ADMIN open perf events (attaching tracepoints).
    pub perf_event_paranoid: i32,
    /// Before Linux 5.11 BPF maps count against RLIMIT_MEMLOCK.
    pub memlock_charged: bool,
    /// The current RLIMIT_MEMLOCK soft limit in bytes (`u64::MAX` = unlimited).
    pub memlock_limit: u64,
}

/// Locked memory the maps need at their default sizes (the connection map,
/// two ring buffers), with room: below this a kernel that charges
/// RLIMIT_MEMLOCK refuses them.
pub const MEMLOCK_NEEDED: u64 = 128 << 20;

impl KernelPolicy {
    pub fn current() -> Self {
        let paranoid = fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(2);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscall filling a valid struct.
        let memlock_limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Self {
            perf_event_paranoid: paranoid,
            memlock_charged: super::version(&super::release()).is_some_and(|v| v < (5, 11)),
            memlock_limit,
        }
    }
}

pub const CAP_NET_ADMIN: Capability = Capability::new(
    "CAP_NET_ADMIN",
    12,
    "attaching cgroup socket programs (HTTP status peek, DNS capture, packet activity)",
);
pub const CAP_SYS_ADMIN: Capability = Capability::new(
    "CAP_SYS_ADMIN",
    21,
    "entering pods' network namespaces (setns: connections open before start, DNS answers and \
     addresses in pods), mounting tracefs when the host has not; it also stands in for \
     CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN",
);
pub const CAP_SYS_PTRACE: Capability = Capability::new(
    "CAP_SYS_PTRACE",
    19,
    "reading /proc/PID/fd and /proc/PID/ns/net of processes with other privileges \
     (owners and namespaces of connections open before start)",
);
pub const CAP_SYS_RESOURCE: Capability = Capability::new(
    "CAP_SYS_RESOURCE",
    24,
    "raising RLIMIT_MEMLOCK for BPF maps, only before Linux 5.11",
);
pub const CAP_PERFMON: Capability = Capability::new(
    "CAP_PERFMON",
    38,
    "attaching tracepoint programs and reading kernel memory from them",
);
pub const CAP_BPF: Capability =
    Capability::new("CAP_BPF", 39, "creating BPF maps and loading programs");

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

    pub fn has(&self, cap: &Capability) -> bool {
        self.0 & (1 << cap.bit) != 0
    }

    /// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (and is all kernels
    /// before 5.8 accept).
    pub fn can_trace(&self) -> bool {
        self.has(&CAP_SYS_ADMIN) || (self.has(&CAP_BPF) && self.has(&CAP_PERFMON))
    }

    /// The capabilities still needed to load and attach tracepoints on a
    /// kernel with this policy.
    pub fn missing_for_tracing(&self, policy: &KernelPolicy) -> Vec<Capability> {
        let mut missing = Vec::new();
        if !self.can_trace() {
            missing.extend([CAP_BPF, CAP_PERFMON].into_iter().filter(|c| !self.has(c)));
        } else if policy.perf_event_paranoid > 2 && !self.has(&CAP_SYS_ADMIN) {
            missing.push(CAP_SYS_ADMIN.because(format!(
                "attaching tracepoints: kernel.perf_event_paranoid is {} (Debian's default), which lets only CAP_SYS_ADMIN open perf events; or set it to 2",
                policy.perf_event_paranoid
            )));
        }
        if policy.memlock_charged
            && policy.memlock_limit < MEMLOCK_NEEDED
            && !self.has(&CAP_SYS_RESOURCE)
        {
            missing.push(CAP_SYS_RESOURCE.because(format!(
                "BPF maps count against RLIMIT_MEMLOCK before Linux 5.11 and the limit is {} KiB; or raise it (ulimit -l unlimited)",
                policy.memlock_limit / 1024
            )));
        }
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&Capability]) -> Capabilities {
        Capabilities(list.iter().fold(0, |bits, c| bits | 1 << c.bit))
    }

    const NEW_KERNEL: KernelPolicy = KernelPolicy {
        perf_event_paranoid: 2,
        memlock_charged: false,
        memlock_limit: 64 << 10,
    };

    #[test]
    fn bpf_and_perfmon_are_enough_on_a_plain_new_kernel() {
        assert!(
            caps(&[&CAP_BPF, &CAP_PERFMON])
                .missing_for_tracing(&NEW_KERNEL)
                .is_empty()
        );
        let missing = caps(&[&CAP_BPF]).missing_for_tracing(&NEW_KERNEL);
        assert_eq!(missing, [CAP_PERFMON]);
    }

    #[test]
    fn debians_perf_event_paranoid_3_needs_sys_admin_and_says_why() {
        let debian = KernelPolicy {
            perf_event_paranoid: 3,
            ..NEW_KERNEL
        };
        let missing = caps(&[&CAP_BPF, &CAP_PERFMON]).missing_for_tracing(&debian);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "CAP_SYS_ADMIN");
        assert!(
            missing[0].why.contains("perf_event_paranoid is 3"),
            "{}",
            missing[0].why
        );
        assert!(
            caps(&[&CAP_SYS_ADMIN])
                .missing_for_tracing(&debian)
                .is_empty()
        );
    }

    #[test]
    fn before_5_11_a_small_memlock_limit_needs_sys_resource() {
        let old = KernelPolicy {
            memlock_charged: true,
            ..NEW_KERNEL
        };
        let missing = caps(&[&CAP_SYS_ADMIN]).missing_for_tracing(&old);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "CAP_SYS_RESOURCE");
        assert!(missing[0].why.contains("64 KiB"), "{}", missing[0].why);
        let raised = KernelPolicy {
            memlock_limit: u64::MAX,
            ..old
        };
        assert!(
            caps(&[&CAP_SYS_ADMIN])
                .missing_for_tracing(&raised)
                .is_empty()
        );
        assert!(
            caps(&[&CAP_SYS_ADMIN, &CAP_SYS_RESOURCE])
                .missing_for_tracing(&old)
                .is_empty()
        );
    }
}
