//! `conntracer trace` against the real kernel: pods are network namespaces
//! made here, traffic is real TCP between them, and the tracer runs as its
//! own process with JSON output.

mod support;

use std::{
    io::{Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    netns::PodPair,
    require_root,
    tracer::{TraceSession, dump, select},
};
use tracer::kernel::privileges::{Capabilities, KernelPolicy};

const PORT: u16 = 8080;

fn listen(pair: &PodPair, ip: IpAddr) -> TcpListener {
    pair.server.run("ct-server", move || {
        TcpListener::bind(SocketAddr::new(ip, PORT)).expect("bind")
    })
}

fn connect(pair: &PodPair, to: SocketAddr) -> std::io::Result<TcpStream> {
    pair.client.run("ct-client", move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
}

fn closes_with_port(events: &[Value], port: u16) -> usize {
    select(events, "close", |e| {
        e["remote"].as_str().unwrap().ends_with(&format!(":{port}"))
    })
    .len()
}

fn port_of(addr: &Value) -> u16 {
    addr.as_str().unwrap().parse::<SocketAddr>().unwrap().port()
}

/// The close event of the connection whose local address is `local`.
fn close_at<'a>(events: &'a [Value], local: &SocketAddr) -> &'a Value {
    let found = select(events, "close", |e| e["local"] == local.to_string());
    assert_eq!(found.len(), 1, "one close for {local}:\n{}", dump(events));
    found[0]
}

fn has_message_tracepoints() -> bool {
    std::path::Path::new("/sys/kernel/tracing/events/sock/sock_send_length").exists()
}

fn has_kernel_reset_reasons() -> bool {
    std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .is_ok_and(|f| f.contains(" reason;"))
}

#[test]
fn close_started_by_either_side() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let listener = listen(&pair, pair.server_v4);
    let server_addr = SocketAddr::new(pair.server_v4, PORT);

    // A: the client closes first.
    let a = connect(&pair, server_addr).unwrap();
    let (mut a_srv, _) = listener.accept().unwrap();
    (&a).write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    a_srv.read_exact(&mut buf).unwrap();
    let a_local = a.local_addr().unwrap();
    drop(a);
    assert_eq!(
        a_srv.read(&mut buf).unwrap(),
        0,
        "EOF after the client's FIN"
    );
    drop(a_srv);

    // B: the server closes first.
    let mut b = connect(&pair, server_addr).unwrap();
    let (b_srv, _) = listener.accept().unwrap();
    let b_local = b.local_addr().unwrap();
    b_srv.shutdown(Shutdown::Both).unwrap();
    drop(b_srv);
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    drop(b);

    trace.wait_for("4 closes", |ev| {
        closes_with_port(ev, PORT) == 2 && select(ev, "close", |_| true).len() >= 4
    });
    drop(listener);
    let events = trace.stop();

    let me = std::process::id();
    for (local, client_end, server_end) in [
        (a_local, "local_close", "peer_close"),
        (b_local, "peer_close", "local_close"),
    ] {
        let client = close_at(&events, &local);
        assert_eq!(client["end"], client_end, "{client}");
        assert_eq!(
            (client["namespace"].as_str(), client["pod"].as_str()),
            (Some(pair.namespace.as_str()), Some("client"))
        );
        assert_eq!(
            (client["role"].as_str(), client["comm"].as_str()),
            (Some("client"), Some("ct-client"))
        );
        assert_eq!(client["pid"], me);
        assert_eq!(client["remote"], server_addr.to_string());
        assert_eq!(client["family"], "ipv4");

        let server = select(&events, "close", |e| e["remote"] == local.to_string());
        assert_eq!(server.len(), 1, "{}", dump(&events));
        let server = server[0];
        assert_eq!(server["end"], server_end, "{server}");
        assert_eq!(
            (server["pod"].as_str(), server["role"].as_str()),
            (Some("server"), Some("server"))
        );
        assert_eq!(
            server["comm"], "ct-server",
            "accepted sockets inherit the listener's owner"
        );
        assert_eq!(server["local"], server_addr.to_string());
        assert_ne!(server["netns"], client["netns"]);

        // Opening edges were reported too.
        assert_eq!(
            select(&events, "connect", |e| e["local"] == local.to_string()).len(),
            1
        );
        assert_eq!(
            select(&events, "accept", |e| e["remote"] == local.to_string()).len(),
            1
        );
    }
    let listens = select(&events, "listen", |e| port_of(&e["local"]) == PORT);
    assert_eq!(listens.len(), 1, "{}", dump(&events));
    assert_eq!(
        (listens[0]["pod"].as_str(), listens[0]["comm"].as_str()),
        (Some("server"), Some("ct-server"))
    );
}

