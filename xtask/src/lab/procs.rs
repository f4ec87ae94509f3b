//! Child processes of a scenario, stopped on drop (even when a check fails).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Starts `cmd` in `netns` (or here when `None`), output to `log`.
    pub fn spawn(name: &str, netns: Option<&str>, cmd: &[&str], log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(cmd);
                c
            }
            None => {
                let mut c = Command::new(cmd[0]);
                c.args(&cmd[1..]);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}: {}", cmd.join(" ")))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits for the process to exit by itself.
    pub fn wait(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().context("already stopped")?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                if !status.success() {
                    bail!("{} exited with {status}", self.name);
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not finish within {within:?}", self.name)
    }

    /// SIGKILL, as a crash or the OOM killer would; waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Polls `check` every 100 ms until it holds or `within` passes.
pub fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out after {within:?} waiting for {what}")
}
