//! virtiofsd serving the host's root to the guest, read-only.
//!
//! The C virtiofsd of Debian 12 has no read-only mode, so it runs in a mount
//! namespace of its own where the root is bind-mounted with every mount
//! read-only: the host kernel refuses the guest's writes, whatever the guest
//! mounts. The namespace goes away with the process.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// Runs inside `unshare --mount`: $1 mount point, $2 socket, $3 virtiofsd.
/// The host's /proc, /sys and /dev are left out: the guest mounts its own.
const SERVE_READ_ONLY: &str = r#"set -e
mount --rbind / "$1"
for d in proc sys dev; do umount -R -l "$1/$d" 2>/dev/null || true; done
findmnt -Rrno TARGET "$1" | while read -r m; do mount -o remount,bind,ro "$m"; done
exec "$3" --socket-path="$2" -o source="$1" -o sandbox=chroot -o cache=always
"#;

/// Longest path a Unix socket address holds.
const SUN_PATH_MAX: usize = 107;

/// The running virtiofsd, killed on drop.
pub struct Virtiofsd {
    child: Child,
    pub socket: PathBuf,
}

impl Virtiofsd {
    /// Starts serving and waits for its socket.
    pub fn start(run_dir: &Path) -> Result<Self> {
        let mount_point = run_dir.join("root");
        let socket = run_dir.join("virtiofsd.sock");
        if socket.as_os_str().len() > SUN_PATH_MAX {
            bail!("{socket:?} is too long for a Unix socket: use a shorter target directory");
        }
        std::fs::create_dir_all(&mount_point)?;
        let log = std::fs::File::create(run_dir.join("virtiofsd.log"))?;
        let mut cmd = Command::new("unshare");
        super::die_with_parent(&mut cmd);
        let child = cmd
            .args(["--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", SERVE_READ_ONLY, "virtiofsd"])
            .arg(&mount_point)
            .arg(&socket)
            .arg(VIRTIOFSD)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting virtiofsd under unshare")?;
        let mut this = Self { child, socket };
        this.wait_for_socket(run_dir)?;
        Ok(this)
    }

    fn wait_for_socket(&mut self, run_dir: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.socket.exists() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(run_dir.join("virtiofsd.log")).unwrap_or_default();
                bail!("virtiofsd exited ({status}) before serving:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("virtiofsd did not create {:?} within 10 s", self.socket)
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        // It exits by itself when qemu disconnects; this covers every error path.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
