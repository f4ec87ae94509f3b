//! The lab scenarios. Each builds its pods, starts the daemon, the app and
//! Envoy, makes bounded traffic, then compares the daemon's view with Envoy's.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{
    Lab, Outcome, SETTLE, daemon_addr,
    envoy::{self, Sidecar},
    net::Network,
    procs::{Proc, wait_until},
    prometheus::Prometheus,
    scrape,
};

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&Lab, &Scenario, u8) -> Result<Outcome>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "idle-timeout",
        about: "the app closes idle keep-alive connections after 1 s; Envoy's pool keeps them (503 UC)",
        run: idle_timeout,
    },
    Scenario {
        name: "pod-termination",
        about: "inbound sidecar (iptables redirect) in front of an app that shuts down while traffic keeps coming",
        run: pod_termination,
    },
    Scenario {
        name: "upstream-reset",
        about: "the app resets connections with a request in flight (SO_LINGER 0)",
        run: upstream_reset,
    },
    Scenario {
        name: "app-not-listening",
        about: "the app listens on 127.0.0.1 only; the inbound sidecar forwards to the pod IP",
        run: app_not_listening,
    },
    Scenario {
        name: "dns-change",
        about: "an egress name moves to a new IP; Envoy (classic DNS) and a plain pooled client keep using the old one, which then resets",
        run: dns_change,
    },
    Scenario {
        name: "dns-change-new-dns",
        about: "control: the same change with Envoy's new DNS implementation, which drains connections to a changed address",
        run: dns_change_new_implementation,
    },
    Scenario {
        name: "control",
        about: "no fault: short gaps, the app's timeout far away",
        run: control,
    },
    Scenario {
        name: "control-idle-fixed",
        about: "the idle-timeout race, fixed by an Envoy pool idle timeout below the app's",
        run: control_idle_fixed,
    },
];

/// Everything one scenario runs, stopped and removed when dropped.
struct Stage {
    dir: std::path::PathBuf,
    procs: Vec<Proc>,
    daemon: std::net::SocketAddr,
    /// A real Prometheus scraping the daemon with the shipped alert rules.
    prometheus: Prometheus,
    net: Network,
    /// What happened before the scenario's own traffic (readiness checks):
    /// Envoy log lines and the daemon's samples, subtracted in the checks.
    baseline: (usize, Vec<scrape::Sample>),
}