#[test]
fn refused_connect_and_the_reset_that_refused_it() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let closed_port = SocketAddr::new(pair.server_v4, 9);
    let err = connect(&pair, closed_port).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    trace.wait_for("refused connect", |ev| {
        !select(ev, "close", |e| e["end"] == "connect_refused").is_empty()
            && select(ev, "reset", |_| true).len() >= 2
            && !select(ev, "failure", |_| true).is_empty()
    });
    let events = trace.stop();
    let close = select(&events, "close", |e| e["remote"] == closed_port.to_string());
    assert_eq!(close.len(), 1, "{}", dump(&events));
    assert_eq!(close[0]["end"], "connect_refused");
    assert_eq!(close[0]["error"], "ECONNREFUSED");
    assert_eq!(
        (close[0]["pod"].as_str(), close[0]["comm"].as_str()),
        (Some("client"), Some("ct-client"))
    );
    assert_ne!(port_of(&close[0]["local"]), 0);

    // The analysis turns it into a failure, with its cause and evidence.
    let failure = select(&events, "failure", |e| {
        e["remote"] == closed_port.to_string()
    });
    assert_eq!(failure.len(), 1, "{}", dump(&events));
    assert_eq!(failure[0]["end"], "connect_refused");
    assert_eq!(
        failure[0]["cause"], "unknown",
        "another pod, never seen listening"
    );
    assert_eq!(failure[0]["peer"], format!("{}/server", pair.namespace));
    assert_eq!(failure[0]["evidence"]["peer_close"], "refused");
    assert_eq!(failure[0]["stale"], false);

    let received = select(&events, "reset", |e| e["side"] == "received");
    assert_eq!(received.len(), 1, "{}", dump(&events));
    assert_eq!(
        (received[0]["pod"].as_str(), received[0]["state"].as_str()),
        (Some("client"), Some("SYN_SENT"))
    );
    assert_eq!(received[0]["remote"], closed_port.to_string());
    assert_ne!(
        port_of(&received[0]["local"]),
        0,
        "the refused socket's port is known"
    );

    let sent = select(&events, "reset", |e| e["side"] == "sent");
    assert_eq!(sent.len(), 1, "{}", dump(&events));
    assert_eq!(
        sent[0]["pod"], "server",
        "a reset with no socket belongs to the receiving pod"
    );
    assert_eq!(sent[0]["local"], closed_port.to_string());
    assert_eq!(sent[0]["remote"], received[0]["local"]);
    // Named by the kernel (6.10+), or inferred from the packet before that.
    assert_eq!(sent[0]["reason"], "NO_SOCKET", "{}", dump(&events));
    let inferred = !has_kernel_reset_reasons() || forced_source("no_socket_resets=packets");
    assert_eq!(
        sent[0]["reason_inferred"].as_bool(),
        inferred.then_some(true),
        "{}",
        dump(&events)
    );
}

/// The test runs with an older kernel's source forced (`CONNTRACER_FORCE_SOURCES`).
fn forced_source(source: &str) -> bool {
    std::env::var("CONNTRACER_FORCE_SOURCES")
        .is_ok_and(|v| v.split(',').any(|s| s.trim() == source))
}

