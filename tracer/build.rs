//! Builds the eBPF programs (`tracer-ebpf`) for the bpf target and leaves the
//! object in OUT_DIR, where `src/probes/loader.rs` embeds it.
//!
//! The eBPF crate is built with the same toolchain as everything else (so one
//! LLVM), with `RUSTC_BOOTSTRAP=1` for `-Z build-std=core`, which needs the
//! `rust-src` component; it links with `bpf-linker`. `cargo xtask setup`
//! installs both. When either is missing this fails with what to run.

use std::{env, path::PathBuf, process::Command};

fn main() -> aya_build::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    preflight()?;
    // SAFETY: build scripts are single-threaded here; aya-build reads this
    // variable and passes it on to the nested cargo.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let ebpf_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../tracer-ebpf");
    let root_dir = ebpf_dir.to_str().expect("utf-8 path");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain()),
    )
}

/// The toolchain cargo is running us with (`stable` by default), so the eBPF
/// crate and userspace share one LLVM.
fn toolchain() -> String {
    env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned())
}

fn preflight() -> aya_build::Result<()> {
    const HOW: &str = "run `cargo xtask setup` once (it installs rust-src and bpf-linker 0.10.4)";
    if which("bpf-linker").is_none() {
        return Err(anyhow::anyhow!(
            "bpf-linker is not on PATH: {HOW}, or `cargo install bpf-linker --version 0.10.4 --locked`"
        ));
    }
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Err(anyhow::anyhow!(
            "the rust-src component is missing from {}: {HOW}, or `rustup component add rust-src`",
            sysroot.display()
        ));
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
