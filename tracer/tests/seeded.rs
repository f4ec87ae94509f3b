//! State from before the start, against the real kernel: connections and
//! listeners opened before conntracer starts are found at attach and then
//! followed as if it had seen them open (`trace` and `daemon`).

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    http::{get, metric},
    netns::PodPair,
    require_root,
    tracer::{TraceSession, dump, select},
};

const PORT: u16 = 8080;

/// A pooled connection that has carried one request.
fn pooled(pair: &PodPair, listener: &TcpListener) -> (TcpStream, TcpStream, Instant) {
    let target = SocketAddr::new(pair.server_v4, PORT);
    let mut client = pair.client.run("ct-client", move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap()
    });
    let (mut server, _) = listener.accept().unwrap();
    let mut buf = [0u8; 4];
    client.write_all(b"ping").unwrap();
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"done").unwrap();
    client.read_exact(&mut buf).unwrap();
    (client, server, Instant::now())
}

fn abort(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and option struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        )
    };
    drop(stream);
}

fn one<'a>(events: &'a [Value], kind: &str, local: &str) -> &'a Value {
    let found = select(events, kind, |e| e["local"] == local);
    assert_eq!(found.len(), 1, "one {kind} at {local}:\n{}", dump(events));
    found[0]
}

#[test]
fn trace_follows_connections_and_listeners_opened_before_it_started() {
    require_root();
    let pair = PodPair::new();
    let server_ip = pair.server_v4;
    let listener = pair.server.run("ct-server", move || {
        TcpListener::bind((server_ip, PORT)).unwrap()
    });
    let (fin_client, fin_server, fin_last) = pooled(&pair, &listener);
    let (rst_client, rst_server, _) = pooled(&pair, &listener);
    let (fin_local, rst_local) = (
        fin_client.local_addr().unwrap().to_string(),
        rst_client.local_addr().unwrap().to_string(),
    );

    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    // Idle a while after the start, then the server closes one and resets the other.
    thread::sleep(Duration::from_millis(800));
    let idle_at_fin = fin_last.elapsed();
    drop(fin_server);
    abort(rst_server);
    // A connection accepted after the start inherits the seeded listener's owner.
    let target = SocketAddr::new(pair.server_v4, PORT);
    let late = pair.client.run("ct-client", move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5)).unwrap()
    });
    let late_local = late.local_addr().unwrap().to_string();
    let (late_server, _) = listener.accept().unwrap();
    thread::sleep(Duration::from_millis(100));
    drop((fin_client, rst_client, late, late_server));
    trace.wait_for("both seeded connections closed", |ev| {
        [&fin_local, &rst_local]
            .iter()
            .all(|l| !select(ev, "close", |e| e["local"] == **l).is_empty())
    });
    let events = trace.stop();

    let listen = select(&events, "listen", |e| {
        e["local"] == format!("{}:{PORT}", pair.server_v4)
    });
    assert_eq!(listen.len(), 1, "{}", dump(&events));
    assert_eq!(listen[0]["seeded"], true);
    assert_eq!(listen[0]["pid"], std::process::id(), "owner found by inode");

    for local in [&fin_local, &rst_local] {
        let seeded = one(&events, "seeded", local);
        assert_eq!(
            (&seeded["role"], &seeded["pod"], &seeded["seeded"]),
            (
                &Value::from("client"),
                &Value::from("client"),
                &Value::Bool(true)
            ),
            "{seeded}"
        );
        assert_eq!(seeded["remote"], format!("{}:{PORT}", pair.server_v4));
        assert_eq!(
            (seeded["tx_bytes"].as_u64(), seeded["rx_bytes"].as_u64()),
            (Some(4), Some(4))
        );
        // The server side: its local port is listened on.
        let server_side = select(&events, "seeded", |e| e["remote"] == **local);
        assert_eq!(server_side.len(), 1, "{}", dump(&events));
        assert_eq!(server_side[0]["role"], "server");
    }

    let fin = one(&events, "close", &fin_local);
    assert_eq!(
        (&fin["end"], &fin["seeded"]),
        (&Value::from("peer_close"), &Value::Bool(true)),
        "{fin}"
    );
    let seen = fin["peer_idle_close_ms"].as_f64().unwrap();
    let want = idle_at_fin.as_secs_f64() * 1e3;
    assert!(
        (seen - want).abs() <= want * 0.1,
        "peer closed after {seen} ms idle; it had been idle {want} ms"
    );
    eprintln!("peer idle close: seen {seen:.1} ms, true {want:.1} ms");
    assert!(fin.get("lifetime_ms").is_none(), "opening not seen: {fin}");

    let rst = one(&events, "close", &rst_local);
    assert_eq!(
        (&rst["end"], &rst["seeded"]),
        (&Value::from("reset_received"), &Value::Bool(true)),
        "{rst}"
    );
    let reset = select(&events, "reset", |e| e["local"] == rst_local);
    assert!(
        reset.iter().all(|r| r["seeded"] == true),
        "{}",
        dump(&events)
    );

    // Opened after the start: not seeded, and owned by the listener's process.
    let accept = select(&events, "accept", |e| e["remote"] == late_local);
    assert_eq!(accept.len(), 1, "{}", dump(&events));
    assert_eq!(accept[0]["pid"], std::process::id(), "{}", accept[0]);
    assert!(accept[0].get("seeded").is_none());
    assert!(one(&events, "connect", &late_local).get("seeded").is_none());
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_attributes_an_idle_timeout_on_a_connection_opened_before_it_started() {
    require_root();
    let pair = PodPair::new();
    let server_ip = pair.server_v4;
    let listener = pair.server.run("ct-server", move || {
        TcpListener::bind((server_ip, PORT)).unwrap()
    });
    let (mut client, server, _) = pooled(&pair, &listener);

    let addr: SocketAddr = "127.0.0.1:19468".parse().unwrap();
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_conntracer"))
            .args([
                "daemon",
                "--lock-file",
                "none",
                "--listen",
                &addr.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(addr, "/readyz").is_none_or(|(code, _)| code != 200) {
        assert!(Instant::now() < deadline, "not ready within 60 s");
        thread::sleep(Duration::from_millis(100));
    }

    // The app's idle timeout: it closes the pooled connection, and the client,
    // not having noticed, writes its next request onto it.
    thread::sleep(Duration::from_millis(500));
    drop(server);
    thread::sleep(Duration::from_millis(100));
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    assert!(client.read_exact(&mut buf).is_err(), "the server reset it");
    drop(client);

    let ns = pair.namespace.clone();
    let labels = [
        ("namespace", ns.as_str()),
        ("pod", "client"),
        ("cause", "idle_timeout"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (_, body) = get(addr, "/metrics").unwrap();
        if metric(&body, "conntracer_connection_failures_total", &labels) >= 1.0 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no idle_timeout failure:\n{body}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(&body, "conntracer_stale_connection_failures_total", &labels),
        1.0
    );
    assert!(
        metric(&body, "conntracer_seeded_connections_total", &[]) >= 2.0,
        "{body}"
    );
    assert!(
        metric(&body, "conntracer_seeded_listeners_total", &[]) >= 1.0,
        "{body}"
    );
    // Seen open before the start, so never counted as opened.
    assert_eq!(
        metric(
            &body,
            "conntracer_connections_opened_total",
            &[("namespace", &ns)]
        ),
        0.0,
        "{body}"
    );

    let (_, findings) = get(addr, &format!("/findings?namespace={ns}")).unwrap();
    let findings: Value = serde_json::from_str(&findings).unwrap();
    let samples: Vec<&Value> = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .collect();
    assert!(!samples.is_empty(), "{findings}");
    for sample in samples {
        assert_eq!(sample["cause"], "idle_timeout", "{sample}");
        assert_eq!(sample["evidence"]["seeded"], true, "{sample}");
        assert_eq!(
            sample["evidence"]["peer_closed_before_request"], true,
            "{sample}"
        );
    }
}

#[test]
fn check_says_whether_the_start_up_enumeration_works() {
    require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_conntracer"))
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("start-up enumeration"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines.iter().all(|l| l.starts_with("ok")), "{stdout}");
    assert!(lines[1].contains("iter/tcp verified and run"), "{stdout}");
}
