//! Bringing the probes up, in the order that gives the clearest error first:
//! privileges, tracefs, BTF, record layouts, load and attach.

use std::path::Path;

use aya::maps::{MapData, PerCpuArray};

use super::{
    LoadError, LoadOptions, Probes,
    reader::EventReader,
    setup::{KernelSetup, SetupError},
};
use crate::kernel::{
    btf::{BtfError, KernelBtf, VMLINUX},
    privileges::{Capabilities, KernelPolicy},
    tracefs::{Tracefs, TracefsError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Force(#[from] super::modes::ForceError),
    #[error("cannot watch the event ring buffer")]
    Reader(#[source] std::io::Error),
}

/// Loaded, attached probes and the handles to read them. Dropping it
/// detaches every program and frees every map.
pub struct Tracer {
    pub setup: KernelSetup,
    pub probes: Probes,
    pub reader: EventReader,
    pub counters: PerCpuArray<MapData, u64>,
}

/// Forces older kernels' sources on this one (tests; see `Modes::forced`).
pub const FORCE_SOURCES: &str = "CONNTRACER_FORCE_SOURCES";

pub fn start(options: &LoadOptions) -> Result<Tracer, StartError> {
    let missing = Capabilities::current().missing_for_tracing(&KernelPolicy::current());
    if !missing.is_empty() {
        return Err(LoadError::MissingCapabilities(missing).into());
    }
    let tracefs = Tracefs::locate_or_mount()?;
    let btf = KernelBtf::open(Path::new(VMLINUX))?;
    let mut setup = KernelSetup::resolve(&tracefs, &btf)?;
    if let Ok(spec) = std::env::var(FORCE_SOURCES) {
        setup.force(&spec)?;
    }
    for gap in &setup.unavailable {
        tracing::warn!(
            probe = gap.spec.program,
            "degraded: {} unavailable ({}); cost: {}",
            gap.spec.tracepoint,
            gap.reason,
            gap.spec.cost
        );
    }
    tracing::info!("feature sources on this kernel: {}", setup.modes);
    let mut probes = Probes::load(&setup, options)?;
    if probes.dns_source != setup.modes.dns {
        setup.modes.dns = probes.dns_source;
        tracing::info!("feature sources now: {}", setup.modes);
    }
    let reader = EventReader::new(
        probes.take_events()?,
        probes.take_dns_events()?,
        options.drain_interval,
    )
    .map_err(StartError::Reader)?;
    let counters = probes.take_counters()?;
    Ok(Tracer {
        setup,
        probes,
        reader,
        counters,
    })
}
