//! One scenario's stage: its pods, the daemon and a Prometheus scraping it,
//! the app and Envoy, the load, and what the checks read back (the access
//! log, metrics deltas, `diagnose`). Everything stops when it is dropped.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{
    Lab, SETTLE, daemon_addr,
    envoy::{self, Sidecar},
    net::Network,
    procs::{Proc, wait_until},
    prometheus::Prometheus,
    scenarios::Scenario,
    scrape,
};

/// Everything one scenario runs, stopped and removed when dropped.
pub(super) struct Stage {
    pub(super) dir: std::path::PathBuf,
    pub(super) procs: Vec<Proc>,
    pub(super) daemon: std::net::SocketAddr,
    /// A real Prometheus scraping the daemon with the shipped alert rules.
    pub(super) prometheus: Prometheus,
    pub(super) net: Network,
    /// What happened before the scenario's own traffic (readiness checks):
    /// Envoy log lines and the daemon's samples, subtracted in the checks.
    pub(super) baseline: (usize, Vec<scrape::Sample>),
}

impl Stage {
    pub(super) fn new(lab: &Lab, s: &Scenario, n: u8) -> Result<Self> {
        let dir = lab.scenario_dir(s.name)?;
        let namespace = format!("lab{n}");
        let net = Network::new(&namespace, n)?;
        let daemon = daemon_addr(n);
        let prometheus = Prometheus::start(
            &dir,
            daemon,
            std::net::SocketAddr::from(([127, 0, 0, 1], 19700 + u16::from(n))),
        )?;
        let mut stage = Stage {
            dir,
            procs: Vec::new(),
            daemon,
            prometheus,
            net,
            baseline: (0, Vec::new()),
        };
        let listen = daemon.to_string();
        let log = stage.dir.join("daemon.log");
        stage.procs.push(Proc::spawn(
            "conntracer daemon",
            None,
            &[
                lab.conntracer.to_str().unwrap(),
                "daemon",
                // Scenarios may run next to a daemon of `cargo xtask run`.
                "--lock-file",
                "none",
                "--listen",
                &listen,
                "--reuse-event-min-idle",
                "100ms",
            ],
            &log,
        )?);
        wait_until("the daemon to be ready", Duration::from_secs(30), || {
            scrape::get(daemon, "/readyz").is_ok_and(|(code, _)| code == 200)
        })?;
        Ok(stage)
    }

    /// Queries every dashboard panel in this scenario's Prometheus and
    /// remembers which returned data (the lab checks all did, somewhere).
    pub(super) fn dashboard_data(&self, lines: &mut Vec<String>) {
        let Ok(queries) = super::prometheus::dashboard_queries() else {
            lines.push("dashboard: cannot read deploy/grafana/conntracer.json".to_owned());
            return;
        };
        let mut seen = super::DASHBOARD_DATA.lock().expect("dashboard lock");
        let mut with_data = 0;
        for (title, expr) in &queries {
            if self.prometheus.query(expr).is_ok_and(|n| n > 0) {
                with_data += 1;
                seen.insert(format!("{title}: {expr}"));
            }
        }
        lines.push(format!(
            "dashboard: {with_data} of {} panel queries returned data",
            queries.len()
        ));
    }

    /// The common outbound set-up: the app in `cart` with its idle timeout,
    /// Envoy in `frontend` on 127.0.0.1:15001 with an optional pool idle timeout,
    /// both serving. Returns the stage and the frontend's netns.
    pub(super) fn outbound(
        lab: &Lab,
        s: &Scenario,
        n: u8,
        app_idle: f64,
        envoy_idle: Option<Duration>,
    ) -> Result<(Self, String)> {
        let mut stage = Stage::new(lab, s, n)?;
        let (front, cart) = (stage.net.frontend.netns.clone(), stage.net.cart.ip.clone());
        let cart_ns = stage.net.cart.netns.clone();
        stage.app(lab, &cart_ns, "0.0.0.0", app_idle)?;
        let log = stage.dir.join("access.log");
        stage.envoy(
            lab,
            &front,
            &sidecar("127.0.0.1", 15001, &cart, envoy_idle, &log),
        )?;
        stage.wait_serving(lab, &front, "127.0.0.1", 15001)?;
        Ok((stage, front))
    }