#[test]
fn so_linger_zero_resets_the_connection() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let listener = listen(&pair, pair.server_v4);
    let client = connect(&pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    (&client).write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    let client_local = client.local_addr().unwrap();

    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and option struct.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    drop(client);
    let err = server.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    drop(server);

    trace.wait_for("both closes", |ev| {
        select(ev, "close", |e| {
            port_of(&e["local"]) == PORT || port_of(&e["remote"]) == PORT
        })
        .len()
            >= 2
    });
    drop(listener);
    let events = trace.stop();

    let c = close_at(&events, &client_local);
    assert_eq!(c["end"], "reset_sent", "{c}");
    let s = select(&events, "close", |e| {
        e["remote"] == client_local.to_string()
    });
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["end"], "reset_received", "{}", s[0]);

    let sent = select(&events, "reset", |e| {
        e["side"] == "sent" && e["local"] == client_local.to_string()
    });
    assert_eq!(sent.len(), 1, "{}", dump(&events));
    assert_eq!(sent[0]["pod"], "client");
    let received = select(&events, "reset", |e| {
        e["side"] == "received" && e["remote"] == client_local.to_string()
    });
    assert_eq!(received.len(), 1, "{}", dump(&events));
    assert_eq!(
        (received[0]["pod"].as_str(), received[0]["state"].as_str()),
        (Some("server"), Some("ESTABLISHED"))
    );
    if has_kernel_reset_reasons() {
        // tcp_disconnect() names the state it aborted from.
        assert_eq!(sent[0]["reason"], "TCP_STATE", "{}", sent[0]);
        assert_eq!(c["reason"], sent[0]["reason"]);
    }
}

#[test]
fn ipv6_connections() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace, "--port", &PORT.to_string()]);
    let listener = listen(&pair, pair.server_v6);
    let server_addr = SocketAddr::new(pair.server_v6, PORT);
    let client = connect(&pair, server_addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    (&client).write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    let client_local = client.local_addr().unwrap();
    drop(client);
    assert_eq!(server.read(&mut buf).unwrap(), 0);
    drop(server);
    trace.wait_for("v6 closes", |ev| select(ev, "close", |_| true).len() >= 2);
    drop(listener);
    let events = trace.stop();

    let c = close_at(&events, &client_local);
    assert_eq!(c["family"], "ipv6");
    assert_eq!(c["end"], "local_close");
    assert_eq!(c["remote"], format!("[{}]:{PORT}", pair.server_v6));
    assert!(
        c["local"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[{}]:", pair.client_v6))
    );
    assert_eq!(
        (c["tx_bytes"].as_u64(), c["requests"].as_u64()),
        (Some(4), Some(1))
    );
    let s = select(&events, "close", |e| {
        e["remote"] == client_local.to_string()
    });
    assert_eq!(s[0]["end"], "peer_close");
    assert_eq!(s[0]["rx_bytes"], 4);
}

#[test]
fn keep_alive_requests_idle_times_and_lifetime() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&[
        "--namespace",
        &pair.namespace,
        "--reuse-event-min-idle",
        "100ms",
    ]);
    let listener = listen(&pair, pair.server_v4);
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 10];
        while conn.read_exact(&mut request).is_ok() {
            conn.write_all(&[b'r'; 100]).unwrap();
        }
    });

    let gaps = [Duration::from_millis(300), Duration::from_millis(700)];
    let idle_before_close = Duration::from_millis(400);
    let mut client = connect(&pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
    let opened = Instant::now();
    let mut response = [0u8; 100];
    for gap in [Duration::ZERO, gaps[0], gaps[1]] {
        thread::sleep(gap);
        client.write_all(&[b'q'; 10]).unwrap();
        client.read_exact(&mut response).unwrap();
    }
    thread::sleep(idle_before_close);
    let client_local = client.local_addr().unwrap();
    drop(client);
    let lifetime = opened.elapsed();
    server.join().unwrap();

    trace.wait_for("client close", |ev| {
        !select(ev, "close", |e| e["local"] == client_local.to_string()).is_empty()
    });
    let events = trace.stop();
    let c = close_at(&events, &client_local);
    assert_eq!(c["requests"], 3, "{c}");
    assert_eq!(
        (c["tx_bytes"].as_u64(), c["rx_bytes"].as_u64()),
        (Some(30), Some(300)),
        "{c}"
    );
    assert_eq!(c["tx_msgs"], 3);

    let truth_ms = lifetime.as_secs_f64() * 1e3;
    let seen_ms = c["lifetime_ms"].as_f64().unwrap();
    assert!(
        (seen_ms - truth_ms).abs() <= truth_ms * 0.05,
        "lifetime {seen_ms} ms vs {truth_ms} ms measured"
    );
    let idle_ms = c["idle_ms"].as_f64().unwrap();
    let want = idle_before_close.as_secs_f64() * 1e3;
    assert!(
        (idle_ms - want).abs() <= want * 0.1,
        "idle at close {idle_ms} ms, slept {want} ms"
    );

    let reuses = select(&events, "reuse", |e| e["local"] == client_local.to_string());
    assert_eq!(reuses.len(), 2, "{}", dump(&events));
    for (reuse, gap) in reuses.iter().zip(gaps) {
        let seen = reuse["idle_before_reuse_ms"].as_f64().unwrap();
        let want = gap.as_secs_f64() * 1e3;
        assert!(
            (seen - want).abs() <= want * 0.1,
            "idle before reuse {seen} ms, slept {want} ms"
        );
    }
    assert_eq!(reuses[1]["requests"], 3);
    let max = c["max_idle_before_reuse_ms"].as_f64().unwrap();
    assert_eq!(max, reuses[1]["idle_before_reuse_ms"].as_f64().unwrap());

    // The server answered three requests, each a send after a receive.
    let s = select(&events, "close", |e| {
        e["remote"] == client_local.to_string()
    });
    assert_eq!(
        (s[0]["requests"].as_u64(), s[0]["tx_bytes"].as_u64()),
        (Some(3), Some(300))
    );
}

