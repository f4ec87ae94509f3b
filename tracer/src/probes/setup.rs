//! Resolving every probe's record layout and the struct offsets on this
//! kernel into the `ProbeConfig` the programs load with, and which probes
//! this kernel cannot run.

use tracer_common::{config::ProbeConfig, seed::SeedOffsets};

use super::{
    modes::{ActivitySource, DnsSource, Modes, NoSocketResets, TracepointKind},
    spec::{PROBES, ProbeSpec},
};
use crate::kernel::{
    btf::{BtfError, KernelBtf},
    layouts::LayoutError,
    reset_reasons::ResetReasons,
    tracefs::{Tracefs, TracefsError},
};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "cannot trace without the tracepoint {tracepoint} ({program}; `conntracer check` \
         lists what else this kernel lacks)"
    )]
    RequiredTracepoint {
        tracepoint: &'static str,
        program: &'static str,
        #[source]
        error: TracefsError,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Btf(#[from] BtfError),
}

/// A probe this kernel cannot run, and why.
#[derive(Debug)]
pub struct Unavailable {
    pub spec: &'static ProbeSpec,
    pub reason: String,
}

#[derive(Debug)]
pub struct KernelSetup {
    pub config: ProbeConfig,
    pub available: Vec<&'static ProbeSpec>,
    pub unavailable: Vec<Unavailable>,
    /// `enum sk_rst_reason` names as `tcp:tcp_send_reset` prints them (empty before 6.10).
    pub reset_reasons: ResetReasons,
    /// Which source each feature uses here.
    pub modes: Modes,
    /// What the start-up enumeration reads, or why this kernel's BTF cannot say.
    pub seed_offsets: Result<SeedOffsets, String>,
}

impl std::fmt::Debug for ProbeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.program)
    }
}

impl KernelSetup {
    pub fn resolve(tracefs: &Tracefs, btf: &KernelBtf) -> Result<Self, SetupError> {
        let mut config = ProbeConfig {
            kernel: btf.kernel_offsets()?,
            ..ProbeConfig::default()
        };
        let mut available = Vec::new();
        let mut unavailable = Vec::new();
        let mut reset_reasons = ResetReasons::default();
        for spec in PROBES {
            let format = match tracefs.format(spec.tracepoint) {
                Ok(format) => format,
                Err(error) if spec.required => {
                    return Err(SetupError::RequiredTracepoint {
                        tracepoint: spec.tracepoint,
                        program: spec.program,
                        error,
                    });
                }
                Err(e) => {
                    unavailable.push(Unavailable {
                        spec,
                        reason: crate::errors::chain(&e),
                    });
                    continue;
                }
            };
            match (spec.configure)(&format, &mut config) {
                Ok(()) => available.push(spec),
                Err(e) if spec.required => return Err(e.into()),
                Err(e) => unavailable.push(Unavailable {
                    spec,
                    reason: crate::errors::chain(&e),
                }),
            }
            if let Some(field) = spec.names_reset_reasons {
                reset_reasons = ResetReasons::new(format.symbolic_values(field));
            }
        }
        let modes = Self::modes(&available, &config, btf);
        let mut setup = Self {
            config,
            available,
            unavailable,
            reset_reasons,
            modes,
            seed_offsets: btf.seed_offsets().map_err(|e| crate::errors::chain(&e)),
        };
        setup.name_inferred_reason();
        Ok(setup)
    }

    /// The one reason the packet path infers gets the name (and the value)
    /// newer kernels give it, where this kernel names none.
    fn name_inferred_reason(&mut self) {
        if self.reset_reasons.is_empty() && self.modes.no_socket_resets == NoSocketResets::Packets {
            self.reset_reasons = ResetReasons::new([(1, "NO_SOCKET".to_owned())].into());
        }
    }

    fn has(&self, program: &str) -> bool {
        self.available.iter().any(|s| s.program == program)
    }

    fn modes(available: &[&'static ProbeSpec], config: &ProbeConfig, btf: &KernelBtf) -> Modes {
        let has = |program: &str| available.iter().any(|s| s.program == program);
        Modes {
            // Every kernel conntracer runs on has BTF (the offsets come from
            // it); a program whose BTF flavour still fails falls back alone.
            tracepoints: TracepointKind::Btf,
            activity: if has("ct_send_len") && has("ct_recv_len") {
                ActivitySource::Tracepoints
            } else {
                ActivitySource::Packets
            },
            dns: if btf.cgroup_skb_has_netns_cookie() {
                DnsSource::CgroupSkb
            } else if has("ct_dns_dev") {
                DnsSource::Devices
            } else {
                DnsSource::Unavailable
            },
            // Before 6.10 `tcp_send_reset` has no reason and skips resets sent without a socket.
            no_socket_resets: if has("ct_rst_tx") && config.send_reset.reason.is_present() {
                NoSocketResets::Tracepoint
            } else {
                NoSocketResets::Packets
            },
        }
    }

    /// Uses the fallback sources `spec` names (see `Modes::forced`).
    pub fn force(&mut self, spec: &str) -> Result<(), super::modes::ForceError> {
        self.modes = self.modes.forced(spec)?;
        if self.modes.dns == DnsSource::Devices && !self.has("ct_dns_dev") {
            self.modes.dns = DnsSource::Unavailable;
        }
        self.name_inferred_reason();
        Ok(())
    }

    /// The probes to attach in this kernel's modes.
    pub fn to_attach(&self, dns_capture: bool) -> impl Iterator<Item = &'static ProbeSpec> + '_ {
        self.available.iter().copied().filter(move |spec| {
            (spec.attach_if)(&self.modes) && (dns_capture || spec.program != "ct_dns_dev")
        })
    }
}