    /// The common inbound set-up, as Istio does it: iptables redirects TCP for
    /// the cart pod's port 8080 to Envoy on 15006, which forwards to the app
    /// (listening on 127.0.0.1:8080 only). Returns the stage, the frontend's
    /// netns and the cart's IP.
    pub(super) fn inbound(
        lab: &Lab,
        s: &Scenario,
        n: u8,
        forward: Forward,
    ) -> Result<(Self, String, String)> {
        let mut stage = Stage::new(lab, s, n)?;
        let (front, cart_ns, cart_ip) = (
            stage.net.frontend.netns.clone(),
            stage.net.cart.netns.clone(),
            stage.net.cart.ip.clone(),
        );
        stage.net.redirect_inbound(&stage.net.cart, 8080, 15006)?;
        stage.app(lab, &cart_ns, "127.0.0.1", 30.0)?;
        let log = stage.dir.join("access.log");
        let upstream = match forward {
            Forward::Loopback => "127.0.0.1",
            Forward::PodIp => &cart_ip,
        };
        stage.envoy(
            lab,
            &cart_ns,
            &sidecar("0.0.0.0", 15006, upstream, None, &log),
        )?;
        Ok((stage, front, cart_ip))
    }

    pub(super) fn namespace(&self) -> String {
        self.net
            .frontend
            .netns
            .split('.')
            .next()
            .unwrap()
            .to_owned()
    }

    pub(super) fn app(
        &mut self,
        lab: &Lab,
        netns: &str,
        bind: &str,
        idle_timeout: f64,
    ) -> Result<()> {
        let app = App {
            netns,
            bind,
            idle_timeout,
            max_seconds: 120,
        };
        self.procs.push(app.spawn(lab, &self.dir)?);
        Ok(())
    }

    pub(super) fn envoy(&mut self, lab: &Lab, netns: &str, sidecar: &Sidecar) -> Result<()> {
        self.procs
            .push(spawn_envoy(lab, &self.dir, netns, sidecar)?);
        Ok(())
    }

    /// Runs the load generator to completion; returns its status counts.
    pub(super) fn client(&self, lab: &Lab, load: &Load) -> Result<Value> {
        let Load {
            netns,
            host,
            port,
            gaps,
            paths,
            count,
        } = *load;
        let script = lab.scripts.join("client.py");
        let log = self.dir.join("client.log");
        let mut p = Proc::spawn(
            "client",
            Some(netns),
            &[
                "python3",
                script.to_str().unwrap(),
                "--host",
                host,
                "--port",
                &port.to_string(),
                "--gaps",
                gaps,
                "--paths",
                paths,
                "--count",
                &count.to_string(),
                "--max-seconds",
                "90",
            ],
            &log,
        )?;
        p.wait(Duration::from_secs(120))?;
        let out = std::fs::read_to_string(&log)?;
        serde_json::from_str(out.lines().last().unwrap_or("{}")).context("client summary")
    }

    /// Waits until `host:port` answers 200 from `netns` (sidecar and app up),
    /// then takes the baseline the checks subtract.
    pub(super) fn wait_serving(
        &mut self,
        lab: &Lab,
        netns: &str,
        host: &str,
        port: u16,
    ) -> Result<()> {
        wait_until(
            "the sidecar and app to serve",
            Duration::from_secs(30),
            || {
                self.client(
                    lab,
                    &Load {
                        netns,
                        host,
                        port,
                        gaps: "0",
                        paths: "/",
                        count: 1,
                    },
                )
                .is_ok_and(|v| v["status"]["200"].as_u64() == Some(1))
            },
        )?;
        self.take_baseline()
    }

    pub(super) fn take_baseline(&mut self) -> Result<()> {
        std::thread::sleep(SETTLE);
        self.baseline = (self.access_log().len(), scrape::metrics(self.daemon)?);
        Ok(())
    }

    /// Access log entries of the scenario's own traffic.
    pub(super) fn scenario_log(&self) -> Vec<(u16, String)> {
        self.access_log()
            .split_off(self.baseline.0.min(self.access_log().len()))
    }

    /// A metric sum since the baseline.
    pub(super) fn delta(&self, now: &[scrape::Sample], name: &str, want: &[(&str, &str)]) -> f64 {
        scrape::sum(now, name, want) - scrape::sum(&self.baseline.1, name, want)
    }

    pub(super) fn access_log(&self) -> Vec<(u16, String)> {
        envoy::read_access_log(&self.dir.join("access.log"))
    }

