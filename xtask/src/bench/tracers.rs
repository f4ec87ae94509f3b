//! The tracers compared: conntracer trace and daemon, and the peers
//! users know (libbpf-tools tcplife and tcpstates, a bpftrace one-liner).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracer {
    Trace,
    Daemon,
    Tcplife,
    Tcpstates,
    Bpftrace,
}

impl Tracer {
    pub fn name(self) -> &'static str {
        match self {
            Tracer::Trace => "conntracer trace",
            Tracer::Daemon => "conntracer daemon",
            Tracer::Tcplife => "tcplife",
            Tracer::Tcpstates => "tcpstates",
            Tracer::Bpftrace => "bpftrace one-liner",
        }
    }
}

pub const DAEMON: &str = "127.0.0.1:19499";

pub struct Running {
    pub tracer: Tracer,
    child: Option<Child>,
    stderr: Option<mpsc::Receiver<String>>,
}

impl Running {
    pub fn start(
        tracer: Tracer,
        conntracer: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let ct = conntracer.to_str().unwrap();
        let (program, args): (&str, Vec<&str>) = match tracer {
            Tracer::Trace => (
                ct,
                vec!["trace", "--output", "json", "--namespace", namespace],
            ),
            // Not the node's lock: a daemon already running there stays.
            Tracer::Daemon => (
                ct,
                vec!["daemon", "--lock-file", "none", "--listen", DAEMON],
            ),
            Tracer::Tcplife => ("tcplife", vec![]),
            Tracer::Tcpstates => ("tcpstates", vec![]),
            Tracer::Bpftrace => (
                "bpftrace",
                vec![
                    "-e",
                    "tracepoint:sock:inet_sock_set_state { printf(\"%d %d %d\\n\", pid, args->oldstate, args->newstate); }",
                ],
            ),
        };
        let mut child = Command::new(program)
            .args(&args)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let running = Self {
            tracer,
            child: Some(child),
            stderr: Some(rx),
        };
        running.wait_ready()?;
        Ok(running)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        match self.tracer {
            Tracer::Trace => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = self
                    .stderr
                    .as_ref()
                    .unwrap()
                    .recv_timeout(left)
                    .context("conntracer trace did not start")?;
                if line.contains("program ids") {
                    return Ok(());
                }
            },
            Tracer::Daemon => loop {
                let addr: SocketAddr = DAEMON.parse().unwrap();
                if crate::lab::scrape::get(addr, "/readyz").is_ok_and(|(c, _)| c == 200) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("conntracer daemon not ready");
                }
                std::thread::sleep(Duration::from_millis(100));
            },
            // No readiness signal: give them time to compile/attach.
            Tracer::Bpftrace => {
                std::thread::sleep(Duration::from_secs(4));
                Ok(())
            }
            _ => {
                std::thread::sleep(Duration::from_millis(1500));
                Ok(())
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// User + system CPU seconds the tracer has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.pid()
            .map_or(0.0, |pid| crate::procfs::cpu_seconds(pid as i32))
    }

    /// Resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.pid()
            .map_or(0.0, |pid| crate::procfs::rss_mib(pid as i32))
    }

    /// Memory the kernel charges for the tracer's BPF maps (fdinfo `memlock`), in MiB.
    pub fn map_mib(&self) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return 0.0;
        };
        let bytes: u64 = fds
            .flatten()
            .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
            .filter(|info| info.contains("map_type:"))
            .filter_map(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("memlock:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum();
        bytes as f64 / (1024.0 * 1024.0)
    }

    /// Stops the tracer; returns the events it reported lost (conntracer only)
    /// and, for the daemon, how many client connections it saw opened in `namespace`.
    pub fn stop(mut self, namespace: &str) -> (Option<u64>, Option<u64>) {
        let (lost, seen) = if self.tracer == Tracer::Daemon {
            let addr: SocketAddr = DAEMON.parse().unwrap();
            match crate::lab::scrape::metrics(addr) {
                Ok(m) => (
                    Some(crate::lab::scrape::sum(&m, "conntracer_events_lost_total", &[]) as u64),
                    Some(crate::lab::scrape::sum(
                        &m,
                        "conntracer_connections_opened_total",
                        &[("namespace", namespace), ("role", "client")],
                    ) as u64),
                ),
                Err(_) => (None, None),
            }
        } else {
            (None, None)
        };
        let Some(child) = self.child.take() else {
            return (lost, seen);
        };
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        if self.tracer == Tracer::Trace {
            // "conntracer: detaching; events lost: N, ..."
            let lines: Vec<String> = self
                .stderr
                .as_ref()
                .map(|r| r.try_iter().collect())
                .unwrap_or_default();
            let lost = lines
                .iter()
                .find_map(|l| l.split("events lost: ").nth(1))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok());
            return (lost, None);
        }
        (lost, seen)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Per-program BPF run statistics (`kernel.bpf_stats_enabled`), by program id.
pub fn bpf_stats() -> Vec<(u32, String, u64, u64)> {
    let Ok(out) = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
    else {
        return Vec::new();
    };
    let Ok(progs) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()? as u32,
                p["name"].as_str().unwrap_or("?").to_owned(),
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
            ))
        })
        .collect()
}
