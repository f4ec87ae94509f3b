//! The Debian cloud kernels of the matrix: downloaded once, unpacked into
//! target/vm/kernels/<series>/ with a modules.dep of their own.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::setup::run;

use super::apt::Apt;

/// A kernel series and the apt-cache regex naming its cloud packages.
pub struct Series {
    pub name: &'static str,
    pattern: &'static str,
}

/// Oldest first: bullseye's 5.10, bookworm's 6.1, bookworm-backports' 6.12.
pub const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.1",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.12",
        pattern: r"^linux-image-6\.12\.[0-9]+\+[a-z0-9]+-cloud-amd64-unsigned$",
    },
];

/// The newest index entries may already be gone from the mirror (404):
/// this many older builds are tried before giving up.
const MAX_ATTEMPTS: usize = 8;

/// Written last, so a half-unpacked kernel is never taken for a cached one.
const STAMP: &str = "PACKAGE";

pub struct Kernel {
    pub dir: PathBuf,
    /// `uname -r` of the guest.
    pub release: String,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join(format!("boot/vmlinuz-{}", self.release))
    }

    pub fn modules(&self) -> PathBuf {
        self.dir.join("lib/modules").join(&self.release)
    }

    pub fn package(&self) -> String {
        std::fs::read_to_string(self.dir.join(STAMP))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

pub fn series(name: &str) -> Result<&'static Series> {
    SERIES.iter().find(|s| s.name == name).with_context(|| {
        let known: Vec<_> = SERIES.iter().map(|s| s.name).collect();
        format!("unknown kernel {name:?}: one of {}", known.join(", "))
    })
}

/// The unpacked kernel of `series`, downloaded first if it is not cached.
pub fn fetch(series: &'static Series, vm_dir: &Path) -> Result<Kernel> {
    let dir = vm_dir.join("kernels").join(series.name);
    if !dir.join(STAMP).is_file() {
        download(series, vm_dir, &dir)?;
    }
    let release = std::fs::read_dir(dir.join("lib/modules"))
        .context("the unpacked kernel has no lib/modules")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .context("the unpacked kernel has no module directory")?;
    Ok(Kernel { dir, release })
}

fn download(series: &Series, vm_dir: &Path, dir: &Path) -> Result<()> {
    let mut apt = Apt::new(&vm_dir.join("apt"))?;
    let debs = vm_dir.join("debs");
    let candidates = apt.candidates(series.pattern)?;
    if candidates.is_empty() {
        bail!("no package matches {} in the apt indexes", series.pattern);
    }
    for candidate in candidates.iter().take(MAX_ATTEMPTS) {
        eprintln!(
            "xtask: downloading {} {} (kernel {})",
            candidate.name, candidate.version, series.name
        );
        match apt.download(candidate, &debs) {
            Ok(deb) => return install(&deb, dir),
            // Typically a 404: the index lists a build the mirror dropped.
            Err(e) => eprintln!("xtask: {e:#}; trying an older build"),
        }
    }
    bail!(
        "none of the newest {MAX_ATTEMPTS} builds of kernel {} could be downloaded",
        series.name
    )
}

/// Unpacks `deb` beside `dir` and moves it into place complete, so a run
/// that is interrupted or races another never leaves half a kernel there.
fn install(deb: &Path, dir: &Path) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let staging = dir.with_file_name(format!("{name}.unpacking-{}", std::process::id()));
    unpack(deb, &staging)?;
    let file = deb.file_name().unwrap_or_default().to_string_lossy();
    std::fs::write(staging.join(STAMP), format!("{file}\n"))?;
    std::fs::remove_file(deb)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&staging, dir).with_context(|| format!("moving the kernel to {dir:?}"))
}

/// `dpkg-deb -x`, then depmod: the package ships no modules.dep (its
/// postinst makes one), and the initramfs is built from it.
fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))?;
    let release = std::fs::read_dir(dir.join("lib/modules"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .context("the package has no lib/modules")?;
    run(Command::new("depmod").arg("-b").arg(dir).arg(&release))
}
