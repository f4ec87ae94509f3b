//! `conntracer daemon` as a process: endpoints, metrics from real traffic,
//! configuration errors, and a clean SIGTERM.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::{
    apiserver::{ENDPOINT_SLICES, FakeApiServer, PODS, SERVICES, pod, service, slice},
    http::{get, metric},
    netns::PodPair,
    require_root,
};

/// A conntracer process serving HTTP on `addr` (`daemon`, or `trace --listen`).
struct Serving {
    child: Child,
}

impl Serving {
    fn start(addr: SocketAddr, extra: &[&str]) -> Self {
        Self::spawn(
            addr,
            &[
                "daemon",
                "--lock-file",
                "none",
                "--listen",
                &addr.to_string(),
            ],
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
    let left = support::tracer::programs_left_loaded(&ids);
    assert!(left.is_empty(), "programs left loaded: {left:?} of {ids:?}");
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

/// The daemon with pods named by a (stand-in) Kubernetes API: the test
/// namespaces hold the pods' IPs; a pod on another node is terminating.
#[test]
fn kubernetes_names_pods_peers_and_terminating_pods_elsewhere() {
    require_root();
    let pair = PodPair::new();
    let (client_ip, server_ip) = (pair.client_v4.to_string(), pair.server_v4.to_string());
    // The ledger pod "on another node": an address the server namespace
    // answers for (a reset: nothing listens), which only the API names.
    let ledger_ip = server_ip.rsplit_once('.').unwrap().0.to_owned() + ".50";
    pair.server
        .exec(&["addr", "add", &format!("{ledger_ip}/32"), "dev", "lo"]);
    let token = "daemon-token";
    let api = FakeApiServer::start(token);
    api.put(
        PODS,
        pod("shop", "frontend-7d9f8-a1", "f1", &client_ip, "node-t", 0),
    );
    api.put(
        PODS,
        pod("shop", "cart-7d9f8-b1", "c1", &server_ip, "node-t", 0),
    );
    // The ledger runs normally at first.
    api.put(
        PODS,
        pod("pay", "ledger-7d9f8-l1", "l1", &ledger_ip, "node-b", 0),
    );
    // The Service exposes the pods' 8443 as 443 ("https"), as its slices say.
    let ledger_service = || {
        let mut svc = service("pay", "ledger", "10.96.7.7");
        svc.spec.as_mut().unwrap().ports = Some(vec![k8s_openapi::api::core::v1::ServicePort {
            name: Some("https".into()),
            port: 443,
            target_port: Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into()),
            ),
            ..Default::default()
        }]);
        svc
    };
    let ledger_slice = |terminating| {
        let mut s = slice("pay", "ledger", &ledger_ip, terminating);
        s.ports = Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some("https".into()),
            port: Some(8443),
            ..Default::default()
        }]);
        s
    };
    api.put(SERVICES, ledger_service());
    api.put(ENDPOINT_SLICES, ledger_slice(false));
    let kubeconfig = api.kubeconfig(token);

    let addr: SocketAddr = "127.0.0.1:19463".parse().unwrap();
    let kubeconfig_arg = kubeconfig.arg();
    let _daemon = Serving::start(
        addr,
        &["--kubeconfig", &kubeconfig_arg, "--node-name", "node-t"],
    );

    let listener = pair.server.run("ct-server", {
        let server = pair.server_v4;
        move || TcpListener::bind((server, 8080)).unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = [0u8; 4];
        conn.read_exact(&mut req).unwrap();
        conn.write_all(b"done").unwrap();
    });
    let cart = SocketAddr::new(pair.server_v4, 8080);
    let mut client = pair
        .client
        .run("ct-client", move || TcpStream::connect(cart).unwrap());
    client.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).unwrap();
    server.join().unwrap();
    drop(client);
    let ledger: SocketAddr = format!("{ledger_ip}:8443").parse().unwrap();
    let refused = || {
        assert!(
            pair.client
                .run("ct-client", move || TcpStream::connect(ledger))
                .is_err()
        )
    };
    // Refused while the ledger is not terminating: not `pod_terminating`.
    refused();
    metrics_with_a_failure(addr, &[("peer", "pay/ledger"), ("cause", "unknown")]);
    // Then its deletion is requested and its endpoint terminates, while the
    // daemon runs: the next refusal is `pod_terminating`.
    // As the API server does it: deletionTimestamp is the deadline (request
    // + grace period), deletionGracePeriodSeconds the grace period.
    let mut deleting = pod("pay", "ledger-7d9f8-l1", "l1", &ledger_ip, "node-b", 0);
    let deadline = std::time::SystemTime::now() + Duration::from_secs(29);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::try_from(deadline).unwrap(),
        ));
    deleting.metadata.deletion_grace_period_seconds = Some(30);
    api.put(PODS, deleting);
    api.put(ENDPOINT_SLICES, ledger_slice(true));
    std::thread::sleep(Duration::from_millis(500));
    refused();

    let body = metrics_with_a_failure(
        addr,
        &[("peer", "pay/ledger"), ("cause", "pod_terminating")],
    );
    let opened = metric(
        &body,
        "conntracer_connections_opened_total",
        &[
            ("namespace", "shop"),
            ("pod", "frontend-7d9f8-a1"),
            ("workload", "frontend"),
            ("role", "client"),
        ],
    );
    assert!(opened >= 1.0, "{body}");
    assert_eq!(
        metric(
            &body,
            "conntracer_connections_opened_total",
            &[
                ("pod", "cart-7d9f8-b1"),
                ("workload", "cart"),
                ("role", "server")
            ],
        ),
        1.0,
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "conntracer_connection_failures_total",
            &[
                ("pod", "frontend-7d9f8-a1"),
                ("peer", "pay/ledger"),
                ("cause", "pod_terminating"),
            ],
        ),
        1.0,
        "a terminating pod on another node: {body}"
    );
    assert!(body.contains("conntracer_kubernetes_synced 1"), "{body}");
    assert!(!body.contains("ctTAG"), "no netns names");

    let (code, findings) = get(addr, "/findings?namespace=shop").unwrap();
    assert_eq!(code, 200);
    let findings: serde_json::Value = serde_json::from_str(&findings).unwrap();
    let finding = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["cause"] == "pod_terminating")
        .unwrap_or_else(|| panic!("{findings}"));
    assert_eq!(finding["peer"], "pay/ledger");
    let causes: Vec<&str> = finding["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["cause"].as_str())
        .collect();
    assert_eq!(causes, ["pod_terminating", "unknown"], "{finding}");
    let evidence = &finding["samples"][1]["evidence"];
    assert!(evidence["peer_terminating_since"].is_string(), "{evidence}");
    assert!(
        finding["remedy"]["yaml"]
            .as_str()
            .unwrap()
            .contains("host: ledger.pay.svc.cluster.local"),
        "{finding}"
    );
    assert!(
        finding["remedy"]["yaml"]
            .as_str()
            .unwrap()
            .contains("number: 443"),
        "the Service's port (a named targetPort), not the pod's 8443: {finding}"
    );
    // diagnose against this daemon, as a user would; both kept as examples.
    let out = Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .args([
            "diagnose",
            "--daemon",
            &addr.to_string(),
            "--namespace",
            "shop",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("connection failures — cause: pod_terminating")
            && report.contains("pod shop/frontend-7d9f8-a1 (outbound) → pay/ledger")
            && report.contains("by cause: pod_terminating 1"),
        "{report}"
    );
    let examples = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-example");
    std::fs::create_dir_all(&examples).unwrap();
    std::fs::write(examples.join("metrics.txt"), &body).unwrap();
    std::fs::write(examples.join("diagnose.txt"), report.as_bytes()).unwrap();
}

/// The cgroup v2 hierarchy's mount point.
fn cgroup2_root() -> std::path::PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(2) == Some(&"cgroup2")).then(|| cols[1].into())
        })
        .expect("cgroup v2 mounted")
}

