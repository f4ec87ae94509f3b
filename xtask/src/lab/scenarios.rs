//! The lab scenarios. Each builds its pods, starts the daemon, the app and
//! Envoy, makes bounded traffic, then compares the daemon's view with Envoy's.

use std::time::Duration;

use anyhow::Result;

use super::{
    Lab, Outcome, SETTLE,
    checks::{check_clean, check_fault},
    envoy,
    procs::{Proc, wait_until},
    scrape,
    stage::{Forward, Load, Stage, sidecar, spawn_dnsmasq},
};

mod protocols;

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
    Scenario {
        name: "dns-ttl-idle",
        about: "a plain pooled client resolving by DNS (1 s TTL, never changing) hits the app's idle timeout: idle_timeout, never dns_stale",
        run: protocols::dns_ttl_idle,
    },
    Scenario {
        name: "h2c-keepalive",
        about: "control: h2c sidecar→app with Envoy's keep-alive pings; the app closes idle connections (no request lost): no failure",
        run: protocols::h2c_keepalive,
    },
    Scenario {
        name: "h2c-idle-timeout",
        about: "h2c sidecar→app, the app's idle timeout races Envoy's reuse (503 UC): idle_timeout",
        run: protocols::h2c_idle_timeout,
    },
    Scenario {
        name: "dual-stack-idle",
        about: "IPv4 clients of Envoy on a dual-stack [::] listener, the idle-timeout race behind it: 503s attributed idle_timeout",
        run: protocols::dual_stack_idle,
    },
];

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
    stage
        .procs
        .push(spawn_dnsmasq(&stage.dir, &dns.netns, &hosts, &dns.ip)?);
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
