//! `conntracer check`: preflight. One line per requirement: whether it is
//! there, and what its absence costs. Exit status 1 when the tracer cannot run.

use std::{path::Path, process::ExitCode};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use crate::{
    cli::CheckArgs,
    config::Settings,
    errors::chain,
    kernel::{
        self,
        btf::{KernelBtf, VMLINUX},
        mount,
        privileges::{
            CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_RESOURCE,
            Capabilities, KernelPolicy,
        },
        tracefs::Tracefs,
    },
    probes::{
        LoadOptions, Probes,
        modes::{ActivitySource, DnsSource, Modes, NoSocketResets},
        setup::KernelSetup,
        spec::PROBES,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Missing, and the tracer cannot run without it.
    Missing,
    /// Missing; the tracer runs with less.
    Degraded,
}

struct Report {
    fatal: bool,
}

impl Report {
    fn line(&mut self, status: Status, what: &str, detail: impl AsRef<str>) {
        let tag = match status {
            Status::Ok => "ok      ",
            Status::Missing => {
                self.fatal = true;
                "MISSING "
            }
            Status::Degraded => "degraded",
        };
        println!("{tag}  {what:<32} {}", detail.as_ref());
    }
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let options = match super::resolve(&args.common, Settings::default()) {
        Ok(config) => config.probes,
        Err(e) => {
            eprintln!("conntracer: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report { fatal: false };
    let release = kernel::release();
    let version = kernel::version(&release).unwrap_or((0, 0));

    if version >= (5, 8) {
        report.line(
            Status::Ok,
            "kernel",
            format!("{release} (5.8+: ring buffer, CAP_BPF)"),
        );
    } else {
        report.line(
            Status::Missing,
            "kernel",
            format!("{release}: needs 5.8+ for the BPF ring buffer"),
        );
    }

    check_privileges(&mut report);

    let btf = match KernelBtf::open(Path::new(VMLINUX)) {
        Ok(btf) => match btf.kernel_offsets() {
            Ok(o) => {
                report.line(
                    Status::Ok,
                    "BTF",
                    format!(
                        "{VMLINUX}: sock.skc_net@{} sock.skc_state@{} sock.sk_err@{} net.ns.inum@{} sk_buff.dev@{} net_device.nd_net@{}",
                        o.sock_net, o.sock_state, o.sock_err, o.net_inum, o.skb_dev, o.netdev_net
                    ),
                );
                Some(btf)
            }
            Err(e) => {
                report.line(Status::Missing, "BTF", chain(&e));
                None
            }
        },
        Err(e) => {
            report.line(Status::Missing, "BTF", chain(&e));
            None
        }
    };

    if let Some(btf) = &btf {
        check_seed(&mut report, btf, version);
    }

    let tracefs = match Tracefs::locate() {
        Some(t) => {
            report.line(
                Status::Ok,
                "tracefs",
                format!("mounted at {}", t.root().display()),
            );
            Some(t)
        }
        None => match Tracefs::locate_or_mount() {
            Ok(t) => {
                report.line(
                    Status::Ok,
                    "tracefs",
                    format!("was not mounted; mounted it at {}", t.root().display()),
                );
                Some(t)
            }
            Err(e) => {
                report.line(Status::Missing, "tracefs", chain(&e));
                None
            }
        },
    };

    if let Some(tracefs) = &tracefs {
        for spec in PROBES {
            let result = tracefs
                .format(spec.tracepoint)
                .map_err(|e| chain(&e))
                .and_then(|f| (spec.configure)(&f, &mut Default::default()).map_err(|e| chain(&e)));
            match result {
                Ok(()) => report.line(
                    Status::Ok,
                    spec.tracepoint,
                    format!("tracepoint ({})", spec.program),
                ),
                Err(e) => {
                    let status = if spec.required {
                        Status::Missing
                    } else {
                        Status::Degraded
                    };
                    report.line(status, spec.tracepoint, format!("{e}; cost: {}", spec.cost));
                }
            }
        }
    }

    check_kernel_features(&mut report);
    check_mounts(&mut report);

    if args.load
        && !report.fatal
        && let (Some(tracefs), Some(btf)) = (&tracefs, &btf)
    {
        check_load(&mut report, tracefs, btf, &options);
    }

    if report.fatal {
        println!("\nconntracer cannot run here: fix the MISSING lines above.");
        ExitCode::FAILURE
    } else {
        println!("\nconntracer can run here.");
        ExitCode::SUCCESS
    }
}

/// What is lost without the start-up enumeration.
const SEED_COST: &str = "connections and listeners opened before start are not tracked (their failures and pod terminations are missed after a restart)";

/// The start-up enumeration: an `iter/tcp` program (5.9+) and the members it reads.
fn check_seed(report: &mut Report, btf: &KernelBtf, version: (u32, u32)) {
    const WHAT: &str = "start-up enumeration";
    if version < (5, 9) {
        return report.line(
            Status::Degraded,
            WHAT,
            format!("the TCP socket iterator needs Linux 5.9+; cost: {SEED_COST}"),
        );
    }
    match btf.seed_offsets() {
        Ok(o) => report.line(
            Status::Ok,
            WHAT,
            format!(
                "iter/tcp; tcp_sock.tcp_mstamp@{} bytes_acked@{} bytes_received@{}",
                o.tcp_mstamp, o.bytes_acked, o.bytes_received
            ),
        ),
        Err(e) => report.line(
            Status::Degraded,
            WHAT,
            format!("{}; cost: {SEED_COST}", chain(&e)),
        ),
    }
}

fn check_privileges(report: &mut Report) {
    let caps = Capabilities::current();
    let policy = KernelPolicy::current();
    let missing = caps.missing_for_tracing(&policy);
    let admin = caps.has(&CAP_SYS_ADMIN);
    for cap in [
        CAP_BPF,
        CAP_PERFMON,
        CAP_NET_ADMIN,
        CAP_SYS_ADMIN,
        CAP_SYS_PTRACE,
        CAP_SYS_RESOURCE,
    ] {
        if let Some(needed) = missing.iter().find(|m| m.bit == cap.bit) {
            report.line(
                Status::Missing,
                needed.name,
                format!("not held; needed for {}", needed.why),
            );
        } else if caps.has(&cap) {
            report.line(Status::Ok, cap.name, cap.why);
        } else if admin && (cap == CAP_BPF || cap == CAP_PERFMON || cap == CAP_NET_ADMIN) {
            report.line(
                Status::Ok,
                cap.name,
                "not held, but CAP_SYS_ADMIN covers it",
            );
        } else if cap == CAP_SYS_RESOURCE {
            let why = if policy.memlock_charged {
                format!(
                    "not needed: RLIMIT_MEMLOCK is already {} KiB",
                    policy.memlock_limit / 1024
                )
            } else {
                "not needed: Linux 5.11+ charges BPF memory to the memory cgroup".to_owned()
            };
            report.line(Status::Ok, cap.name, why);
        } else {
            report.line(
                Status::Degraded,
                cap.name,
                format!("not held; needed for {}", cap.why),
            );
        }
    }
}

fn check_kernel_features(report: &mut Report) {
    let program = |report: &mut Report, name: &str, ty: ProgramType, needed: Status, cost: &str| {
        match is_program_supported(ty) {
            Ok(true) => report.line(Status::Ok, name, "program type supported"),
            Ok(false) => report.line(
                needed,
                name,
                format!("program type not supported; cost: {cost}"),
            ),
            Err(e) => report.line(needed, name, format!("cannot probe ({e}); cost: {cost}")),
        }
    };
    program(
        report,
        "program type tracepoint",
        ProgramType::TracePoint,
        Status::Missing,
        "no tracing at all",
    );
    program(
        report,
        "program type cgroup_skb",
        ProgramType::CgroupSkb,
        Status::Degraded,
        "no HTTP status peek or DNS capture",
    );
    for (name, ty) in [
        ("map type ringbuf", MapType::RingBuf),
        ("map type lru_hash", MapType::LruHash),
    ] {
        match is_map_supported(ty) {
            Ok(true) => report.line(Status::Ok, name, "map type supported"),
            Ok(false) => report.line(Status::Missing, name, "map type not supported"),
            Err(e) => report.line(Status::Missing, name, format!("cannot probe: {e}")),
        }
    }
}

fn check_mounts(report: &mut Report) {
    match mount::cgroup2_mount() {
        Some(point) => report.line(Status::Ok, "cgroup v2", format!("mounted at {point}")),
        None => report.line(
            Status::Degraded,
            "cgroup v2",
            format!(
                "{}; cost: no cgroup socket programs: no HTTP 503 peek, DNS answers only from net:netif_receive_skb",
                mount::CGROUP2_MISSING
            ),
        ),
    }
    let bpffs = Path::new("/sys/fs/bpf");
    if mount::is_mounted("bpf", bpffs) {
        report.line(Status::Ok, "bpffs", "mounted at /sys/fs/bpf");
    } else {
        report.line(
            Status::Degraded,
            "bpffs",
            "not mounted at /sys/fs/bpf; only needed to pin maps across restarts (nothing is pinned today)",
        );
    }
}

/// Which source each feature uses on this kernel.
fn check_sources(report: &mut Report, modes: &Modes) {
    let activity = match modes.activity {
        ActivitySource::Tracepoints => "from sock_send_length/sock_recv_length (per message)",
        ActivitySource::Packets => {
            "from TCP segments seen by cgroup_skb (no sock_send_length/sock_recv_length before 6.3)"
        }
    };
    report.line(Status::Ok, "activity source", activity);
    let (status, dns) = match modes.dns {
        DnsSource::CgroupSkb => (Status::Ok, "cgroup_skb ingress, named by the netns cookie"),
        DnsSource::Devices => (
            Status::Ok,
            "net:netif_receive_skb, named by the receiving device's namespace (no netns cookie in cgroup_skb here)",
        ),
        DnsSource::Unavailable => (
            Status::Degraded,
            "none (no netns cookie in cgroup_skb, no net:netif_receive_skb); cost: no dns_stale cause",
        ),
    };
    report.line(status, "dns source", dns);
    let resets = match modes.no_socket_resets {
        NoSocketResets::Tracepoint => "tcp_send_reset, with the kernel's reason",
        NoSocketResets::Packets => {
            "RST segments from the control socket, reason NO_SOCKET inferred (tcp_send_reset misses them before 6.10)"
        }
    };
    report.line(Status::Ok, "resets without a socket", resets);
}

fn check_load(report: &mut Report, tracefs: &Tracefs, btf: &KernelBtf, options: &LoadOptions) {
    let setup = match KernelSetup::resolve(tracefs, btf) {
        Ok(setup) => setup,
        Err(e) => return report.line(Status::Missing, "programs", chain(&e)),
    };
    match Probes::load(&setup, options) {
        Ok(mut probes) => {
            check_sources(
                report,
                &Modes {
                    dns: probes.dns_source,
                    ..setup.modes
                },
            );
            // Enumerating our own namespace proves the iterator loads and runs.
            let seeded = probes
                .load_seed(&setup)
                .and_then(|()| probes.seed_link())
                .and_then(|link| link.read());
            let n = probes.program_ids().len();
            let failed: Vec<String> = probes
                .failed
                .iter()
                .map(|(p, e)| format!("{p}: {e}"))
                .collect();
            drop(probes);
            report.line(
                Status::Ok,
                "programs",
                format!("{n} programs verified, attached and detached again"),
            );
            for f in failed {
                report.line(Status::Degraded, "programs", f);
            }
            match seeded {
                Ok(found) => report.line(
                    Status::Ok,
                    "start-up enumeration",
                    format!(
                        "iter/tcp verified and run: {} sockets in this network namespace",
                        found.len()
                    ),
                ),
                Err(e) => report.line(
                    Status::Degraded,
                    "start-up enumeration",
                    format!("{}; cost: {SEED_COST}", chain(&e)),
                ),
            }
        }
        Err(e) => {
            check_sources(report, &setup.modes);
            report.line(Status::Missing, "programs", chain(&e));
        }
    }
}
