//! Loading the embedded eBPF object with this kernel's `ProbeConfig` and
//! attaching each available program to its tracepoint. Dropping [`Probes`]
//! detaches everything and releases every map (nothing is pinned).

use std::time::Duration;

use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, TracePoint,
    },
};
use tracer_common::{config::ProbeConfig, event::SockState};

use super::{
    modes::{ActivitySource, DnsSource, Modes, NoSocketResets, TracepointKind},
    setup::KernelSetup,
    spec::ProbeSpec,
};
use crate::{
    errors::chain,
    kernel::privileges::{Capabilities, Capability, KernelPolicy},
};

/// The object `tracer/build.rs` built from `tracer-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Capacity of the per-socket LRU map.
    pub max_connections: u32,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Reuses after at least this idle gap are reported as events.
    pub reuse_event_min_idle: Duration,
    /// Wake the reader early once this much is queued.
    pub wakeup_min_bytes: u64,
    /// The HTTP 503 status peek (cgroup_skb egress on the cgroup v2 root).
    pub http_peek: bool,
    /// The DNS answer capture (cgroup_skb ingress, or `net:netif_receive_skb`
    /// where cgroup_skb cannot name the namespace).
    pub dns_capture: bool,
    /// How often the reader drains the ring buffers when nothing wakes it.
    pub drain_interval: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            max_connections: 131_072,
            ring_bytes: 4 << 20,
            reuse_event_min_idle: Duration::from_millis(500),
            wakeup_min_bytes: 256 << 10,
            http_peek: true,
            dns_capture: true,
            drain_interval: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "missing privileges: {} (run as root, or grant them with `setcap` / the container's securityContext)",
        describe(.0)
    )]
    MissingCapabilities(Vec<Capability>),
    #[error("--max-connections must be at least 1")]
    ZeroConnections,
    #[error("ring buffer size {0} must be a power of two of at least 4096 bytes")]
    BadRingSize(u32),
    #[error("loading the eBPF object failed")]
    Load(#[source] EbpfError),
    #[error("program {program} (tracepoint {tracepoint})")]
    Program {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        error: ProgramError,
    },
    #[error("program {0} is missing from the eBPF object (stale build?)")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the eBPF object (stale build?)")]
    MissingMap(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        error: aya::maps::MapError,
    },
}

