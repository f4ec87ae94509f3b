//! `cargo xtask bench --soak [SECONDS]`: the daemon under mixed load for a
//! long while (10 minutes by default; the test command runs 60 s), sampled
//! every 10 s, SIGKILLed half-way and started again. What it must show:
//! memory flat after warm-up, no event lost, the daemon's connection count
//! equal to the connections made, no entry stuck in its tables, nothing left
//! in the kernel by the killed daemon, and connections pooled before the
//! restart still attributed after it.

mod load;
mod verdict;
mod watch;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::lab::{
    Lab,
    envoy::{Sidecar, read_access_log},
    net::{Network, netns_exec},
    procs::{Proc, wait_until},
    scrape,
    stage::{App, spawn_dnsmasq, spawn_envoy},
};
use load::{Load, Pods};
use verdict::{Sample, Verdict};

const DAEMON: &str = "127.0.0.1:19496";
const NAMESPACE: &str = "soak";
const DNS_NAME: &str = "api.soak.example";
const NS: &[(&str, &str)] = &[("namespace", NAMESPACE)];
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Connections legitimately open once the load stopped (Envoy's pool and
/// the app's side of it, the pooled client's): more is a stuck entry.
const OPEN_AT_END: f64 = 16.0;

/// Set by SIGINT: the soak stops early and still tears everything down.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Runs the soak; returns whether every check held. `record`: write the
/// results under bench/results/ (the long run), else under target/lab/soak.
pub fn run(seconds: u64, record: bool) -> Result<bool> {
    if seconds < 40 {
        bail!("a soak needs at least 40 s (two samples on each side of the restart)");
    }
    crate::build_release()?;
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let lab = Lab::prepare(false)?;
    let workspace = lab
        .root
        .parent()
        .and_then(Path::parent)
        .context("workspace")?;
    let conntracer = workspace.join("target/release/conntracer");
    let dir = lab.scenario_dir("soak")?;
    let mut soak = Soak::set_up(&lab, &dir, &conntracer, seconds)?;
    let outcome = soak.run(seconds);
    let verdict = match outcome {
        Ok(v) => v,
        Err(e) => {
            println!("soak: FAILED: {e:#}");
            return Ok(false);
        }
    };
    let (json, markdown) = verdict.report(seconds);
    let out = if record {
        workspace.join("bench/results")
    } else {
        dir.clone()
    };
    std::fs::create_dir_all(&out)?;
    let stem = format!("soak-{}s", seconds);
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(out.join(format!("{stem}.md")), &markdown)?;
    println!("{markdown}");
    println!("soak: wrote {}", out.join(format!("{stem}.md")).display());
    Ok(verdict.failed.is_empty())
}

struct Soak {
    procs: Vec<Proc>,
    daemon: Option<Proc>,
    conntracer: PathBuf,
    dir: PathBuf,
    lab_scripts: PathBuf,
    /// Held for its teardown (the pods go when the soak is dropped).
    _net: Network,
    pods: PodsOwned,
    hosts: PathBuf,
    addr: SocketAddr,
}

/// Pod netns names and addresses.
struct PodsOwned {
    front: String,
    cart: (String, String),
    churn_a: String,
    churn_b: (String, String),
    dns: (String, String),
    pooled: String,
    legacy: (String, String),
}

impl Soak {
    fn set_up(lab: &Lab, dir: &Path, conntracer: &Path, seconds: u64) -> Result<Self> {
        let mut net = Network::new(NAMESPACE, 241)?;
        let churn_a = net.add_pod("churn-a", 30)?;
        let churn_b = net.add_pod("churn-b", 31)?;
        let dns = net.add_pod("dns", 53)?;
        let pooled = net.add_pod("pooled", 40)?;
        let legacy = net.add_pod("legacy", 41)?;
        for sysctl in [
            "net.ipv4.ip_local_port_range=10000 65000",
            "net.ipv4.tcp_tw_reuse=1",
        ] {
            netns_exec(&churn_a.netns, &["sysctl", "-q", "-w", sysctl])?;
        }
        netns_exec(
            &churn_b.netns,
            &["sysctl", "-q", "-w", "net.core.somaxconn=8192"],
        )?;
        let pods = PodsOwned {
            front: net.frontend.netns.clone(),
            cart: (net.cart.netns.clone(), net.cart.ip.clone()),
            churn_a: churn_a.netns.clone(),
            churn_b: (churn_b.netns.clone(), churn_b.ip.clone()),
            dns: (dns.netns.clone(), dns.ip.clone()),
            pooled: pooled.netns.clone(),
            legacy: (legacy.netns.clone(), legacy.ip.clone()),
        };
        let mut procs = Vec::new();
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, format!("10.213.241.100 {DNS_NAME}\n"))?;
        procs.push(spawn_dnsmasq(dir, &pods.dns.0, &hosts, &pods.dns.1)?);
        let max_seconds = seconds + 60;
        // The app Envoy calls: keep-alive closed after 1 s idle (the 503 race).
        procs.push(
            App {
                netns: &pods.cart.0,
                bind: "0.0.0.0",
                idle_timeout: 1.0,
                max_seconds,
            }
            .spawn(lab, dir)?,
        );
        // The app the pooled client keeps a connection to across the restart.
        procs.push(
            App {
                netns: &pods.legacy.0,
                bind: "0.0.0.0",
                idle_timeout: 8.0,
                max_seconds,
            }
            .spawn(lab, dir)?,
        );
        let log = dir.join("access.log");
        procs.push(spawn_envoy(
            lab,
            dir,
            &pods.front,
            &Sidecar {
                listen: "127.0.0.1",
                port: 15001,
                upstream: &pods.cart.1,
                upstream_port: 8080,
                idle_timeout: None,
                access_log: &log,
                dns: None,
            },
        )?);
        let soak = Self {
            procs,
            daemon: None,
            conntracer: conntracer.to_owned(),
            dir: dir.to_owned(),
            lab_scripts: lab.scripts.clone(),
            _net: net,
            pods,
            hosts,
            addr: DAEMON.parse().expect("address"),
        };
        wait_until(
            "Envoy and the app to serve",
            Duration::from_secs(30),
            || {
                soak.client("ready", "0", 1, 10)
                    .and_then(|mut p| p.wait(Duration::from_secs(15)))
                    .is_ok_and(|()| {
                        std::fs::read_to_string(soak.dir.join("client-ready.log"))
                            .is_ok_and(|l| l.contains("\"200\": 1"))
                    })
            },
        )?;
        Ok(soak)
    }

    /// The lab's one-request-per-gap client through Envoy.
    fn client(&self, name: &str, gaps: &str, count: u64, max_seconds: u64) -> Result<Proc> {
        let script = self.lab_scripts.join("client.py");
        Proc::spawn(
            &format!("client {name}"),
            Some(&self.pods.front),
            &[
                "python3",
                script.to_str().unwrap(),
                "--host",
                "127.0.0.1",
                "--port",
                "15001",
                "--gaps",
                gaps,
                "--count",
                &count.to_string(),
                "--max-seconds",
                &max_seconds.to_string(),
            ],
            &self.dir.join(format!("client-{name}.log")),
        )
    }

    fn start_daemon(&mut self, n: u8) -> Result<Instant> {
        let listen = DAEMON.to_owned();
        self.daemon = Some(Proc::spawn(
            &format!("conntracer daemon {n}"),
            None,
            &[
                self.conntracer.to_str().unwrap(),
                "daemon",
                "--listen",
                &listen,
                "--reuse-event-min-idle",
                "100ms",
            ],
            &self.dir.join(format!("daemon-{n}.log")),
        )?);
        let addr = self.addr;
        wait_until("the daemon to be ready", Duration::from_secs(30), || {
            scrape::get(addr, "/readyz").is_ok_and(|(code, _)| code == 200)
        })?;
        Ok(Instant::now())
    }

    fn daemon_pid(&self) -> i32 {
        self.daemon.as_ref().map_or(0, Proc::pid)
    }

    fn metric(&self, m: &[scrape::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        scrape::sum(m, name, labels)
    }

    /// The daemon's count of churn connections, with the churn held still
    /// and the daemon given time to drain: (made, counted).
    fn churn_count(&self, load: &Load) -> Result<(u64, f64, Vec<scrape::Sample>)> {
        load.pause_churn();
        std::thread::sleep(Duration::from_millis(1500));
        let made = load.counts.churned.load(Ordering::Relaxed);
        let m = scrape::metrics(self.addr)?;
        let counted = self.metric(
            &m,
            "conntracer_connections_opened_total",
            &[
                ("namespace", NAMESPACE),
                ("pod", "churn-a"),
                ("role", "client"),
            ],
        );
        Ok((made, counted, m))
    }

    fn run(&mut self, seconds: u64) -> Result<Verdict> {
        let mut v = Verdict::default();
        let _stats = crate::bench::BpfStatsSwitch::enable()?;
        let started = Instant::now();
        let mut daemon_started = self.start_daemon(1)?;
        let watched_from = std::time::SystemTime::now();
        let total = Duration::from_secs(seconds);
        let restart_at = total * 2 / 3;
        let p = &self.pods;
        let (churn_b, dns) = (p.churn_b.1.clone(), p.dns.1.clone());
        let (churn_a, churn_b_ns, front) =
            (p.churn_a.clone(), p.churn_b.0.clone(), p.front.clone());
        let churn_addr: SocketAddr = format!("{churn_b}:7000").parse()?;
        let pods = Pods {
            churn_client: &churn_a,
            churn_server: &churn_b_ns,
            churn_addr,
            client: &front,
            // Not the app's pod: what the daemon learns about the app's
            // idle timeout stays the app's own.
            server: &churn_b_ns,
            echo_addr: format!("{churn_b}:7001").parse()?,
            closed_addr: format!("{churn_b}:7002").parse()?,
            dns_server: format!("{dns}:53").parse()?,
            dns_name: DNS_NAME,
        };
        let load = Load::start(&pods, Instant::now() + total + Duration::from_secs(10))?;
        // Envoy's 503s: requests right at the app's idle timeout (the race);
        // each round starts with two longer gaps, so a fresh connection is
        // closed by the app for idleness and the daemon learns that timeout
        // (the evidence `idle_timeout` rests on).
        let mut envoy_client =
            self.client("503", "1.3,1.3,0.93,0.96,0.98,0.99", seconds, seconds)?;
        let mut pooled_client: Option<Proc> = None;
        let mut daemon_n = 1u8;
        let mut before_restart = 0.0;
        let mut last = (Instant::now(), 0.0, 0u64, 0u64);
        last.1 = watch::cpu_seconds(self.daemon_pid());
        let mut next_sample = started + SAMPLE_EVERY;
        let mut next_dns_change = started + SAMPLE_EVERY;
        let mut dns_changes = 0u32;
        let mut restarted = false;
        while started.elapsed() < total {
            if INTERRUPTED.load(Ordering::Relaxed) {
                bail!(
                    "interrupted (SIGINT) after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
            let now = Instant::now();
            if now >= next_dns_change {
                next_dns_change += SAMPLE_EVERY;
                dns_changes += 1;
                let ip = if dns_changes % 2 == 1 {
                    "10.213.241.101"
                } else {
                    "10.213.241.100"
                };
                std::fs::write(&self.hosts, format!("{ip} {DNS_NAME}\n"))?;
                let dnsmasq = self
                    .procs
                    .iter()
                    .find(|p| p.name == "dnsmasq")
                    .context("dnsmasq")?;
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(dnsmasq.pid(), libc::SIGHUP) };
            }
            // A pooled connection opened before the restart, reused after it
            // once the app closed it (8 s idle): a stale keep-alive failure.
            if pooled_client.is_none() && started.elapsed() + Duration::from_secs(2) >= restart_at {
                pooled_client = Some(self.pooled_client()?);
            }
            if !restarted && started.elapsed() >= restart_at {
                restarted = true;
                let (made, counted, m) = self.churn_count(&load)?;
                v.check(
                    counted == made as f64,
                    format!("daemon 1 counted {counted} churn connections of {made} made"),
                );
                let lost = self.metric(&m, "conntracer_events_lost_total", &[]);
                v.check(lost == 0.0, format!("daemon 1 lost {lost} events"));
                before_restart = self.metric(&m, "conntracer_http_503_total", NS);
                std::fs::write(
                    self.dir.join("metrics-1.txt"),
                    scrape::get(self.addr, "/metrics")?.1,
                )?;
                let held = watch::held(self.daemon_pid());
                let killed_at = Instant::now();
                let gap_from = std::time::SystemTime::now();
                self.daemon.as_mut().expect("daemon").kill();
                load.resume_churn();
                self.check_released(&mut v, &held)?;
                daemon_started = self.start_daemon(2)?;
                daemon_n = 2;
                v.restart_seconds = Some(killed_at.elapsed().as_secs_f64());
                v.unwatched = Some((gap_from, std::time::SystemTime::now()));
                let (made, counted, _) = self.churn_count(&load)?;
                v.after_restart_base = (made, counted);
                load.resume_churn();
                let (ns, _) = watch::bpf_totals(&watch::held(self.daemon_pid()));
                let churned = load.counts.churned.load(Ordering::Relaxed);
                last = (
                    Instant::now(),
                    watch::cpu_seconds(self.daemon_pid()),
                    ns,
                    churned,
                );
            }
            if now >= next_sample {
                next_sample += SAMPLE_EVERY;
                let pid = self.daemon_pid();
                let held = watch::held(pid);
                let (bpf_ns, _) = watch::bpf_totals(&held);
                let cpu = watch::cpu_seconds(pid);
                let churned = load.counts.churned.load(Ordering::Relaxed);
                let wall = last.0.elapsed().as_secs_f64();
                let m = scrape::metrics(self.addr).unwrap_or_default();
                let sample = Sample {
                    seconds: started.elapsed().as_secs_f64().round(),
                    daemon: daemon_n,
                    rss_mib: watch::rss_mib(pid),
                    cpu_percent: 100.0 * (cpu - last.1) / wall,
                    bpf_percent: 100.0 * bpf_ns.saturating_sub(last.2) as f64 / 1e9 / wall,
                    tracked_connections: self.metric(&m, "conntracer_tracked_connections", &[]),
                    socket_map_entries: watch::socket_map_entries(&held),
                    events_lost: self.metric(&m, "conntracer_events_lost_total", &[]),
                    churn_per_second: churned.saturating_sub(last.3) as f64 / wall,
                };
                println!("soak: {sample:?}");
                v.samples.push((sample, daemon_started.elapsed()));
                last = (Instant::now(), cpu, bpf_ns, churned);
            }
        }
        // The end: the daemon's count since its start, then the load stops.
        let (made, counted, m) = self.churn_count(&load)?;
        let (base_made, base_counted) = v.after_restart_base;
        v.check(
            counted - base_counted == (made - base_made) as f64,
            format!(
                "daemon 2 counted {} churn connections of {} made since it was ready",
                counted - base_counted,
                made - base_made
            ),
        );
        let lost = self.metric(&m, "conntracer_events_lost_total", &[]);
        v.check(lost == 0.0, format!("daemon 2 lost {lost} events"));
        let counts = load.stop();
        let _ = envoy_client.wait(Duration::from_secs(15));
        if let Some(mut p) = pooled_client {
            let _ = p.wait(Duration::from_secs(30));
        }
        std::thread::sleep(Duration::from_secs(3));
        let m = scrape::metrics(self.addr)?;
        std::fs::write(
            self.dir.join("metrics-2.txt"),
            scrape::get(self.addr, "/metrics")?.1,
        )?;
        self.final_checks(&mut v, &m, before_restart, watched_from, dns_changes)?;
        v.load = json!({
            "churned": counts.churned.load(Ordering::Relaxed),
            "round_trips": counts.round_trips.load(Ordering::Relaxed),
            "refused_connects": counts.refused.load(Ordering::Relaxed),
            "abortive_closes": counts.aborted.load(Ordering::Relaxed),
            "dns_answers": counts.dns_answers.load(Ordering::Relaxed),
            "dns_changes": dns_changes,
            "envoy_503": read_access_log(&self.dir.join("access.log")).iter().filter(|(c, _)| *c == 503).count(),
        });
        v.rss_checks();
        Ok(v)
    }

    fn pooled_client(&self) -> Result<Proc> {
        let script = self.lab_scripts.join("pool_client.py");
        Proc::spawn(
            "pooled client",
            Some(&self.pods.pooled),
            &[
                "python3",
                script.to_str().unwrap(),
                "--name",
                &self.pods.legacy.1,
                "--pool",
                "1",
                "--gap",
                "9",
                "--count",
                "2",
            ],
            &self.dir.join("pooled-client.log"),
        )
    }

    /// After a SIGKILL: the kernel freed every program and map the daemon
    /// held (nothing is pinned), within a few seconds.
    fn check_released(&self, v: &mut Verdict, held: &watch::Held) -> Result<()> {
        let programs: Vec<u32> = held.programs.iter().map(|p| p.0).collect();
        let maps: Vec<u32> = held.maps.iter().map(|m| m.0).collect();
        let released = wait_until(
            "the killed daemon's programs to go",
            Duration::from_secs(10),
            || {
                watch::still_loaded("prog", &programs).is_empty()
                    && watch::still_loaded("map", &maps).is_empty()
            },
        );
        v.check(
            released.is_ok() && !programs.is_empty(),
            format!(
                "after SIGKILL: {} programs and {} maps held, still loaded: programs {:?}, maps {:?}",
                programs.len(),
                maps.len(),
                watch::still_loaded("prog", &programs),
                watch::still_loaded("map", &maps)
            ),
        );
        let pinned = pinned_by_us();
        v.check(pinned.is_empty(), format!("pinned in bpffs: {pinned:?}"));
        Ok(())
    }

    fn final_checks(
        &self,
        v: &mut Verdict,
        m: &[scrape::Sample],
        before_restart: f64,
        watched_from: std::time::SystemTime,
        dns_changes: u32,
    ) -> Result<()> {
        let tracked = self.metric(m, "conntracer_tracked_connections", &[]);
        v.check(
            tracked <= OPEN_AT_END,
            format!("{tracked} connections tracked once the load stopped (at most {OPEN_AT_END} are open)"),
        );
        let seeded = self.metric(m, "conntracer_seeded_connections_total", &[]);
        v.check(
            seeded >= 1.0,
            format!("daemon 2 seeded {seeded} connections open at its start"),
        );
        let pooled = self.metric(
            m,
            "conntracer_connection_failures_total",
            &[
                ("namespace", NAMESPACE),
                ("pod", "pooled"),
                ("cause", "idle_timeout"),
            ],
        );
        v.check(
            pooled >= 1.0,
            format!(
                "failures on the connection pooled before the restart, as idle_timeout: {pooled}"
            ),
        );
        // Every 503 Envoy wrote while a daemon watched is counted once; those
        // begun while none did (a second either side of the gap) may not be.
        let after = self.metric(m, "conntracer_http_503_total", NS);
        let by_cause = |cause| {
            self.metric(
                m,
                "conntracer_http_503_total",
                &[("namespace", NAMESPACE), ("cause", cause)],
            )
        };
        let (unattributed, idle) = (by_cause("unattributed"), by_cause("idle_timeout"));
        let stamp = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
        // From the first daemon's readiness (the readiness checks before may 503).
        let watched_from = stamp(watched_from);
        let envoy: Vec<String> = read_access_log_times(&self.dir.join("access.log"), 503)
            .into_iter()
            .filter(|t| *t >= watched_from)
            .collect();
        let (from, to) = v.unwatched.expect("restarted");
        let (from, to) = (
            stamp(from - Duration::from_secs(1)),
            stamp(to + Duration::from_secs(1)),
        );
        let in_gap = envoy.iter().filter(|t| **t >= from && **t <= to).count() as f64;
        let seen = before_restart + after;
        let total = envoy.len() as f64;
        v.check(
            total > 0.0 && seen <= total && seen + in_gap >= total,
            format!(
                "Envoy wrote {total} 503s ({in_gap} around the restart); the daemons counted {before_restart} before it and {after} after ({idle} of those after as idle_timeout, {unattributed} unattributed)"
            ),
        );
        let changes = self.metric(m, "conntracer_dns_answer_changes_total", NS);
        let malformed = self.metric(
            m,
            "conntracer_dns_payloads_skipped_total",
            &[("reason", "malformed")],
        );
        v.check(
            changes >= 1.0 && malformed == 0.0,
            format!("DNS: {dns_changes} answer changes made, daemon 2 saw {changes}; {malformed} payloads malformed"),
        );
        let expired = self.metric(m, "conntracer_connections_expired_total", &[]);
        v.lines
            .push(format!("connections expired (close missed): {expired}"));
        Ok(())
    }
}

/// START_TIME of each access log line with this response code.
fn read_access_log_times(path: &Path, code: u16) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let time = parts.next()?;
            (parts.next()? == code.to_string()).then(|| time.to_owned())
        })
        .collect()
}

/// bpffs entries whose name says they are ours.
fn pinned_by_us() -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![PathBuf::from("/sys/fs/bpf")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.to_string_lossy().to_lowercase().contains("conntracer") {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
