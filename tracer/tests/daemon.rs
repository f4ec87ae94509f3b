//! `conntracer daemon` as a process: endpoints, metrics from real traffic,
//! configuration errors, and a clean SIGTERM.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{netns::PodPair, require_root};

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_owned(),
    ))
}

/// A conntracer process serving HTTP on `addr` (`daemon`, or `trace --listen`).
struct Serving {
    child: Child,
}

impl Serving {
    fn start(addr: SocketAddr, extra: &[&str]) -> Self {
        Self::spawn(
            addr,
            &["daemon", "--listen", &addr.to_string()],
            extra,
            Stdio::null(),
        )
    }

    fn spawn(addr: SocketAddr, args: &[&str], extra: &[&str], stdout: Stdio) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_conntracer"))
            .args(args)
            .args(extra)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start conntracer");
        let serving = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(addr, "/readyz").is_none_or(|(code, _)| code != 200) {
            assert!(Instant::now() < deadline, "not ready within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `/metrics` once it counts a failure with these labels (10 s at most).
fn metrics_with_a_failure(addr: SocketAddr, labels: &[(&str, &str)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(addr, "/metrics").unwrap();
        if metric(&body, "conntracer_connection_failures_total", labels) >= 1.0 {
            return body;
        }
        assert!(Instant::now() < deadline, "no failure counted:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

#[test]
fn metrics_findings_and_a_clean_sigterm() {
    require_root();
    let pair = PodPair::new();
    let addr: SocketAddr = "127.0.0.1:19461".parse().unwrap();
    let mut daemon = Serving::start(addr, &[]);

    let (code, body) = get(addr, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    // A server that closes idle keep-alive connections after 300 ms, and a refused connect.
    let server_ip = pair.server_v4;
    let listener = pair.server.run("ct-server", move || {
        TcpListener::bind((server_ip, 8080)).unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut req = [0u8; 4];
        while conn.read_exact(&mut req).is_ok() {
            conn.write_all(b"done").unwrap();
        }
    });
    let target = SocketAddr::new(server_ip, 8080);
    let mut client = pair
        .client
        .run("ct-client", move || TcpStream::connect(target).unwrap());
    let mut reply = [0u8; 4];
    client.write_all(b"ping").unwrap();
    client.read_exact(&mut reply).unwrap();
    server.join().unwrap();
    drop(client);
    let refused = SocketAddr::new(server_ip, 9);
    assert!(
        pair.client
            .run("ct-client", move || TcpStream::connect(refused))
            .is_err()
    );

    let ns = pair.namespace.clone();
    let body = metrics_with_a_failure(addr, &[("namespace", &ns)]);
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    let opened = metric(
        &body,
        "conntracer_connections_opened_total",
        &[("namespace", &ns), ("pod", "client"), ("role", "client")],
    );
    assert_eq!(opened, 1.0, "{body}");
    assert_eq!(
        metric(
            &body,
            "conntracer_connections_opened_total",
            &[("namespace", &ns), ("pod", "server"), ("role", "server")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &body,
            "conntracer_connection_failures_total",
            &[
                ("namespace", &ns),
                ("pod", "client"),
                ("peer", &format!("{ns}/server"))
            ]
        ),
        1.0,
        "the refused connect, peer labelled by pod: {body}"
    );
    assert_eq!(
        metric(
            &body,
            "conntracer_resets_total",
            &[
                ("namespace", &ns),
                ("side", "sent"),
                ("reason", "NO_SOCKET")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &body,
            "conntracer_peer_idle_close_seconds_count",
            &[("namespace", &ns), ("pod", "client")]
        ),
        1.0
    );
    let idle_sum = metric(
        &body,
        "conntracer_peer_idle_close_seconds_sum",
        &[("namespace", &ns), ("pod", "client")],
    );
    assert!(
        (idle_sum - 0.3).abs() < 0.05,
        "learned the server's 300 ms timeout: {idle_sum}"
    );
    for name in [
        "conntracer_events_lost_total",
        "conntracer_tracked_connections",
        "conntracer_map_evictions_total",
        "conntracer_build_info",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    assert!(body.contains("conntracer_build_info{version=\""));

    let (code, findings) = get(addr, &format!("/findings?namespace={ns}")).unwrap();
    assert_eq!(code, 200);
    let findings: serde_json::Value = serde_json::from_str(&findings).unwrap();
    let kinds: Vec<&str> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"idle_timeout_mismatch"), "{findings}");
    assert!(kinds.contains(&"connection_failures"), "{findings}");

    // SIGTERM: stop serving, detach, exit 0 within a few seconds.
    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "daemon did not exit within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(
        get(addr, "/healthz").is_none(),
        "no more scrapes after exit"
    );
    let mut stderr = String::new();
    daemon
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let ids: Vec<u32> = stderr
        .split("program ids ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.split(',').filter_map(|i| i.parse().ok()).collect())
        .unwrap_or_default();
    assert!(!ids.is_empty(), "{stderr}");
    let loaded: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect();
    assert!(
        ids.iter().all(|id| !loaded.contains(id)),
        "programs left loaded: {ids:?}"
    );
}

#[test]
fn trace_serves_metrics_and_findings_with_listen() {
    require_root();
    let pair = PodPair::new();
    let addr: SocketAddr = "127.0.0.1:19462".parse().unwrap();
    // A bare number is seconds.
    let mut trace = Serving::spawn(
        addr,
        &["trace", "--duration", "20", "--output", "json"],
        &[
            "--namespace",
            &pair.namespace,
            "--listen",
            &addr.to_string(),
        ],
        Stdio::piped(),
    );
    let refused = SocketAddr::new(pair.server_v4, 9);
    assert!(
        pair.client
            .run("ct-client", move || TcpStream::connect(refused))
            .is_err()
    );
    let ns = pair.namespace.clone();
    let body = metrics_with_a_failure(addr, &[("namespace", &ns), ("pod", "client")]);
    assert!(
        body.contains("conntracer_records_skipped_total{reason=\"short\"} 0"),
        "{body}"
    );
    let (code, findings) = get(addr, &format!("/findings?namespace={ns}")).unwrap();
    assert_eq!(code, 200);
    let findings: serde_json::Value = serde_json::from_str(&findings).unwrap();
    assert_eq!(findings["findings"][0]["pod"], "client", "{findings}");
    assert_eq!(
        findings["findings"][0]["samples"][0]["end"],
        "connect_refused"
    );
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(trace.child.id() as i32, libc::SIGINT) };
    let mut stdout = String::new();
    trace
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = trace.child.wait().unwrap();
    assert!(status.success());
    let failure = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == "failure")
        .expect("the failure printed too");
    assert_eq!(failure["end"], "connect_refused");
    // The connecting thread: its own id, in this test process.
    assert_eq!(failure["pid"], std::process::id());
    assert_ne!(failure["tid"], failure["pid"], "{failure}");
}

fn daemon_error(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .arg("daemon")
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configuration_names_the_key_or_flag() {
    let dir = std::env::temp_dir().join(format!("conntracer-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let unknown = file(
        "unknown.toml",
        "listen = \"127.0.0.1:9999\"\nidle_timeot = \"3s\"\n",
    );
    let err = daemon_error(&["--config", &unknown]);
    assert!(err.contains("unknown field `idle_timeot`"), "{err}");
    let bad_duration = file("duration.toml", "attribution_window = \"soon\"\n");
    let err = daemon_error(&["--config", &bad_duration]);
    assert!(err.contains("key `attribution_window`"), "{err}");
    let bad_cidr = file("cidr.toml", "cluster_cidrs = [\"10.0.0.0/33\"]\n");
    let err = daemon_error(&["--config", &bad_cidr]);
    assert!(err.contains("cluster_cidrs"), "{err}");
    let err = daemon_error(&["--config", "/nonexistent/conntracer.toml"]);
    assert!(
        err.contains("cannot read config file /nonexistent/conntracer.toml"),
        "{err}"
    );
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the OS error once: {err}"
    );
    let err = daemon_error(&["--peer-cap", "0"]);
    assert!(err.contains("--peer-cap"), "{err}");
    let err = daemon_error(&["--listen", "nonsense"]);
    assert!(err.contains("--listen"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