fn describe(caps: &[Capability]) -> String {
    caps.iter()
        .map(|c| format!("{} ({})", c.name, c.why))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A program attached to its tracepoint.
#[derive(Debug, Clone)]
pub struct AttachedProbe {
    pub spec: &'static ProbeSpec,
    /// The program attached: the spec's BTF flavour or its classic one.
    pub program: &'static str,
    /// Kernel program id, as `bpftool prog show` lists it.
    pub program_id: u32,
}

pub struct Probes {
    ebpf: Ebpf,
    pub attached: Vec<AttachedProbe>,
    /// Optional programs that could not be attached: (program, why).
    pub failed: Vec<(&'static str, String)>,
    /// Ids of the attached cgroup programs.
    pub cgroup_ids: Vec<u32>,
    /// A DNS capture (cgroup_skb or device tracepoint) is attached.
    pub dns_capture: bool,
    /// Where DNS answers come from: this kernel's source, or the devices
    /// when the cgroup program could not attach.
    pub dns_source: DnsSource,
}

/// The cgroup_skb egress program (HTTP peek; packet activity and resets on older kernels).
pub const EGRESS: &str = "ct_egress";
/// The cgroup_skb ingress program (DNS; packet activity on older kernels).
pub const INGRESS: &str = "ct_ingress";
/// DNS answers at the receiving device (`net:netif_receive_skb`).
const DNS_DEVICES: &str = "ct_dns_dev";

/// What is lost without the egress program on this kernel.
fn egress_cost(modes: &Modes, http_peek: bool) -> String {
    let mut lost = Vec::new();
    if http_peek {
        lost.push("503s will not be counted");
    }
    if modes.activity == ActivitySource::Packets {
        lost.push("no sends counted (no requests, no idle times)");
    }
    if modes.no_socket_resets == NoSocketResets::Packets {
        lost.push("refused connects are not seen from the server side");
    }
    lost.join("; ")
}

/// What is lost without the ingress program on this kernel.
fn ingress_cost(modes: &Modes, dns_capture: bool, dns_devices: bool) -> String {
    let mut lost = Vec::new();
    if dns_capture && modes.dns == DnsSource::CgroupSkb {
        lost.push(if dns_devices {
            "DNS answers are taken at the receiving device instead (net:netif_receive_skb)"
        } else {
            "no DNS answers, no dns_stale cause"
        });
    }
    if modes.activity == ActivitySource::Packets {
        lost.push("no receives counted (no idle times)");
    }
    lost.join("; ")
}

impl Probes {
    pub fn load(setup: &KernelSetup, options: &LoadOptions) -> Result<Self, LoadError> {
        let missing = Capabilities::current().missing_for_tracing(&KernelPolicy::current());
        if !missing.is_empty() {
            return Err(LoadError::MissingCapabilities(missing));
        }
        if options.max_connections == 0 {
            return Err(LoadError::ZeroConnections);
        }
        if !options.ring_bytes.is_power_of_two() || options.ring_bytes < 4096 {
            return Err(LoadError::BadRingSize(options.ring_bytes));
        }
        raise_memlock_limit();

        let modes = setup.modes;
        let config = ProbeConfig {
            features: modes.features(options.http_peek, options.dns_capture),
            reuse_event_min_idle_ns: options.reuse_event_min_idle.as_nanos() as u64,
            // Never wait for more than half the buffer before waking the reader.
            wakeup_min_bytes: options
                .wakeup_min_bytes
                .min(u64::from(options.ring_bytes / 2)),
            ..setup.config
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .override_global(
                "SEED_CONFIG",
                setup.seed_offsets.as_ref().unwrap_or(&Default::default()),
                true,
            )
            .map_max_entries("SOCKS", options.max_connections)
            .map_max_entries("EVENTS", options.ring_bytes)
            .load(OBJECT)
            .map_err(LoadError::Load)?;

        let mut attached = Vec::new();
        let mut btf = None;
        for spec in setup.to_attach(options.dns_capture) {
            let (program, program_id) = attach(&mut ebpf, spec, modes.tracepoints, &mut btf)?;
            tracing::debug!(
                program,
                tracepoint = spec.tracepoint,
                program_id,
                "attached"
            );
            attached.push(AttachedProbe {
                spec,
                program,
                program_id,
            });
        }
        let mut failed = Vec::new();
        let mut cgroup_ids = Vec::new();
        let mut dns_capture = options.dns_capture && modes.dns == DnsSource::Devices;
        let dns_devices = setup.available.iter().find(|s| s.program == DNS_DEVICES);
        let optional = [
            (
                modes.needs_egress(options.http_peek),
                EGRESS,
                CgroupSkbAttachType::Egress,
                egress_cost(&modes, options.http_peek),
            ),
            (
                modes.needs_ingress(options.dns_capture),
                INGRESS,
                CgroupSkbAttachType::Ingress,
                ingress_cost(&modes, options.dns_capture, dns_devices.is_some()),
            ),
        ];
        for (wanted, program, direction, cost) in optional {
            if !wanted {
                continue;
            }
            match attach_cgroup_skb(&mut ebpf, program, direction) {
                Ok(id) => {
                    cgroup_ids.push(id);
                    dns_capture |= program == INGRESS
                        && options.dns_capture
                        && modes.dns == DnsSource::CgroupSkb;
                }
                Err(e) => {
                    tracing::warn!("degraded: {program} unavailable ({e}); {cost}");
                    failed.push((program, e));
                }
            }
        }
        let mut dns_source = modes.dns;
        // Without the cgroup program (cgroup v1 only, no CAP_NET_ADMIN) the
        // devices' tracepoint still sees every answer a namespace receives.
        if options.dns_capture
            && modes.dns == DnsSource::CgroupSkb
            && !dns_capture
            && let Some(spec) = dns_devices
        {
            match attach(&mut ebpf, spec, modes.tracepoints, &mut btf) {
                Ok((program, program_id)) => {
                    attached.push(AttachedProbe {
                        spec,
                        program,
                        program_id,
                    });
                    dns_capture = true;
                    dns_source = DnsSource::Devices;
                }
                Err(e) => tracing::warn!(
                    "degraded: {} unavailable too ({}); no DNS answers, no dns_stale cause",
                    spec.tracepoint,
                    chain(&e)
                ),
            }
        }
        Ok(Self {
            ebpf,
            attached,
            failed,
            cgroup_ids,
            dns_capture,
            dns_source,
        })
    }

    /// The event ring buffer (can be taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(LoadError::MissingMap("EVENTS"))?;
        RingBuf::try_from(map).map_err(|error| LoadError::Map {
            name: "EVENTS",
            error,
        })
    }

    /// The DNS answer ring buffer, when the capture is attached (can be taken once).
    pub fn take_dns_events(&mut self) -> Result<Option<RingBuf<MapData>>, LoadError> {
        if !self.dns_capture {
            return Ok(None);
        }
        let map = self
            .ebpf
            .take_map("DNS_EVENTS")
            .ok_or(LoadError::MissingMap("DNS_EVENTS"))?;
        RingBuf::try_from(map)
            .map(Some)
            .map_err(|error| LoadError::Map {
                name: "DNS_EVENTS",
                error,
            })
    }

    /// The per-CPU loss counters (can be taken once).
    pub fn take_counters(&mut self) -> Result<PerCpuArray<MapData, u64>, LoadError> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .ok_or(LoadError::MissingMap("COUNTERS"))?;
        PerCpuArray::try_from(map).map_err(|error| LoadError::Map {
            name: "COUNTERS",
            error,
        })
    }

    /// Whether the kernel's socket map still holds a socket, asked once per
    /// socket with the map looked up once. A lookup from userspace does not
    /// refresh the LRU; errors other than "not found" (and a missing map)
    /// answer yes, so nothing is dropped on a failed lookup.
    pub fn kernel_tracks(&self) -> impl Fn(u64) -> bool + '_ {
        let socks = self
            .ebpf
            .map("SOCKS")
            .and_then(|map| HashMap::<_, u64, SockState>::try_from(map).ok());
        move |sock| {
            socks
                .as_ref()
                .is_none_or(|s| !matches!(s.get(&sock, 0), Err(MapError::KeyNotFound)))
        }
    }

    /// The loaded object, for the programs other modules load (`seed`).
    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// "N probes attached (program ids a,b,c)", for start-up messages.
    pub fn attached_summary(&self) -> String {
        let ids: Vec<String> = self.program_ids().iter().map(u32::to_string).collect();
        format!(
            "{} probes attached (program ids {})",
            ids.len(),
            ids.join(",")
        )
    }

    /// Every program we attached, as `bpftool prog show` lists them.
    pub fn program_ids(&self) -> Vec<u32> {
        self.attached
            .iter()
            .map(|p| p.program_id)
            .chain(self.cgroup_ids.iter().copied())
            .collect()
    }
}

