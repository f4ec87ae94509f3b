//! One guest boot under qemu (TCG): bounded by a timeout, killed on any
//! error, its command's output streamed line by line as it arrives.

use std::{
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::virtiofsd::Virtiofsd;

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    /// Kernel command line parameters init.sh reads (`xtask_run=…`).
    pub params: Vec<String>,
    pub run_dir: &'a Path,
    pub cpus: u32,
    pub memory_mib: u32,
    pub timeout: Duration,
}

/// How a boot went: the command's exit status and when the guest came up.
pub struct Outcome {
    pub code: i32,
    pub boot: Duration,
    pub total: Duration,
}

/// The guest's kernel crashed (an oops or a panic on its console): the boot
/// is abandoned at once instead of waiting out the timeout. Returned inside
/// the `anyhow::Error`, so callers can tell it from a failing test.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest kernel crashed after {after_secs} s ({where_}); {}; console:\n{console}",
    if *.bpf_on_stack { "a BPF program is on the crashing stack" } else { "no BPF program on the crashing stack" }
)]
pub struct GuestCrashed {
    pub after_secs: u64,
    /// The first line of the report (`BUG: …`, `Oops: …`, `RIP: …`).
    pub where_: String,
    /// A `bpf_prog_…` frame in the report: then the crash may be ours.
    pub bpf_on_stack: bool,
    pub console: String,
}

/// How long the console is read after a crash starts, for the whole report.
const CRASH_REPORT: Duration = Duration::from_secs(5);

/// Console lines that start a kernel crash report.
fn starts_crash(line: &str) -> bool {
    [
        "BUG: ",
        "Oops: ",
        "Kernel panic",
        "general protection fault",
        "kernel BUG at",
    ]
    .iter()
    .any(|m| line.contains(m))
}

/// The guest's serial ports, as files in the run directory.
struct Ports {
    console: PathBuf,
    output: PathBuf,
    status: PathBuf,
}

pub fn boot(b: &Boot, on_line: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let ports = Ports {
        console: b.run_dir.join("console.log"),
        output: b.run_dir.join("output.log"),
        status: b.run_dir.join("status"),
    };
    // Created before qemu opens them, so the reader can follow from the start.
    for port in [&ports.console, &ports.output, &ports.status] {
        File::create(port)?;
    }
    let virtiofsd = Virtiofsd::start(b.run_dir)?;
    let started = Instant::now();
    let mut qemu = Guard(
        qemu_command(b, &ports, &virtiofsd.socket)?
            .spawn()
            .context("starting qemu-system-x86_64")?,
    );

    let mut output = Follow::open(&ports.output)?;
    let mut console = Follow::open(&ports.console)?;
    let mut crash: Option<(Instant, String)> = None;
    let mut boot = None;
    loop {
        let exited = qemu.0.try_wait()?;
        output.lines(on_line)?;
        console.lines(&mut |line| {
            if crash.is_none() && starts_crash(line) {
                crash = Some((Instant::now(), line.trim().to_owned()));
            }
        })?;
        if let Some((at, where_)) = &crash
            && (at.elapsed() > CRASH_REPORT || exited.is_some())
        {
            let console = tail_lines(&ports.console, 80);
            return Err(GuestCrashed {
                after_secs: started.elapsed().as_secs(),
                where_: where_.clone(),
                bpf_on_stack: console.contains("bpf_prog_"),
                console,
            }
            .into());
        }
        let status = std::fs::read_to_string(&ports.status)?;
        if boot.is_none() && status.starts_with("up") {
            boot = Some(started.elapsed());
        }
        if let Some(exit) = exited {
            output.lines(on_line)?;
            output.rest(on_line);
            return match parse_exit(&status) {
                Some(code) => Ok(Outcome {
                    code,
                    boot: boot.unwrap_or_default(),
                    total: started.elapsed(),
                }),
                None => bail!(
                    "the guest stopped ({exit}) without reporting an exit status; \
                     qemu: {}\nconsole:\n{}",
                    tail(&b.run_dir.join("qemu.log")),
                    tail(&ports.console)
                ),
            };
        }
        if started.elapsed() > b.timeout {
            // Dropping the guards kills qemu and virtiofsd.
            bail!(
                "the guest did not finish within {} s; console:\n{}",
                b.timeout.as_secs(),
                tail(&ports.console)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn qemu_command(b: &Boot, ports: &Ports, socket: &Path) -> Result<Command> {
    let mem = b.memory_mib;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-nodefaults", "-no-reboot"])
        .args(["-display", "none", "-monitor", "none"])
        .args(["-smp", &b.cpus.to_string(), "-m", &format!("{mem}M")])
        // vhost-user-fs needs the guest's memory shared with virtiofsd.
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            "-numa",
            "node,memdev=mem",
        ])
        .arg("-chardev")
        .arg(format!("socket,id=vfs,path={}", socket.display()))
        .args(["-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot"])
        .args(["-device", "virtio-rng-pci"])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet tsc=reliable {}",
            b.params.join(" ")
        ));
    for port in [&ports.console, &ports.output, &ports.status] {
        cmd.arg("-serial").arg(format!("file:{}", port.display()));
    }
    super::die_with_parent(&mut cmd);
    let log = File::create(b.run_dir.join("qemu.log"))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

/// `exit=N`, the last thing init.sh writes to ttyS2.
fn parse_exit(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("exit=")?.parse().ok())
}

fn tail(path: &Path) -> String {
    tail_lines(path, 30)
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kills the child on drop, whatever path leaves the function.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a file as it grows, handing out complete lines.
struct Follow {
    file: File,
    pending: Vec<u8>,
}

impl Follow {
    fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            pending: Vec::new(),
        })
    }

    fn lines(&mut self, on_line: &mut dyn FnMut(&str)) -> Result<()> {
        self.file.read_to_end(&mut self.pending)?;
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            on_line(String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']));
        }
        Ok(())
    }

    /// A last line without its newline.
    fn rest(&mut self, on_line: &mut dyn FnMut(&str)) {
        if !self.pending.is_empty() {
            on_line(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_exit, starts_crash};

    #[test]
    fn crash_reports_are_recognised() {
        assert!(starts_crash(
            "[   67.64] BUG: kernel NULL pointer dereference, address: 0000000000000002"
        ));
        assert!(starts_crash(
            "[    1.00] Kernel panic - not syncing: Fatal exception"
        ));
        assert!(!starts_crash("[    1.00] virtio_net virtio0: enabled"));
    }

    #[test]
    fn exit_status_follows_the_up_line() {
        assert_eq!(parse_exit("up\nexit=3\n"), Some(3));
        assert_eq!(parse_exit("up\n"), None);
    }
}
