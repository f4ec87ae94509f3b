//! The guest's initramfs: static busybox, the kernel's modules and init.sh.

use std::{
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use super::{cpio::Cpio, kernel::Kernel, modules};

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("init.sh");

/// Writes the initramfs of `kernel` to `path` (cheap: rebuilt every boot,
/// so a change to init.sh or the module list is never missed).
pub fn build(kernel: &Kernel, path: &Path) -> Result<PathBuf> {
    let busybox = std::fs::read(BUSYBOX).context("reading /bin/busybox (busybox-static)")?;
    if has_interpreter(&busybox) {
        bail!("{BUSYBOX} is linked dynamically: install busybox-static");
    }
    let modules = modules::load_order(&kernel.modules())?;

    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut cpio = Cpio::new(BufWriter::new(file));
    for dir in ["bin", "dev", "proc", "sys", "tmp", "modules"] {
        cpio.dir(dir)?;
    }
    // The kernel opens it for init's stdio before devtmpfs is mounted.
    cpio.char_device("dev/console", 5, 1)?;
    cpio.file("bin/busybox", 0o755, &busybox)?;
    cpio.symlink("bin/sh", "busybox")?;
    cpio.file("init", 0o755, INIT.as_bytes())?;
    let mut load = String::new();
    for module in &modules {
        cpio.file(
            &format!("modules/{}", module.file_name),
            0o644,
            &module.data,
        )?;
        load.push_str(&module.file_name);
        load.push('\n');
    }
    cpio.file("modules.load", 0o644, load.as_bytes())?;
    cpio.finish()?.flush()?;
    Ok(path.to_path_buf())
}

/// An ELF64 program header of type PT_INTERP: the binary needs ld.so.
/// `/bin/busybox` runs without a dynamic loader.
pub fn busybox_is_static() -> bool {
    std::fs::read(BUSYBOX).is_ok_and(|elf| !has_interpreter(&elf))
}

fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (
        elf.get(0x20..0x28)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize),
        u16_at(0x36),
        u16_at(0x38),
    ) else {
        return false;
    };
    (0..count).any(|i| {
        let at = phoff + i * size;
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) == PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dynamic_binary_has_an_interpreter() {
        assert!(super::has_interpreter(&std::fs::read("/bin/sh").unwrap()));
    }
}