/// Attaches `spec`'s BTF flavour where `kinds` allows it and it attaches,
/// else its classic tracepoint.
fn attach(
    ebpf: &mut Ebpf,
    spec: &'static ProbeSpec,
    kind: TracepointKind,
    btf: &mut Option<Result<Btf, String>>,
) -> Result<(&'static str, u32), LoadError> {
    if kind == TracepointKind::Btf
        && let Some(program) = spec.btf_program
    {
        let btf = btf.get_or_insert_with(|| Btf::from_sys_fs().map_err(|e| chain(&e)));
        let attached = match btf {
            Ok(btf) => attach_btf(ebpf, program, spec.system_and_event().1, btf),
            Err(e) => Err(format!("reading the kernel's BTF: {e}")),
        };
        match attached {
            Ok(id) => return Ok((program, id)),
            Err(e) => tracing::warn!(
                "{program} cannot attach as a BTF tracepoint ({e}); using the classic tracepoint {}",
                spec.tracepoint
            ),
        }
    }
    attach_classic(ebpf, spec).map(|id| (spec.program, id))
}

fn attach_btf(ebpf: &mut Ebpf, name: &str, event: &str, btf: &Btf) -> Result<u32, String> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    program
        .load(event, btf)
        .map_err(|e| load_failure(name, &e))?;
    program.attach().map_err(|e| chain(&e))?;
    program.info().map(|i| i.id()).map_err(|e| e.to_string())
}

