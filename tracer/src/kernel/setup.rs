//! Resolving every probe's record layout and the struct offsets on this
//! kernel into the `ProbeConfig` the programs load with.

use std::collections::BTreeMap;

use tracer_common::config::ProbeConfig;

use super::{
    btf::{BtfError, KernelBtf},
    layouts::LayoutError,
    tracefs::{Tracefs, TracefsError},
};
use crate::probes::spec::{PROBES, ProbeSpec};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("required tracepoint {tracepoint} ({program}): {source}")]
    RequiredTracepoint {
        tracepoint: &'static str,
        program: &'static str,
        source: TracefsError,
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
}

/// The kernel's names for `enum sk_rst_reason` values, e.g. 1 → `NO_SOCKET`.
#[derive(Debug, Clone, Default)]
pub struct ResetReasons(BTreeMap<u64, String>);

impl ResetReasons {
    pub fn new(names: BTreeMap<u64, String>) -> Self {
        Self(names)
    }

    /// The name, or the number when this kernel did not name it.
    pub fn name(&self, reason: u32) -> String {
        self.0
            .get(&u64::from(reason))
            .cloned()
            .unwrap_or_else(|| reason.to_string())
    }

    pub fn get(&self, reason: u64) -> Option<&str> {
        self.0.get(&reason).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
                Err(source) if spec.required => {
                    return Err(SetupError::RequiredTracepoint {
                        tracepoint: spec.tracepoint,
                        program: spec.program,
                        source,
                    });
                }
                Err(e) => {
                    unavailable.push(Unavailable {
                        spec,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            match (spec.configure)(&format, &mut config) {
                Ok(()) => available.push(spec),
                Err(e) if spec.required => return Err(e.into()),
                Err(e) => unavailable.push(Unavailable {
                    spec,
                    reason: e.to_string(),
                }),
            }
            if spec.tracepoint == "tcp/tcp_send_reset" {
                reset_reasons = ResetReasons::new(format.symbolic_values("reason"));
            }
        }
        Ok(Self {
            config,
            available,
            unavailable,
            reset_reasons,
        })
    }
}
