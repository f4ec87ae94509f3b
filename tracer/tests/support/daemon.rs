//! `conntracer daemon` as a child process on a free loopback port, killed
//! on drop; its resident memory read from /proc.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Starts `conntracer daemon ARGS` and waits (60 s at most) until ready.
    pub fn start(args: &[&str]) -> Self {
        let addr = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_conntracer"))
            // Several daemons run at once in the tests.
            .args([
                "daemon",
                "--lock-file",
                "none",
                "--listen",
                &addr.to_string(),
            ])
            .args(args)
            .env("CONNTRACER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start conntracer daemon");
        let daemon = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while super::http::get(addr, "/readyz").is_none_or(|(code, _)| code != 200) {
            assert!(Instant::now() < deadline, "daemon not ready within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (VmRSS) in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("daemon status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// `/metrics`, answered within the 10 s liveness bound.
    pub fn metrics(&self) -> String {
        let (code, body) = super::http::get(self.addr, "/metrics").expect("/metrics not answered");
        assert_eq!(code, 200);
        body
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address nothing listens on right now.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap()
}

/// Raises this process's open-file limit to its hard limit (the tests hold
/// a thousand sockets at once).
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Series (sample lines) of each metric family in a `/metrics` body.
pub fn series_per_family(body: &str) -> std::collections::BTreeMap<String, usize> {
    let mut families = std::collections::BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_count", "_sum", "_total", "_created", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        *families.entry(family.to_owned()).or_insert(0) += 1;
    }
    families
}