impl Stage {
    fn new(lab: &Lab, s: &Scenario, n: u8) -> Result<Self> {
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
    fn dashboard_data(&self, lines: &mut Vec<String>) {
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
    fn outbound(
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
    fn inbound(lab: &Lab, s: &Scenario, n: u8, forward: Forward) -> Result<(Self, String, String)> {
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

    fn namespace(&self) -> String {
        self.net
            .frontend
            .netns
            .split('.')
            .next()
            .unwrap()
            .to_owned()
    }

    fn app(&mut self, lab: &Lab, netns: &str, bind: &str, idle_timeout: f64) -> Result<()> {
        let script = lab.scripts.join("app.py");
        let idle = idle_timeout.to_string();
        self.procs.push(Proc::spawn(
            "app",
            Some(netns),
            &[
                "python3",
                script.to_str().unwrap(),
                "--bind",
                bind,
                "--port",
                "8080",
                "--idle-timeout",
                &idle,
                "--max-seconds",
                "120",
            ],
            &self.dir.join("app.log"),
        )?);
        Ok(())
    }

    /// Envoy as Istio's sidecar user (uid 1337).
    fn envoy(&mut self, lab: &Lab, netns: &str, sidecar: &Sidecar) -> Result<()> {
        let config = self.dir.join("envoy.yaml");
        std::fs::write(&config, envoy::config(sidecar))?;
        self.procs.push(Proc::spawn(
            "envoy",
            Some(netns),
            &[
                "setpriv",
                "--reuid=1337",
                "--regid=1337",
                "--clear-groups",
                "--",
                lab.envoy.to_str().unwrap(),
                "-c",
                config.to_str().unwrap(),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--file-flush-interval-msec",
                "100",
            ],
            &self.dir.join("envoy.log"),
        )?);
        Ok(())
    }

    /// Runs the load generator to completion; returns its status counts.
    /// Runs the load generator to completion; returns its status counts.
    fn client(&self, lab: &Lab, load: &Load) -> Result<Value> {
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
    fn wait_serving(&mut self, lab: &Lab, netns: &str, host: &str, port: u16) -> Result<()> {
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

    fn take_baseline(&mut self) -> Result<()> {
        std::thread::sleep(SETTLE);
        self.baseline = (self.access_log().len(), scrape::metrics(self.daemon)?);
        Ok(())
    }

    /// Access log entries of the scenario's own traffic.
    fn scenario_log(&self) -> Vec<(u16, String)> {
        self.access_log()
            .split_off(self.baseline.0.min(self.access_log().len()))
    }

    /// A metric sum since the baseline.
    fn delta(&self, now: &[scrape::Sample], name: &str, want: &[(&str, &str)]) -> f64 {
        scrape::sum(now, name, want) - scrape::sum(&self.baseline.1, name, want)
    }

    fn access_log(&self) -> Vec<(u16, String)> {
        envoy::read_access_log(&self.dir.join("access.log"))
    }

    /// `conntracer diagnose` against the daemon; the report and the metrics
    /// are kept in the scenario's directory for people to read.
    fn diagnose(&self, lab: &Lab) -> Result<Value> {
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
enum Forward {
    /// 127.0.0.1 (Istio before 1.10).
    Loopback,
    /// The pod IP (Istio 1.10 and later).
    PodIp,
}

/// One run of the load generator.
#[derive(Clone, Copy)]
struct Load<'a> {
    netns: &'a str,
    host: &'a str,
    port: u16,
    gaps: &'a str,
    paths: &'a str,
    count: u32,
}

fn sidecar<'a>(
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

/// The common checks of a fault scenario: Envoy's 503s reproduced, at least
/// 95 % of them counted under `cause`, stale failures (if `stale`) or
/// failures under `cause`, and a diagnose finding naming it with a fix.
fn check_fault(
    stage: &Stage,
    lab: &Lab,
    pod: &str,
    cause: &str,
    stale: bool,
    name: &'static str,
) -> Result<Outcome> {
    std::thread::sleep(SETTLE);
    let ns = stage.namespace();
    let log = stage.scenario_log();
    let envoy_503 = log.iter().filter(|(c, _)| *c == 503).count() as f64;
    let mut flags: Vec<String> = log
        .iter()
        .filter(|(c, _)| *c == 503)
        .map(|(_, f)| f.clone())
        .collect();
    flags.sort();
    flags.dedup();
    let m = scrape::metrics(stage.daemon)?;
    let attributed = stage.delta(
        &m,
        "conntracer_http_503_total",
        &[("namespace", &ns), ("pod", pod), ("cause", cause)],
    );
    let all_503 = stage.delta(&m, "conntracer_http_503_total", &[("namespace", &ns)]);
    let failures = stage.delta(
        &m,
        "conntracer_connection_failures_total",
        &[("namespace", &ns), ("cause", cause)],
    );
    let stale_failures = stage.delta(
        &m,
        "conntracer_stale_connection_failures_total",
        &[("namespace", &ns), ("cause", cause)],
    );
    let diagnose = stage.diagnose(lab)?;
    let finding = diagnose["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["cause"] == cause && f["pod"] == pod && f["failures"].as_u64().unwrap_or(0) > 0)
        .cloned();

    let mut lines = vec![
        format!(
            "Envoy access log: {} requests, {envoy_503} x 503 (flags {})",
            log.len(),
            flags.join(",")
        ),
        format!(
            "conntracer_http_503_total{{pod=\"{pod}\",cause=\"{cause}\"}} = {attributed} (all causes: {all_503})"
        ),
        format!(
            "conntracer_connection_failures_total{{cause=\"{cause}\"}} = {failures}, stale = {stale_failures}"
        ),
    ];
    let mut failed = Vec::new();
    let not_reproduced =
        (envoy_503 < 1.0).then(|| "the scenario produced no 503 in Envoy's access log".to_owned());
    if attributed < 0.95 * envoy_503 {
        failed.push(format!(
            "only {attributed} of Envoy's {envoy_503} 503s counted under {cause}"
        ));
    }
    if all_503 > envoy_503 {
        failed.push(format!("counted {all_503} 503s, Envoy wrote {envoy_503}"));
    }
    if failures < 1.0 || (stale && stale_failures < 1.0) {
        failed.push(format!(
            "no {}failure with cause {cause}",
            if stale { "stale " } else { "" }
        ));
    }
    // The shipped alert for this cause fires in a real Prometheus.
    if not_reproduced.is_none() {
        let alert = match cause {
            "idle_timeout" => Some("ConntracerIdleTimeout503s"),
            "pod_terminating" => Some("ConntracerPodTerminating503s"),
            "app_not_listening" => Some("ConntracerAppNotListening503s"),
            _ => None,
        };
        let (alert, labels, count) = match alert {
            Some(a) => (
                a,
                vec![("namespace", ns.as_str()), ("pod", pod)],
                attributed,
            ),
            // Causes without a 503 alert of their own: the stale-failure alert.
            None => (
                "ConntracerStaleConnectionFailures",
                vec![("namespace", ns.as_str()), ("cause", cause)],
                stale_failures,
            ),
        };
        // The alerts count more than two in their window.
        if count <= 2.0 {
            lines.push(format!(
                "Prometheus: {count} counted, below {alert}'s threshold (> 2)"
            ));
        } else {
            match stage
                .prometheus
                .wait_firing(alert, &labels, Duration::from_secs(30))
            {
                Ok(()) => lines.push(format!("Prometheus: {alert} firing")),
                Err(e) => failed.push(format!("Prometheus: {e:#}")),
            }
        }
    }
    stage.dashboard_data(&mut lines);
    match finding {
        Some(f) => {
            lines.push(format!(
                "diagnose: {} — {}",
                f["kind"].as_str().unwrap_or(""),
                f["remedy"]["summary"].as_str().unwrap_or("")
            ));
            if f["remedy"]["yaml"].as_str().unwrap_or("").is_empty() {
                failed.push("the finding has no fix".to_owned());
            }
        }
        None => failed.push(format!(
            "diagnose has no finding with cause {cause} for pod {pod}"
        )),
    }
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced,
    })
}

fn idle_timeout(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let (stage, front) = Stage::outbound(lab, s, n, 1.0, None)?;
    // Warm-up: idle past the app's timeout, so its idle close is seen and learned.
    stage.client(
        lab,
        &Load {
            netns: &front,
            host: "127.0.0.1",
            port: 15001,
            gaps: "1.3",
            paths: "/",
            count: 3,
        },
    )?;
    // Then requests right at the app's timeout: the race.
    let summary = stage.client(
        lab,
        &Load {
            netns: &front,
            host: "127.0.0.1",
            port: 15001,
            gaps: "0.93,0.96,0.98,0.99,1.2",
            paths: "/",
            count: 30,
        },
    )?;
    let mut outcome = check_fault(&stage, lab, "frontend", "idle_timeout", true, s.name)?;
    outcome.lines.insert(0, format!("client: {summary}"));
    Ok(outcome)
}

fn pod_termination(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let (mut stage, front, cart_ip) = Stage::inbound(lab, s, n, Forward::Loopback)?;
    stage.wait_serving(lab, &front, &cart_ip, 8080)?;
    let app = stage
        .procs
        .iter()
        .position(|p| p.name == "app")
        .expect("app started");
    let app_pid = stage.procs[app].pid();
    // Terminate the app 1.5 s into a 4 s stream of requests.
    let terminator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on a child of ours (`ip netns exec` execs the app).
        unsafe { libc::kill(app_pid, libc::SIGTERM) };
    });
    let summary = stage.client(
        lab,
        &Load {
            netns: &front,
            host: &cart_ip,
            port: 8080,
            gaps: "0.1",
            paths: "/",
            count: 40,
        },
    )?;
    terminator.join().expect("terminator");
    let mut outcome = check_fault(&stage, lab, "cart", "pod_terminating", false, s.name)?;
    outcome.lines.insert(0, format!("client: {summary}"));
    Ok(outcome)
}

fn upstream_reset(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let (stage, front) = Stage::outbound(lab, s, n, 30.0, None)?;
    let summary = stage.client(
        lab,
        &Load {
            netns: &front,
            host: "127.0.0.1",
            port: 15001,
            gaps: "0.05",
            paths: "/,/,/reset",
            count: 24,
        },
    )?;
    let mut outcome = check_fault(&stage, lab, "frontend", "peer_reset", true, s.name)?;
    outcome.lines.insert(0, format!("client: {summary}"));
    Ok(outcome)
}

fn app_not_listening(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    // Since Istio 1.10 the inbound sidecar forwards to the pod IP, not 127.0.0.1.
    let (mut stage, front, cart_ip) = Stage::inbound(lab, s, n, Forward::PodIp)?;
    std::thread::sleep(Duration::from_secs(1));
    stage.take_baseline()?;
    let summary = stage.client(
        lab,
        &Load {
            netns: &front,
            host: &cart_ip,
            port: 8080,
            gaps: "0.1",
            paths: "/",
            count: 10,
        },
    )?;
    let mut outcome = check_fault(&stage, lab, "cart", "app_not_listening", false, s.name)?;
    outcome.lines.insert(0, format!("client: {summary}"));
    Ok(outcome)
}

/// Controls: Envoy writes no 503 and conntracer attributes none.
fn check_clean(stage: &Stage, name: &'static str, summary: Value) -> Result<Outcome> {
    std::thread::sleep(SETTLE);
    let ns = stage.namespace();
    let log = stage.scenario_log();
    let envoy_503 = log.iter().filter(|(c, _)| *c == 503).count();
    let m = scrape::metrics(stage.daemon)?;
    let failures = stage.delta(
        &m,
        "conntracer_connection_failures_total",
        &[("namespace", &ns)],
    );
    let http_503 = stage.delta(&m, "conntracer_http_503_total", &[("namespace", &ns)]);
    let opened = stage.delta(
        &m,
        "conntracer_connections_opened_total",
        &[("namespace", &ns)],
    );
    let mut lines = vec![
        format!("client: {summary}"),
        format!(
            "Envoy access log: {} requests, {envoy_503} x 503",
            log.len()
        ),
        format!("conntracer: {opened} connections opened, {failures} failures, {http_503} 503s"),
    ];
    let mut failed = Vec::new();
    if log.is_empty() || opened < 1.0 {
        failed.push("no traffic was seen".to_owned());
    }
    if envoy_503 > 0 {
        failed.push(format!("Envoy wrote {envoy_503} 503s in a control"));
    }
    if failures > 0.0 || http_503 > 0.0 {
        failed.push(format!(
            "{failures} failures and {http_503} 503s attributed in a control"
        ));
    }
    let not_reproduced = None;
    // Give the rules time to evaluate (their `for:` is 5 s here), then none
    // may fire or be pending for this namespace.
    std::thread::sleep(Duration::from_secs(7));
    let alerts: Vec<String> = stage
        .prometheus
        .alerts()?
        .into_iter()
        .filter(|(_, _, l)| l["namespace"] == ns.as_str())
        .map(|(name, state, _)| format!("{name} ({state})"))
        .collect();
    if alerts.is_empty() {
        lines.push("Prometheus: no alert for this namespace".to_owned());
    } else {
        failed.push(format!(
            "Prometheus alerts in a control: {}",
            alerts.join(", ")
        ));
    }
    stage.dashboard_data(&mut lines);
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced,
    })
}

fn control(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let (stage, front) = Stage::outbound(lab, s, n, 5.0, None)?;
    let summary = stage.client(
        lab,
        &Load {
            netns: &front,
            host: "127.0.0.1",
            port: 15001,
            gaps: "0.1,0.3",
            paths: "/",
            count: 30,
        },
    )?;
    check_clean(&stage, s.name, summary)
}

fn control_idle_fixed(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let (stage, front) = Stage::outbound(lab, s, n, 1.0, Some(Duration::from_millis(600)))?;
    let summary = stage.client(
        lab,
        &Load {
            netns: &front,
            host: "127.0.0.1",
            port: 15001,
            gaps: "0.93,0.96,0.98,0.99,1.2",
            paths: "/",
            count: 30,
        },
    )?;
    check_clean(&stage, s.name, summary)
}

const DNS_NAME: &str = "api.lab.example";

fn dns_change(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    dns_scenario(lab, s, n, false)
}

fn dns_change_new_implementation(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    dns_scenario(lab, s, n, true)
}

/// A DNS server (dnsmasq, TTL 1 s) answers `api.lab.example` with server A;
/// mid-run it answers server B; then A resets every connection (iptables),
/// as a load balancer that moved would. Envoy resolves the name itself
/// (LOGICAL_DNS); the plain client (classic run only) resolves per new connection.
fn dns_scenario(lab: &Lab, s: &Scenario, n: u8, new_dns: bool) -> Result<Outcome> {
    let mut stage = Stage::new(lab, s, n)?;
    let dns = stage.net.add_pod("dns", 53)?;
    let server_a = stage.net.add_pod("api-a", 30)?;
    let server_b = stage.net.add_pod("api-b", 31)?;
    let front = stage.net.frontend.netns.clone();

    let hosts = stage.dir.join("hosts");
    std::fs::write(&hosts, format!("{} {DNS_NAME}\n", server_a.ip))?;
    stage.procs.push(Proc::spawn(
        "dnsmasq",
        Some(&dns.netns),
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
            &format!("--listen-address={}", dns.ip),
        ],
        &stage.dir.join("dnsmasq.log"),
    )?);
    // `ip netns exec` gives the pod this resolv.conf.
    let etc = format!("/etc/netns/{front}");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        format!("{etc}/resolv.conf"),
        format!("nameserver {}\noptions timeout:1 attempts:2\n", dns.ip),
    )?;
    for server in [&server_a, &server_b] {
        stage.app(lab, &server.netns, "0.0.0.0", 30.0)?;
    }
    let log = stage.dir.join("access.log");
    let mut sidecar = sidecar("127.0.0.1", 15001, DNS_NAME, None, &log);
    sidecar.dns = Some(envoy::Dns {
        resolver: &dns.ip,
        new_implementation: new_dns,
    });
    stage.envoy(lab, &front, &sidecar)?;
    stage.wait_serving(lab, &front, "127.0.0.1", 15001)?;