fn attach_classic(ebpf: &mut Ebpf, spec: &'static ProbeSpec) -> Result<u32, LoadError> {
    let fail = |error| LoadError::Program {
        program: spec.program,
        tracepoint: spec.tracepoint,
        error,
    };
    let program: &mut TracePoint = ebpf
        .program_mut(spec.program)
        .ok_or(LoadError::MissingProgram(spec.program))?
        .try_into()
        .map_err(fail)?;
    program.load().map_err(fail)?;
    let (system, event) = spec.system_and_event();
    program.attach(system, event).map_err(fail)?;
    program.info().map(|info| info.id()).map_err(fail)
}

/// cgroup_skb on the cgroup v2 root sees every socket in every netns.
fn attach_cgroup_skb(
    ebpf: &mut Ebpf,
    name: &str,
    direction: CgroupSkbAttachType,
) -> Result<u32, String> {
    let root =
        crate::kernel::mount::cgroup2_mount().ok_or(crate::kernel::mount::CGROUP2_MISSING)?;
    let cgroup = std::fs::File::open(&root).map_err(|e| format!("opening {root}: {e}"))?;
    let program: &mut CgroupSkb = ebpf
        .program_mut(name)
        .ok_or("program missing from the object")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    program.load().map_err(|e| load_failure(name, &e))?;
    // A BPF link (5.7+) coexists with other programs on the cgroup; the
    // multi-attach flag is for the older prog-attach path and links reject it.
    program
        .attach(&cgroup, direction, CgroupAttachMode::Single)
        .map_err(|e| format!("attaching to {root}: {} (needs CAP_NET_ADMIN)", chain(&e)))?;
    program.info().map(|i| i.id()).map_err(|e| e.to_string())
}

/// A program the kernel refused, for a one-line warning; the whole verifier
/// log goes to the debug log.
fn load_failure(name: &str, error: &ProgramError) -> String {
    let log = chain(error);
    tracing::debug!("{name}: verifier log:\n{log}");
    format!("loading: {}", short(&log))
}

/// The head and tail of a long message (a verifier log), for a one-line
/// warning: the tail keeps the rejected instruction and the reason, which
/// precede the verifier's closing statistics (the whole log is at debug).
fn short(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 8 {
        return text.to_owned();
    }
    format!("{} ... {}", lines[0], lines[lines.len() - 6..].join(" | "))
}

/// Before Linux 5.11 BPF memory counted against RLIMIT_MEMLOCK; since then it
/// is charged to the memory cgroup, so failing here is harmless on new kernels.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on Linux 5.11+",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn a_shortened_verifier_log_keeps_the_reason() {
        let mut log = vec!["0: R1=ctx() R10=fp0".to_owned()];
        log.extend((1..40).map(|i| format!("{i}: (bf) r2 = r7")));
        log.extend(
            [
                "90: (71) r1 = *(u8 *)(r1 +0)",
                "invalid access to packet, off=0 size=1, R1(id=182,off=0,r=0)",
                "R1 offset is outside of the packet",
                "verification time 55949 usec",
                "stack depth 208+0",
                "processed 9413 insns (limit 1000000) max_states_per_insn 5",
            ]
            .map(str::to_owned),
        );
        let line = short(&log.join("\n"));
        assert!(line.starts_with("0: R1=ctx() R10=fp0 ... "), "{line}");
        assert!(
            line.contains("R1 offset is outside of the packet"),
            "{line}"
        );
        assert!(!line.contains("(bf) r2 = r7"), "{line}");
    }
}
