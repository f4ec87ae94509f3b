//! Real Debian cloud kernels under qemu (TCG), the host's root shared
//! read-only, for running commands and the kernel tests on old kernels.
//!
//! `kernel` fetches and caches the packages (`apt`), `initramfs` (`cpio`,
//! `modules`, init.sh) makes the guest's first stage, `qemu` boots it with
//! `virtiofsd` serving the root, `script` carries the command in, `matrix`
//! runs the kernel tests and reads their results.

mod apt;
mod cpio;
mod initramfs;
mod kernel;
pub mod matrix;
mod modules;
mod qemu;
mod script;
mod virtiofsd;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub use initramfs::busybox_is_static;
pub use kernel::SERIES;
pub use virtiofsd::VIRTIOFSD;

pub struct Options {
    pub cpus: u32,
    pub memory_mib: u32,
    pub timeout: Duration,
}

impl Options {
    pub fn with_timeout(secs: u64) -> Self {
        Self {
            cpus: 2,
            memory_mib: 2048,
            timeout: Duration::from_secs(secs),
        }
    }
}

pub struct Outcome {
    pub code: i32,
    pub release: String,
    pub boot: Duration,
    pub total: Duration,
}

/// Kills the child when xtask dies, even by SIGKILL (a CI job cancelled):
/// neither qemu nor virtiofsd may outlive the run that started them.
fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where the VM's kernels, apt state and run directories live.
fn vm_dir() -> Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace root")?
            .join("target"),
    };
    let dir = std::path::absolute(target.join("vm"))?;
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Downloads and unpacks the kernels (cached), e.g. ahead of a run.
pub fn fetch(series: &[String]) -> Result<()> {
    crate::setup::vm_prerequisites()?;
    for name in series {
        let kernel = kernel::fetch(kernel::series(name)?, &vm_dir()?)?;
        println!("kernel {name}: {} ({})", kernel.release, kernel.package());
    }
    Ok(())
}

/// Boots `series`, runs `argv` in `cwd` inside it and hands each line of its
/// output (stdout and stderr together) to `on_line`.
pub fn run(
    series: &str,
    argv: &[String],
    cwd: &Path,
    options: &Options,
    on_line: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    if !crate::setup::is_root() {
        bail!(
            "booting a VM needs root: virtiofsd mounts the host's root in a namespace of its own"
        );
    }
    crate::setup::vm_prerequisites()?;
    let vm_dir = vm_dir()?;
    let kernel = kernel::fetch(kernel::series(series)?, &vm_dir)?;
    let run_dir = vm_dir
        .join("out")
        .join(format!("{series}-{}", std::process::id()));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    std::fs::create_dir_all(&run_dir)?;

    let run_script = run_dir.join("run.sh");
    std::fs::write(&run_script, script::guest_script(argv, cwd))?;
    let modules = kernel.modules();
    // The kernel splits its command line at spaces.
    for path in [&run_script, &modules] {
        if path.to_string_lossy().contains(char::is_whitespace) {
            bail!("{path:?} contains whitespace: the guest cannot be told about it");
        }
    }
    let initramfs = initramfs::build(&kernel, &run_dir.join("initramfs.cpio"))?;
    let outcome = qemu::boot(
        &qemu::Boot {
            vmlinuz: &kernel.vmlinuz(),
            initramfs: &initramfs,
            params: vec![
                format!("xtask_run={}", run_script.display()),
                format!("xtask_modules={}", modules.display()),
            ],
            run_dir: &run_dir,
            cpus: options.cpus,
            memory_mib: options.memory_mib,
            timeout: options.timeout,
        },
        on_line,
    );
    // Rebuilt for every boot: only the logs are worth keeping.
    let _ = std::fs::remove_file(&initramfs);
    let outcome =
        outcome.with_context(|| format!("kernel {series}: logs in {}", run_dir.display()))?;
    if outcome.code == 0 {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(Outcome {
        code: outcome.code,
        release: kernel.release,
        boot: outcome.boot,
        total: outcome.total,
    })
}

/// `cargo xtask vm run`: the command's output on stdout, its status returned.
pub fn run_command(series: &str, argv: &[String], timeout_secs: u64) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let outcome = run(
        series,
        argv,
        &cwd,
        &Options::with_timeout(timeout_secs),
        &mut |line| println!("{line}"),
    )?;
    eprintln!(
        "xtask: kernel {series} ({}): up in {:.1} s, command exited with {} after {:.1} s in all",
        outcome.release,
        outcome.boot.as_secs_f64(),
        outcome.code,
        outcome.total.as_secs_f64()
    );
    Ok(outcome.code)
}