#[test]
fn parallel_pods_get_their_own_labels_and_filters_apply() {
    require_root();
    let pairs = [PodPair::new(), PodPair::new()];
    let both = TraceSession::start(&[
        "--namespace",
        &pairs[0].namespace,
        "--namespace",
        &pairs[1].namespace,
    ]);
    let only_client_closes = TraceSession::start(&[
        "--pod",
        &format!("{}/client", pairs[0].namespace),
        "--event",
        "close",
        "--comm",
        "ct-client",
    ]);

    let (tx, rx) = mpsc::channel();
    thread::scope(|scope| {
        for pair in &pairs {
            let tx = tx.clone();
            scope.spawn(move || {
                let listener = listen(pair, pair.server_v4);
                for _ in 0..3 {
                    let client = connect(pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
                    let (server, _) = listener.accept().unwrap();
                    tx.send((pair.namespace.clone(), client.local_addr().unwrap()))
                        .unwrap();
                    drop(client);
                    drop(server);
                }
            });
        }
    });
    drop(tx);
    let made: Vec<(String, SocketAddr)> = rx.iter().collect();
    assert_eq!(made.len(), 6);

    both.wait_for("12 closes", |ev| {
        select(ev, "close", |e| {
            port_of(&e["local"]) == PORT || port_of(&e["remote"]) == PORT
        })
        .len()
            >= 12
    });
    let events = both.stop();
    for (namespace, local) in &made {
        let c = close_at(&events, local);
        assert_eq!(
            (c["namespace"].as_str(), c["pod"].as_str()),
            (Some(namespace.as_str()), Some("client")),
            "{c}"
        );
        let s = select(&events, "close", |e| e["remote"] == local.to_string());
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0]["namespace"].as_str(), s[0]["pod"].as_str()),
            (Some(namespace.as_str()), Some("server"))
        );
    }

    only_client_closes.wait_for("3 client closes", |ev| ev.len() >= 3);
    let filtered = only_client_closes.stop();
    assert_eq!(filtered.len(), 3, "{}", dump(&filtered));
    for e in &filtered {
        assert_eq!(
            (e["event"].as_str(), e["pod"].as_str()),
            (Some("close"), Some("client"))
        );
        assert_eq!(e["namespace"], pairs[0].namespace);
        assert_eq!(e["comm"], "ct-client");
    }
}

