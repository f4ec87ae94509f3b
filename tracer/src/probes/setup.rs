//! Resolving every probe's record layout and the struct offsets on this
//! kernel into the `ProbeConfig` the programs load with, and which probes
//! this kernel cannot run.

use tracer_common::{config::ProbeConfig, seed::SeedOffsets};

use super::spec::{PROBES, ProbeSpec};
use crate::kernel::{
    btf::{BtfError, KernelBtf},
    layouts::LayoutError,
    reset_reasons::ResetReasons,
    tracefs::{Tracefs, TracefsError},
};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("required tracepoint {tracepoint} ({program})")]
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
        Ok(Self {
            config,
            available,
            unavailable,
            reset_reasons,
            seed_offsets: btf.seed_offsets().map_err(|e| crate::errors::chain(&e)),
        })
    }
}