    // Load through Envoy (three concurrent callers keep several pooled
    // upstream connections) and, in the classic run, the plain client.
    let mut loads = Vec::new();
    for i in 0..3 {
        let script = lab.scripts.join("client.py");
        loads.push(Proc::spawn(
            &format!("client {i}"),
            Some(&front),
            &[
                "python3",
                script.to_str().unwrap(),
                "--host",
                "127.0.0.1",
                "--port",
                "15001",
                "--gaps",
                "0.2",
                "--count",
                "40",
                "--max-seconds",
                "60",
            ],
            &stage.dir.join(format!("client-{i}.log")),
        )?);
    }
    if !new_dns {
        let script = lab.scripts.join("pool_client.py");
        loads.push(Proc::spawn(
            "pool client",
            Some(&front),
            &[
                "python3",
                script.to_str().unwrap(),
                "--name",
                DNS_NAME,
                "--count",
                "40",
                "--gap",
                "0.2",
            ],
            &stage.dir.join("pool-client.log"),
        )?);
    }
    std::thread::sleep(Duration::from_secs(2));

    // The name moves to B.
    std::fs::write(&hosts, format!("{} {DNS_NAME}\n", server_b.ip))?;
    let dnsmasq = stage
        .procs
        .iter()
        .find(|p| p.name == "dnsmasq")
        .expect("dnsmasq started");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(dnsmasq.pid(), libc::SIGHUP) };
    let switched = std::time::SystemTime::now();
    let ns = stage.namespace();
    let gauge = || {
        scrape::metrics(stage.daemon)
            .map(|m| {
                scrape::sum(
                    &m,
                    "conntracer_open_connections_to_stale_dns",
                    &[("namespace", &ns), ("pod", "frontend")],
                )
            })
            .unwrap_or(0.0)
    };
    let gauge_rose = wait_until(
        "the stale-DNS gauge to rise",
        Duration::from_secs(6),
        || gauge() > 0.0,
    )
    .ok()
    .map(|()| std::time::SystemTime::now());
    let peak_gauge = gauge();
    std::thread::sleep(Duration::from_millis(500));
    // A goes away: every connection to it is reset from now on.
    super::net::netns_exec(
        &server_a.netns,
        &[
            "iptables",
            "-I",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    )?;
    let reset_at = std::time::SystemTime::now();
    for mut load in loads {
        load.wait(Duration::from_secs(90))?;
    }
    std::thread::sleep(SETTLE);

    let m = scrape::metrics(stage.daemon)?;
    let log = stage.scenario_log();
    let envoy_503 = log.iter().filter(|(c, _)| *c == 503).count() as f64;
    let attributed = stage.delta(
        &m,
        "conntracer_http_503_total",
        &[
            ("namespace", &ns),
            ("pod", "frontend"),
            ("cause", "dns_stale"),
        ],
    );
    let all_503 = stage.delta(&m, "conntracer_http_503_total", &[("namespace", &ns)]);
    let failures = stage.delta(
        &m,
        "conntracer_connection_failures_total",
        &[("namespace", &ns), ("cause", "dns_stale")],
    );
    let all_failures = stage.delta(
        &m,
        "conntracer_connection_failures_total",
        &[("namespace", &ns), ("pod", "frontend")],
    );
    let changes = scrape::sum(
        &m,
        "conntracer_dns_answer_changes_total",
        &[("namespace", &ns), ("pod", "frontend"), ("name", DNS_NAME)],
    );
    let diagnose = stage.diagnose(lab)?;
    let finding = diagnose["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["cause"] == "dns_stale")
        .cloned();
    // The first dns_stale failure (the finding also counts the pair's other causes).
    let first_failure = finding
        .as_ref()
        .and_then(|f| f["causes"].as_array())
        .into_iter()
        .flatten()
        .find(|c| c["cause"] == "dns_stale")
        .and_then(|c| c["first_seen"].as_str())
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let secs = |a: std::time::SystemTime, b: std::time::SystemTime| {
        b.duration_since(a)
            .map(|d| d.as_secs_f64())
            .unwrap_or_else(|e| -e.duration().as_secs_f64())
    };
    let mut lines = vec![
        format!(
            "Envoy ({} DNS): {} requests, {envoy_503} x 503",
            if new_dns { "new" } else { "classic" },
            log.len()
        ),
        format!(
            "conntracer_dns_answer_changes_total{{pod=\"frontend\",name=\"{DNS_NAME}\"}} = {changes}"
        ),
        format!(
            "conntracer_open_connections_to_stale_dns rose {} after the DNS switch (peak {peak_gauge})",
            gauge_rose.map_or("never".to_owned(), |t| format!("{:.2}s", secs(switched, t)))
        ),
        format!(
            "conntracer_http_503_total{{cause=\"dns_stale\"}} = {attributed} (all causes: {all_503})"
        ),
        format!(
            "conntracer_connection_failures_total{{cause=\"dns_stale\"}} = {failures} (frontend, all causes: {all_failures})"
        ),
    ];
    let mut failed = Vec::new();
    if changes < 1.0 {
        failed.push("no DNS answer change counted".to_owned());
    }
    // Whether a request of Envoy's meets an old connection after A's reset is a race.
    let not_reproduced = (!new_dns && envoy_503 < 1.0)
        .then(|| "Envoy wrote no 503: no request met an old connection after A's reset".to_owned());
    if new_dns {
        if envoy_503 > 0.0 || all_503 > 0.0 {
            failed.push(format!(
                "new DNS implementation: Envoy wrote {envoy_503} 503s, conntracer counted {all_503}"
            ));
        }
        if all_failures > 0.0 {
            failed.push(format!("{all_failures} failures attributed in the control"));
        }
        return Ok(Outcome {
            name: s.name,
            lines,
            failed,
            not_reproduced,
        });
    }
    match (gauge_rose, first_failure) {
        (Some(rose), Some(first)) => {
            let lead = secs(rose, first);
            lines.push(format!("lead time: the gauge rose {lead:.2}s before the first failure (A reset {:.2}s after it rose)", secs(rose, reset_at)));
            if lead <= 0.0 {
                failed.push("the gauge did not rise before the first failure".to_owned());
            }
        }
        (None, _) => failed.push("the stale-DNS gauge never rose".to_owned()),
        (_, None) => failed.push("diagnose has no dns_stale finding".to_owned()),
    }
    if failures < 1.0 {
        failed.push("no failure attributed to dns_stale".to_owned());
    }
    if attributed < 0.95 * envoy_503 {
        failed.push(format!(
            "only {attributed} of Envoy's {envoy_503} 503s counted under dns_stale"
        ));
    }
    // The alert counts more than two 503s in its window.
    if not_reproduced.is_some() || envoy_503 <= 2.0 {
        lines.push(format!(
            "Prometheus: {envoy_503} 503s, below ConntracerDnsStale503s' threshold (> 2)"
        ));
    } else {
        match stage.prometheus.wait_firing(
            "ConntracerDnsStale503s",
            &[("namespace", ns.as_str()), ("pod", "frontend")],
            Duration::from_secs(30),
        ) {
            Ok(()) => lines.push("Prometheus: ConntracerDnsStale503s firing".to_owned()),
            Err(e) => failed.push(format!("Prometheus: {e:#}")),
        }
    }
    stage.dashboard_data(&mut lines);
    if let Some(f) = &finding {
        lines.push(format!(
            "diagnose: {}",
            f["remedy"]["summary"].as_str().unwrap_or("")
        ));
    }
    Ok(Outcome {
        name: s.name,
        lines,
        failed,
        not_reproduced,
    })
}