#[test]
fn json_fields_are_complete_and_typed() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace, "--port", &PORT.to_string()]);
    let listener = listen(&pair, pair.server_v4);
    let client = connect(&pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client);
    drop(server);
    trace.wait_for("closes", |ev| select(ev, "close", |_| true).len() >= 2);
    let mut trace = trace;
    let events = trace.stop_with(libc::SIGTERM);
    let close = &select(&events, "close", |e| e["role"] == "client")[0];
    for field in [
        "time",
        "event",
        "namespace",
        "pod",
        "comm",
        "role",
        "family",
        "local",
        "remote",
        "end",
    ] {
        assert!(close[field].is_string(), "{field} in {close}");
    }
    for field in ["netns", "pid", "uid", "tx_bytes", "rx_bytes", "requests"] {
        assert!(close[field].is_u64(), "{field} in {close}");
    }
    for field in ["lifetime_ms", "idle_ms"] {
        assert!(close[field].is_number(), "{field} in {close}");
    }
    let time = close["time"].as_str().unwrap();
    humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("time {time}: {e}"));
    assert_eq!(
        time.len(),
        "2026-01-01T00:00:00.000000000Z".len(),
        "nanosecond precision: {time}"
    );
}

#[test]
fn duration_ends_the_session_and_detaches_everything() {
    require_root();
    let trace = TraceSession::start(&["--duration", "2s", "--namespace", "nothing-here"]);
    let started = Instant::now();
    let events = trace.wait_exit(Duration::from_secs(15));
    assert!(events.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn a_full_ring_buffer_loses_events_and_counts_them() {
    require_root();
    let pair = PodPair::new();
    // One page of ring buffer holds about a dozen events.
    let mut trace = TraceSession::start(&["--namespace", &pair.namespace, "--ring-bytes", "4096"]);
    let listener = listen(&pair, pair.server_v4);
    // Freeze the reader so nothing drains while 40 connections come and go.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(trace.pid(), libc::SIGSTOP) };
    const CONNECTIONS: usize = 40;
    for _ in 0..CONNECTIONS {
        let client = connect(&pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(client);
        drop(server);
    }
    unsafe { libc::kill(trace.pid(), libc::SIGCONT) };
    drop(listener);
    thread::sleep(Duration::from_millis(300));
    let events = trace.stop_with(libc::SIGINT);
    let summary = trace
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("detaching; events lost: "))
        .expect("exit summary on stderr");
    let lost: usize = summary
        .split("events lost: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Each connection makes at least connect, accept and two closes.
    assert!(lost > 0, "{summary}");
    assert!(
        events.len() + lost >= 4 * CONNECTIONS,
        "{} shown + {lost} lost",
        events.len()
    );
    assert!(events.len() < 4 * CONNECTIONS);
}

#[test]
fn bad_options_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .args(["trace", "--ring-bytes", "5000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ring buffer size 5000 must be a power of two"),
        "{stderr}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .args(["trace", "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`soon` is not a duration"), "{stderr}");

    // The same configuration, and the same errors, for every subcommand.
    for subcommand in ["trace", "diagnose", "check"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_conntracer"))
            .args([subcommand, "--config", "/nonexistent/conntracer.toml"])
            .args(if subcommand == "diagnose" {
                &["--duration", "1"][..]
            } else {
                &[]
            })
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot read config file /nonexistent/conntracer.toml")
                && stderr.matches("No such file or directory").count() == 1,
            "{subcommand}: {stderr}"
        );
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .args(["trace", "--event", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value 'nonsense' for '--event <KIND>'")
    );
}

/// Runs conntracer as root with every capability dropped.
fn without_capabilities(args: &[&str]) -> std::process::Output {
    with_only(&["--bounding-set=-all"], args)
}

/// Runs conntracer with the bounding set `bounding` (and nothing inherited).
fn with_only(bounding: &[&str], args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--inh-caps=-all", "--ambient-caps=-all"])
        .args(bounding)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_conntracer"))
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn missing_privileges_name_the_capabilities() {
    require_root();
    let out = without_capabilities(&["trace", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing privileges: CAP_BPF"), "{stderr}");
    assert!(stderr.contains("CAP_PERFMON"), "{stderr}");

    let out = without_capabilities(&["check", "--load", "false"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check fails when the tracer cannot run"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("MISSING") && l.contains("CAP_BPF")),
        "{stdout}"
    );
    assert!(stdout.contains("conntracer cannot run here"), "{stdout}");
}

/// CAP_BPF and CAP_PERFMON are enough, unless the kernel asks for more
/// (Debian's perf_event_paranoid 3: CAP_SYS_ADMIN; before 5.11 with a small
/// memlock limit: CAP_SYS_RESOURCE); then the error names what is missing.
#[test]
fn cap_bpf_and_cap_perfmon_are_enough() {
    require_root();
    let policy = KernelPolicy::current();
    let bpf_perfmon = Capabilities::from_status("CapEff:\t000000c000000000\n");
    let beyond = bpf_perfmon.missing_for_tracing(&policy);
    if !beyond.is_empty() {
        let out = with_only(
            &["--bounding-set=-all,+bpf,+perfmon"],
            &["trace", "--duration", "1s"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        for cap in &beyond {
            assert!(stderr.contains(cap.name), "{policy:?}: {stderr}");
            assert!(stderr.contains(&*cap.why), "{policy:?}: {stderr}");
        }
        return;
    }
    let pair = PodPair::new();
    let only_bpf_perfmon = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all,+bpf,+perfmon",
        "--",
    ];
    let trace = TraceSession::start_wrapped(&only_bpf_perfmon, &["--namespace", &pair.namespace]);
    let listener = listen(&pair, pair.server_v4);
    let client = connect(&pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
    let (server, _) = listener.accept().unwrap();
    let local = client.local_addr().unwrap();
    drop(client);
    drop(server);
    trace.wait_for("client close", |ev| {
        !select(ev, "close", |e| e["local"] == local.to_string()).is_empty()
    });
    let events = trace.stop();
    let c = close_at(&events, &local);
    assert_eq!(
        (c["pod"].as_str(), c["comm"].as_str()),
        (Some("client"), Some("ct-client"))
    );
}

#[test]
fn check_passes_here_and_loads_the_programs() {
    require_root();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("sock/inet_sock_set_state")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("programs verified, attached and detached")),
        "{stdout}"
    );
}

#[test]
fn peer_idle_close_reveals_the_servers_keep_alive_timeout() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let listener = listen(&pair, pair.server_v4);
    let keep_alive = Duration::from_millis(600);
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(keep_alive)).unwrap();
        let mut request = [0u8; 4];
        // Answer until the connection sits idle for `keep_alive`, then close it.
        while conn.read_exact(&mut request).is_ok() {
            conn.write_all(b"done").unwrap();
        }
    });
    let mut client = connect(&pair, SocketAddr::new(pair.server_v4, PORT)).unwrap();
    let mut reply = [0u8; 4];
    client.write_all(b"ping").unwrap();
    client.read_exact(&mut reply).unwrap();
    server.join().unwrap(); // the server has closed after its timeout
    thread::sleep(Duration::from_millis(200));
    let client_local = client.local_addr().unwrap();
    drop(client);
    trace.wait_for("client close", |ev| {
        !select(ev, "close", |e| e["local"] == client_local.to_string()).is_empty()
    });
    let events = trace.stop();
    let c = close_at(&events, &client_local);
    assert_eq!(c["end"], "peer_close");
    let seen = c["peer_idle_close_ms"].as_f64().unwrap();
    let want = keep_alive.as_secs_f64() * 1e3;
    assert!(
        (seen - want).abs() <= want * 0.1,
        "peer closed after {seen} ms idle, its timeout is {want} ms"
    );
    // The server's own view: it closed first.
    let s = select(&events, "close", |e| {
        e["remote"] == client_local.to_string()
    });
    assert_eq!(s[0]["end"], "local_close");
    assert!(s[0].get("peer_idle_close_ms").is_none());
}

#[test]
fn dns_answers_and_a_change_are_seen_in_the_receiving_pod() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace, "--event", "dns"]);
    let server = SocketAddr::new(pair.server_v4, 53);
    let socket = pair.server.run("ct-dns", move || {
        std::net::UdpSocket::bind(server).expect("bind :53")
    });
    let responder = thread::spawn(move || {
        let mut buf = [0u8; 512];
        // First a well-formed answer, then garbage from port 53 (counted, skipped).
        let (_, from) = socket.recv_from(&mut buf).unwrap();
        socket
            .send_to(
                &support::dns::response(0x4242, "api.lab.example", [203, 0, 113, 5]),
                from,
            )
            .unwrap();
        let (_, from) = socket.recv_from(&mut buf).unwrap();
        socket.send_to(&[0xff; 40], from).unwrap();
        // Then the name moves to another address: a DNS change.
        let (_, from) = socket.recv_from(&mut buf).unwrap();
        socket
            .send_to(
                &support::dns::response(0x4243, "api.lab.example", [203, 0, 113, 9]),
                from,
            )
            .unwrap();
    });
    pair.client.run("ct-resolver", move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            s.send_to(b"query", server).unwrap();
            s.recv_from(&mut buf).unwrap();
        }
    });
    responder.join().unwrap();
    trace.wait_for("two dns events", |ev| ev.len() >= 2);
    // Give anything else time to arrive (the garbage is skipped).
    std::thread::sleep(Duration::from_millis(300));
    let events = trace.stop();
    assert_eq!(
        events.len(),
        2,
        "only the well-formed answers: {}",
        dump(&events)
    );
    let moved = &events[1];
    assert_eq!(moved["answers"], serde_json::json!(["203.0.113.9"]));
    assert_eq!(moved["changed"].as_bool(), Some(true), "{}", dump(&events));
    let dns = &events[0];
    assert_eq!(
        (dns["event"].as_str(), dns["pod"].as_str()),
        (Some("dns"), Some("client"))
    );
    assert_eq!(dns["namespace"], pair.namespace);
    assert_eq!(dns["name"], "api.lab.example");
    assert_eq!(dns["answers"], serde_json::json!(["203.0.113.5"]));
    assert_eq!(
        (
            dns["ttl"].as_u64(),
            dns["rcode"].as_str(),
            dns["changed"].as_bool()
        ),
        (Some(30), Some("NoError"), Some(false))
    );
}

