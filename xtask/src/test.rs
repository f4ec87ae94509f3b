//! `cargo xtask test`: everything CI runs.

use anyhow::{Result, bail};

use crate::{cargo, setup};

pub fn all(lint: bool) -> Result<()> {
    setup::all()?;
    if !setup::is_root() {
        bail!("the kernel tests load eBPF programs and create network namespaces: run as root");
    }
    if lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    // Default members: the eBPF crate only builds for the bpf target (tracer/build.rs).
    cargo(&["test", "--", "--test-threads", "2"])
}
