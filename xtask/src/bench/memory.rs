//! Daemon memory against open tracked connections. The connections are held
//! by child processes (this binary again, as the hidden `bench-hold`), at
//! most [`PER_PROCESS`] sockets each, so the per-process open-file limit
//! does not cap the test. One daemon per point, sized for it.

use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::tracers::{self, Running, Tracer};
use crate::lab::net::Network;

/// Sockets per holding process (the open-file limit here is 20 000).
const PER_PROCESS: u32 = 9_000;
/// A holder exits on its own after this long, whatever happens to the bench.
const HOLD_SECONDS: u64 = 300;
/// Connections opened per second, one client at a time: a steady rate the
/// daemon drains without loss (the churn workloads measure bursts).
const OPEN_RATE: u32 = 10_000;
/// The daemon's default `--max-connections`.
const DEFAULT_CAPACITY: u32 = 131_072;

/// One child holding connections: a server (accepts) or a client (connects).
#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// Network namespace to enter (under /run/netns).
    #[arg(long)]
    netns: String,
    /// Listen on `addr` and accept `count` connections instead of connecting.
    #[arg(long)]
    serve: bool,
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    count: u32,
    /// Connections per second (clients; 0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u32,
}

/// The child's side: enter the namespace, open, say `held N`, then keep them
/// until stdin closes (the bench is done) or [`HOLD_SECONDS`] pass.
pub fn hold(args: HoldArgs) -> Result<()> {
    // SAFETY: plain syscalls; die with the bench even if it is killed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            bail!("the bench is gone");
        }
    }
    super::raise_fd_limit();
    let ns = std::fs::File::open(format!("/run/netns/{}", args.netns))?;
    // SAFETY: valid fd; no other thread exists yet, so all later ones inherit it.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {}: {}", args.netns, std::io::Error::last_os_error());
    }
    let deadline = Instant::now() + Duration::from_secs(HOLD_SECONDS);
    let mut out = std::io::stdout();
    let mut held = Vec::with_capacity(args.count as usize);
    if args.serve {
        let listener = TcpListener::bind(args.addr)?;
        // SAFETY: valid fd; a second listen() only raises the backlog.
        unsafe { libc::listen(listener.as_raw_fd(), 4096) };
        listener.set_nonblocking(true)?;
        writeln!(out, "listening")?;
        while held.len() < args.count as usize && Instant::now() < deadline {
            match listener.accept() {
                Ok((c, _)) => held.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    } else {
        let started = Instant::now();
        while held.len() < args.count as usize && Instant::now() < deadline {
            if args.rate > 0 {
                // Connection k is due at k / rate seconds.
                let due = Duration::from_secs_f64(held.len() as f64 / f64::from(args.rate));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            match TcpStream::connect_timeout(&args.addr, Duration::from_secs(3)) {
                Ok(c) => held.push(c),
                Err(e) => {
                    eprintln!("bench-hold: connect {}: {e}", args.addr);
                    break;
                }
            }
        }
    }
    writeln!(out, "held {}", held.len())?;
    out.flush()?;
    let mut stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as i32) };
        if left.is_zero() || (ready > 0 && matches!(stdin.read(&mut buf), Ok(0) | Err(_))) {
            return Ok(());
        }
    }
}

struct Holder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// Every holding child; all killed when dropped, on any path out.
#[derive(Default)]
struct Holders(Vec<Holder>);

impl Holders {
    fn spawn(&mut self, netns: &str, serve: bool, addr: SocketAddr, count: u32) -> Result<usize> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["bench-hold", "--netns", netns, "--addr", &addr.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--rate", &OPEN_RATE.to_string()]);
        if serve {
            cmd.arg("--serve");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting bench-hold")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.0.push(Holder { child, lines });
        Ok(self.0.len() - 1)
    }

    /// The next line of holder `i`, within `timeout`.
    fn line(&self, i: usize, timeout: Duration) -> Result<String> {
        self.0[i]
            .lines
            .recv_timeout(timeout)
            .context("a connection holder did not answer in time")
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for h in &mut self.0 {
            let _ = h.child.kill();
        }
        for h in &mut self.0 {
            let _ = h.child.wait();
        }
    }
}

fn tracked() -> f64 {
    crate::lab::scrape::metrics(tracers::DAEMON.parse().expect("addr"))
        .map(|m| crate::lab::scrape::sum(&m, "conntracer_tracked_connections", &[]))
        .unwrap_or(0.0)
}

/// One daemon per target count of tracked sockets (both ends of each
/// connection are tracked: `target / 2` connections); its RSS and map memory
/// once the table holds them.
pub fn points(targets: &[u32], conntracer: &Path, net: &Network) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (k, &target) in targets.iter().enumerate() {
        let connections = target / 2;
        let capacity = DEFAULT_CAPACITY.max(target + 16_384);
        eprintln!("bench: memory with {target} tracked sockets ({connections} connections)");
        let daemon = Running::start(
            Tracer::Daemon,
            conntracer,
            "bench",
            &["--max-connections", &capacity.to_string()],
        )?;
        std::thread::sleep(Duration::from_secs(1));
        let (rss_idle, tracked_before) = (daemon.rss_mib(), tracked());
        let started = Instant::now();
        let mut holders = Holders::default();
        let mut opened = 0u32;
        let mut left = connections;
        let mut port = 30_000 + 100 * k as u16;
        while left > 0 {
            let n = left.min(PER_PROCESS);
            let addr: SocketAddr = format!("{}:{port}", net.cart.ip).parse()?;
            let server = holders.spawn(&net.cart.netns, true, addr, n)?;
            let said = holders.line(server, Duration::from_secs(10))?;
            if said != "listening" {
                bail!("bench-hold server said {said:?}");
            }
            let c = holders.spawn(&net.frontend.netns, false, addr, n)?;
            let said = holders.line(c, Duration::from_secs(120))?;
            opened += said
                .strip_prefix("held ")
                .and_then(|n| n.parse::<u32>().ok())
                .with_context(|| format!("bench-hold client said {said:?}"))?;
            left -= n;
            port += 1;
        }
        let open_seconds = started.elapsed().as_secs_f64();
        // The daemon has seen them once its count stops growing.
        let want = tracked_before + 2.0 * f64::from(opened);
        let (mut now, mut still) = (tracked(), 0);
        let settle = Instant::now() + Duration::from_secs(60);
        while now < want && still < 5 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(500));
            let last = std::mem::replace(&mut now, tracked());
            still = if now == last { still + 1 } else { 0 };
        }
        // Past one audit round of the daemon (every 10 s), when it also hands
        // freed heap back: its steady state, not the rehash peak of the burst.
        std::thread::sleep(Duration::from_secs(11));
        let mut point = json!({
            "connections": opened,
            "tracked": tracked(),
            "daemon_rss_mib": daemon.rss_mib(),
            "map_mib": daemon.map_mib(),
            "daemon_rss_mib_idle": rss_idle,
            "open_seconds": open_seconds,
            "max_connections": capacity,
        });
        // Before the holders go: closing them all at once is a burst of its own.
        point["events_lost"] = json!(
            crate::lab::scrape::metrics(tracers::DAEMON.parse().expect("addr"))
                .map(|m| crate::lab::scrape::sum(&m, "conntracer_events_lost_total", &[]) as u64)
                .ok()
        );
        drop(holders);
        daemon.stop("bench");
        eprintln!("bench: {point}");
        out.push(point);
    }
    Ok(out)
}