/// The egress peek (the status-line matcher shared with userspace in
/// tracer-common, fuzzed in tracer/fuzz/) reports a proxy's real 503 and
/// nothing for bytes that only look like one: `HTTP/1.1 4:3` once counted
/// as 503 (4·100 + 10·10 + 3 with non-digits read as digits).
#[test]
fn http_503_peek_reports_only_real_status_lines() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let server_ip = pair.server_v4;
    // The proxy: a listener and its connections in a thread named `envoy`.
    let listener = listen_as(&pair, "envoy", server_ip);
    let heads: [&[u8]; 3] = [
        b"HTTP/1.1 4:3 Not a status\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    ];
    // The worker (not the listener's thread) handles the connections: the
    // 503 names it, for attribution by thread.
    let proxy = pair.server.spawn("envoy", move || {
        for head in heads {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = [0u8; 4];
            conn.read_exact(&mut request).expect("request");
            conn.write_all(head).expect("response");
        }
        // SAFETY: no arguments.
        unsafe { libc::gettid() as u64 }
    });
    for _ in heads {
        let mut client = connect(&pair, SocketAddr::new(server_ip, PORT)).unwrap();
        client.write_all(b"GET ").unwrap();
        let mut response = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 128];
        while !response.ends_with(b"\r\n\r\n") {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "response cut short");
            response.extend_from_slice(&buf[..n]);
        }
    }
    let worker = proxy.join().expect("proxy thread");
    trace.wait_for("the 503", |ev| !select(ev, "http_503", |_| true).is_empty());
    // Longer than the attribution window: a second (false) 503 would be out.
    thread::sleep(Duration::from_secs(2));
    let events = trace.stop();
    let seen = select(&events, "http_503", |_| true);
    assert_eq!(seen.len(), 1, "one real 503:\n{}", dump(&events));
    assert_eq!(seen[0]["status"], 503);
    // The thread comes from the per-message tracepoints (6.3+); from packets
    // (older kernels) the current task is not the writer: unknown, 0.
    let from_messages = has_message_tracepoints() && !forced_source("activity=packets");
    let expected_tid = if from_messages { worker } else { 0 };
    assert_eq!(seen[0]["tid"], expected_tid, "the worker that wrote it");
    assert_eq!(
        seen[0]["local"],
        SocketAddr::new(server_ip, PORT).to_string()
    );
    assert_eq!(seen[0]["role"], "server");
}