/// A pod cgroup as kubelet's systemd driver lays it out, removed on drop.
struct PodCgroup {
    top: std::path::PathBuf,
    leaf: std::path::PathBuf,
}

impl PodCgroup {
    fn new(uid: &str) -> Self {
        let top = cgroup2_root().join(format!("ct-test-{}", std::process::id()));
        let leaf = top.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-0123abcd.scope",
            uid.replace('-', "_")
        ));
        std::fs::create_dir_all(&leaf).unwrap();
        Self { top, leaf }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // Leaves first: cgroup directories are removed with rmdir only.
        let mut dir = self.leaf.clone();
        while dir.starts_with(&self.top) {
            let _ = std::fs::remove_dir(&dir);
            if !dir.pop() {
                break;
            }
        }
    }
}

/// A hostNetwork pod shares the host's network namespace: its cgroup names it.
#[test]
fn host_network_pods_are_named_by_their_cgroup() {
    require_root();
    let uid = "1f0c2a4e-5b6d-4e8f-9a0b-1c2d3e4f5a6b";
    let cgroup = PodCgroup::new(uid);
    let token = "hn-token";
    let api = FakeApiServer::start(token);
    let mut agent = pod(
        "kube-system",
        "node-agent-x9",
        uid,
        "10.255.0.1",
        "node-t",
        0,
    );
    agent.metadata.owner_references.as_mut().unwrap()[0].kind = "DaemonSet".into();
    agent.metadata.owner_references.as_mut().unwrap()[0].name = "node-agent".into();
    agent.spec.as_mut().unwrap().host_network = Some(true);
    api.put(PODS, agent);
    let kubeconfig = api.kubeconfig(token);
    let addr: SocketAddr = "127.0.0.1:19465".parse().unwrap();
    let kubeconfig_arg = kubeconfig.arg();
    let _daemon = Serving::start(
        addr,
        &["--kubeconfig", &kubeconfig_arg, "--node-name", "node-t"],
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "echo $$ > {procs} && exec python3 -c 'import socket,time; s=socket.create_connection((\"127.0.0.1\", {port})); s.sendall(b\"x\"); time.sleep(0.3)'",
        procs = cgroup.leaf.join("cgroup.procs").display()
    );
    let mut agent = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut byte = [0u8; 1];
    conn.read_exact(&mut byte).unwrap();
    assert!(agent.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let labels = [
        ("namespace", "kube-system"),
        ("pod", "node-agent-x9"),
        ("workload", "node-agent"),
        ("role", "client"),
    ];
    loop {
        let (_, body) = get(addr, "/metrics").unwrap();
        if metric(&body, "conntracer_connections_opened_total", &labels) >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's connection not named:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn not_ready_until_kubernetes_has_synced() {
    require_root();
    let api = FakeApiServer::start("t");
    api.forbid(ENDPOINT_SLICES);
    let kubeconfig = api.kubeconfig("t");
    let addr: SocketAddr = "127.0.0.1:19464".parse().unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .args([
            "daemon",
            "--lock-file",
            "none",
            "--listen",
            &addr.to_string(),
        ])
        .args(["--node-name", "n"])
        .arg("--kubeconfig")
        .arg(&kubeconfig.path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Some(answer) = get(addr, "/readyz") {
            break answer;
        }
        assert!(Instant::now() < deadline, "daemon not serving");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(1));
    let (code, body) = get(addr, "/readyz").unwrap_or(answer);
    let (_, metrics) = get(addr, "/metrics").unwrap();
    let _ = daemon.kill();
    let out = daemon.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("waiting for the first sync with the Kubernetes API"),
        "{body}"
    );
    assert!(
        metrics.contains("conntracer_kubernetes_synced 0"),
        "{metrics}"
    );
    assert!(
        stderr.contains("cannot list resource \"endpointslices\""),
        "the 403 is logged with the permission it lacks: {stderr}"
    );
}

/// What a DaemonSet passes: `--listen=$(POD_IP):9477` (an IPv6 pod IP has
/// no brackets), and `/findings` may be turned off.
#[test]
fn listen_on_a_bare_ipv6_pod_ip_with_findings_off() {
    require_root();
    let addr: SocketAddr = "[::1]:19466".parse().unwrap();
    let _daemon = Serving::spawn(
        addr,
        &["daemon", "--lock-file", "none", "--listen", "::1:19466"],
        &["--findings", "false"],
        Stdio::null(),
    );
    let (code, body) = get(addr, "/findings").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("/findings is turned off"), "{body}");
    let (code, _) = get(addr, "/metrics").unwrap();
    assert_eq!(code, 200);
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

/// Connections whose close event was lost (a full ring buffer) do not stay
/// in the daemon's table: its audit finds the kernel no longer tracks their
/// sockets and drops them, counted in `connections_expired_total`.
#[test]
fn connections_whose_close_was_lost_are_expired() {
    require_root();
    let pair = PodPair::new();
    let addr: SocketAddr = "127.0.0.1:19481".parse().unwrap();
    // One page of ring buffer holds about a dozen records.
    let daemon = Serving::start(addr, &["--ring-bytes", "4096"]);
    let server_ip = pair.server_v4;
    let listener = pair.server.run("ct-server", move || {
        TcpListener::bind((server_ip, 8080)).unwrap()
    });
    let target = SocketAddr::new(server_ip, 8080);
    const HELD: usize = 10;
    let mut held = Vec::new();
    for _ in 0..HELD {
        let client = pair
            .client
            .run("ct-client", move || TcpStream::connect(target).unwrap());
        let (server, _) = listener.accept().unwrap();
        held.push((client, server));
        // Slow enough for the daemon to drain each opening.
        std::thread::sleep(Duration::from_millis(150));
    }
    let ns = pair.namespace.clone();
    let tracked_ours = |body: &str| {
        metric(
            body,
            "conntracer_connections_opened_total",
            &[("namespace", &ns), ("role", "client")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(addr, "/metrics").unwrap();
        if tracked_ours(&body) >= HELD as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "openings not seen:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The reader frozen: 100 throwaway connections fill the ring, then the
    // held ones close and their close events have no room.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGSTOP) };
    for _ in 0..100 {
        let client = pair
            .client
            .run("ct-client", move || TcpStream::connect(target).unwrap());
        let (server, _) = listener.accept().unwrap();
        drop((client, server));
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGCONT) };

    // Two audit rounds (10 s apart) at most, plus a drain.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(45);
    let body = loop {
        let (_, body) = get(addr, "/metrics").unwrap();
        // At least one: a socket address the kernel reuses for a later
        // connection takes its stale entry over (and closes it) first.
        if metric(&body, "conntracer_connections_expired_total", &[]) >= 1.0 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "stuck connections not expired within 45 s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let lost = metric(&body, "conntracer_events_lost_total", &[]);
    let expired = metric(&body, "conntracer_connections_expired_total", &[]);
    println!(
        "lost {lost} events; {expired} connections expired {:.1} s after the reader resumed",
        started.elapsed().as_secs_f64()
    );
    assert!(
        lost >= 2.0 * HELD as f64,
        "the held closes were lost: {lost}"
    );
}