    /// `conntracer diagnose` against the daemon; the report and the metrics
    /// are kept in the scenario's directory for people to read.
    pub(super) fn diagnose(&self, lab: &Lab) -> Result<Value> {
        let diagnose = |format: &str| {
            std::process::Command::new(&lab.conntracer)
                .args([
                    "diagnose",
                    "--daemon",
                    &self.daemon.to_string(),
                    "--namespace",
                    &self.namespace(),
                    "--output",
                    format,
                ])
                .output()
        };
        std::fs::write(self.dir.join("diagnose.txt"), diagnose("table")?.stdout)?;
        std::fs::write(
            self.dir.join("metrics.txt"),
            scrape::get(self.daemon, "/metrics")?.1,
        )?;
        let out = diagnose("json")?;
        std::fs::write(self.dir.join("diagnose.json"), &out.stdout)?;
        serde_json::from_slice(&out.stdout).context("diagnose JSON")
    }
}

/// Where the inbound sidecar sends traffic for the app.
#[derive(Clone, Copy)]
pub(super) enum Forward {
    /// 127.0.0.1 (Istio before 1.10).
    Loopback,
    /// The pod IP (Istio 1.10 and later).
    PodIp,
}

/// One run of the load generator.
#[derive(Clone, Copy)]
pub(super) struct Load<'a> {
    pub(super) netns: &'a str,
    pub(super) host: &'a str,
    pub(super) port: u16,
    pub(super) gaps: &'a str,
    pub(super) paths: &'a str,
    pub(super) count: u32,
}

pub(super) fn sidecar<'a>(
    listen: &'a str,
    port: u16,
    upstream: &'a str,
    idle: Option<Duration>,
    log: &'a Path,
) -> Sidecar<'a> {
    Sidecar {
        listen,
        port,
        upstream,
        upstream_port: 8080,
        idle_timeout: idle,
        access_log: log,
        dns: None,
    }
}

/// The lab's HTTP app (`xtask/lab/app.py`) on port 8080 of a pod.
pub(crate) struct App<'a> {
    pub(crate) netns: &'a str,
    pub(crate) bind: &'a str,
    /// Seconds a keep-alive connection may idle before the app closes it.
    pub(crate) idle_timeout: f64,
    pub(crate) max_seconds: u64,
}

impl App<'_> {
    pub(crate) fn spawn(&self, lab: &Lab, dir: &Path) -> Result<Proc> {
        let script = lab.scripts.join("app.py");
        let (idle, max) = (self.idle_timeout.to_string(), self.max_seconds.to_string());
        Proc::spawn(
            "app",
            Some(self.netns),
            &[
                "python3",
                script.to_str().unwrap(),
                "--bind",
                self.bind,
                "--port",
                "8080",
                "--idle-timeout",
                &idle,
                "--max-seconds",
                &max,
            ],
            &dir.join(format!("app-{}.log", self.netns)),
        )
    }
}

/// Envoy as Istio's sidecar user (uid 1337), its config and log in `dir`.
pub(crate) fn spawn_envoy(lab: &Lab, dir: &Path, netns: &str, sidecar: &Sidecar) -> Result<Proc> {
    spawn_envoy_config(lab, dir, netns, "envoy", &envoy::config(sidecar))
}

/// Envoy as the sidecar user with the config text `config`, written to
/// `dir/STEM.yaml`, its log in `dir/STEM.log` (`stem` tells sidecars apart).
pub(crate) fn spawn_envoy_config(
    lab: &Lab,
    dir: &Path,
    netns: &str,
    stem: &str,
    config: &str,
) -> Result<Proc> {
    let path = dir.join(format!("{stem}.yaml"));
    std::fs::write(&path, config)?;
    Proc::spawn(
        &stem.replace('-', " "),
        Some(netns),
        &[
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            "--",
            lab.envoy.to_str().unwrap(),
            "-c",
            path.to_str().context("config path")?,
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--file-flush-interval-msec",
            "100",
        ],
        &dir.join(format!("{stem}.log")),
    )
}

/// dnsmasq in `netns` on `listen`, answering from the `hosts` file with a
/// 1 s TTL (SIGHUP rereads it), its log in `dir`.
pub(crate) fn spawn_dnsmasq(dir: &Path, netns: &str, hosts: &Path, listen: &str) -> Result<Proc> {
    Proc::spawn(
        "dnsmasq",
        Some(netns),
        &[
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--local-ttl=1",
            "--bind-interfaces",
            "--user=root",
            "--log-facility=-",
            &format!("--addn-hosts={}", hosts.display()),
            &format!("--listen-address={listen}"),
        ],
        &dir.join("dnsmasq.log"),
    )
}