fn listen_as(pair: &PodPair, comm: &str, ip: IpAddr) -> TcpListener {
    pair.server.run(comm, move || {
        TcpListener::bind(SocketAddr::new(ip, PORT)).expect("bind")
    })
}

/// An app's own 503 passed on by a proxy is the app's answer, not a
/// failure's: the proxy's 503 is `unattributed` and marked `passthrough`
/// (the app's accepted socket's peer is the proxy's upstream connection),
/// and the app's 503 is not counted as a proxy's.
#[test]
fn an_apps_own_503_passed_on_by_a_proxy_is_passthrough() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let server_ip = pair.server_v4;
    let app_addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), PORT + 1);
    let app_listener = pair.server.run("app", move || {
        TcpListener::bind(app_addr).expect("bind app")
    });
    let app = pair.server.spawn("app", move || {
        let (mut conn, _) = app_listener.accept().expect("accept");
        let mut request = [0u8; 4];
        conn.read_exact(&mut request).expect("request");
        conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            .expect("answer");
    });
    let listener = listen_as(&pair, "envoy", server_ip);
    let proxy = pair.server.spawn("envoy", move || {
        let (mut down, _) = listener.accept().expect("accept");
        let mut request = [0u8; 4];
        down.read_exact(&mut request).expect("request");
        let mut up = TcpStream::connect(app_addr).expect("connect app");
        up.write_all(&request).expect("forward");
        let mut head = Vec::new();
        let mut buf = [0u8; 128];
        while !head.ends_with(b"\r\n\r\n") {
            let n = up.read(&mut buf).expect("app's answer");
            assert!(n > 0, "answer cut short");
            head.extend_from_slice(&buf[..n]);
        }
        down.write_all(&head).expect("pass on");
    });
    let mut client = connect(&pair, SocketAddr::new(server_ip, PORT)).unwrap();
    client.write_all(b"GET ").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut response = [0u8; 12];
    client.read_exact(&mut response).unwrap();
    assert_eq!(&response, b"HTTP/1.1 503");
    proxy.join().expect("proxy thread");
    app.join().expect("app thread");
    trace.wait_for("the proxy's 503", |ev| {
        !select(ev, "http_503", |_| true).is_empty()
    });
    thread::sleep(Duration::from_secs(1));
    let events = trace.stop();
    let seen = select(&events, "http_503", |_| true);
    assert_eq!(seen.len(), 1, "the proxy's only:\n{}", dump(&events));
    assert_eq!(seen[0]["comm"], "envoy");
    assert_eq!(seen[0]["cause"], "unattributed");
    assert_eq!(seen[0]["passthrough"], true, "{}", seen[0]);
    assert!(seen[0].get("failure").is_none());
}
