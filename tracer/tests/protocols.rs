//! Keep-alive traffic that is not requests, against the real kernel: HTTP/2
//! in cleartext (h2c: frames written here byte for byte, as Envoy's codec
//! does) and TLS (Python's `ssl`, certificates made by `openssl`). Control
//! frames and alerts must neither count as requests nor leave one "in
//! flight", so a server's idle close is no failure; a request in flight when
//! the server resets still is.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;
use support::{
    netns::PodPair,
    require_root,
    tracer::{TraceSession, dump, select},
};

const PORT: u16 = 8080;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const ACK: u8 = 1;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
/// HPACK: `:method GET`, `:scheme http`, `:path /`, `:authority` literal.
const REQUEST_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x03, b'a', b'p', b'p'];
/// HPACK: `:status 200`.
const RESPONSE_BLOCK: &[u8] = &[0x88];

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn request(stream: u32) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, REQUEST_BLOCK)
}

fn response(stream: u32) -> Vec<u8> {
    [
        frame(HEADERS, END_HEADERS, stream, RESPONSE_BLOCK),
        frame(DATA, END_STREAM, stream, b"ok"),
    ]
    .concat()
}

/// The next frame's type and flags (its payload read and dropped).
fn read_frame(conn: &mut TcpStream) -> std::io::Result<(u8, u8)> {
    let mut header = [0u8; 9];
    conn.read_exact(&mut header)?;
    let len = (header[0] as usize) << 16 | (header[1] as usize) << 8 | header[2] as usize;
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload)?;
    Ok((header[3], header[4]))
}

/// Reads frames until one of `kind` (others, e.g. SETTINGS acks, skipped).
fn read_until(conn: &mut TcpStream, kind: u8) -> (u8, u8) {
    loop {
        let f = read_frame(conn).expect("frame");
        if f.0 == kind {
            return f;
        }
    }
}

/// The client side of an h2c connection up to its first response: preface
/// and SETTINGS in one write, the SETTINGS ack alone, then a request.
fn h2c_client(pair: &PodPair) -> TcpStream {
    let to = SocketAddr::new(pair.server_v4, PORT);
    let mut conn = pair.client.run("ct-h2c", move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect")
    });
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .unwrap();
    read_until(&mut conn, SETTINGS);
    conn.write_all(&frame(SETTINGS, ACK, 0, &[])).unwrap();
    thread::sleep(Duration::from_millis(50));
    conn.write_all(&request(1)).unwrap();
    read_until(&mut conn, DATA);
    conn
}

/// The server side up to the first response.
fn h2c_server_accept(listener: &TcpListener) -> TcpStream {
    let (mut conn, _) = listener.accept().expect("accept");
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut preface = [0u8; 24];
    conn.read_exact(&mut preface).unwrap();
    assert_eq!(preface, PREFACE);
    conn.write_all(&[frame(SETTINGS, 0, 0, &[]), frame(SETTINGS, ACK, 0, &[])].concat())
        .unwrap();
    read_until(&mut conn, HEADERS);
    conn.write_all(&response(1)).unwrap();
    conn
}

fn listen(pair: &PodPair) -> TcpListener {
    let ip = pair.server_v4;
    pair.server.run("ct-h2-server", move || {
        TcpListener::bind(SocketAddr::new(ip, PORT)).expect("bind")
    })
}

fn close_of(events: &[Value], local: SocketAddr) -> &Value {
    let found = select(events, "close", |e| e["local"] == local.to_string());
    assert_eq!(found.len(), 1, "one close for {local}:\n{}", dump(events));
    found[0]
}

fn failures_of(events: &[Value], local: SocketAddr) -> Vec<&Value> {
    select(events, "failure", |e| e["local"] == local.to_string())
}

/// Waits for the close of `local` and for failures to settle.
fn closed(trace: TraceSession, local: SocketAddr) -> Vec<Value> {
    trace.wait_for("the client's close", |ev| {
        !select(ev, "close", |e| e["local"] == local.to_string()).is_empty()
    });
    // Failures are decided after the settle (well under 2 s).
    thread::sleep(Duration::from_secs(2));
    trace.stop()
}

#[test]
fn h2c_pings_and_settings_acks_are_not_requests() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let listener = listen(&pair);
    let server = thread::spawn(move || {
        let mut conn = h2c_server_accept(&listener);
        for _ in 0..3 {
            read_until(&mut conn, PING);
            conn.write_all(&frame(PING, ACK, 0, &[1; 8])).unwrap();
        }
        // The server's own keep-alive ping, answered by the client.
        conn.write_all(&frame(PING, 0, 0, &[2; 8])).unwrap();
        read_until(&mut conn, PING);
        // The client pings again: the server closes the idle connection
        // instead of answering (its idle timer won).
        read_until(&mut conn, PING);
    });
    let mut client = h2c_client(&pair);
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(150));
        client.write_all(&frame(PING, 0, 0, &[1; 8])).unwrap();
        assert_eq!(read_until(&mut client, PING), (PING, ACK));
    }
    assert_eq!(read_until(&mut client, PING), (PING, 0));
    client.write_all(&frame(PING, ACK, 0, &[2; 8])).unwrap();
    thread::sleep(Duration::from_millis(100));
    client.write_all(&frame(PING, 0, 0, &[3; 8])).unwrap();
    server.join().expect("server");
    let mut rest = [0u8; 16];
    assert_eq!(client.read(&mut rest).unwrap(), 0, "the server's FIN");
    let local = client.local_addr().unwrap();
    drop(client);

    let events = closed(trace, local);
    let c = close_of(&events, local);
    assert_eq!(c["protocol"], "h2c", "{c}");
    assert_eq!(c["end"], "peer_close", "{c}");
    assert_eq!(c["requests"], 1, "one request; pings are not: {c}");
    assert!(
        failures_of(&events, local).is_empty(),
        "a ping in flight at the idle close is no failure:\n{}",
        dump(&events)
    );
}

#[test]
fn h2c_request_in_flight_when_the_server_resets_is_a_failure() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let listener = listen(&pair);
    let server = thread::spawn(move || {
        let mut conn = h2c_server_accept(&listener);
        read_until(&mut conn, PING);
        conn.write_all(&frame(PING, ACK, 0, &[0; 8])).unwrap();
        // The second request arrives; the server dies with it unanswered.
        read_until(&mut conn, HEADERS);
        socket2_linger_zero(&conn);
        drop(conn);
        // A second connection: the server refuses stream 1 and says GOAWAY.
        let mut conn = h2c_server_accept(&listener);
        read_until(&mut conn, HEADERS);
        conn.write_all(
            &[
                frame(RST_STREAM, 0, 3, &[0, 0, 0, 7]),
                frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
            ]
            .concat(),
        )
        .unwrap();
        thread::sleep(Duration::from_millis(100));
    });
    let mut client = h2c_client(&pair);
    thread::sleep(Duration::from_millis(150));
    client.write_all(&frame(PING, 0, 0, &[0; 8])).unwrap();
    read_until(&mut client, PING);
    thread::sleep(Duration::from_millis(300));
    client.write_all(&request(3)).unwrap();
    let mut rest = [0u8; 16];
    assert!(client.read(&mut rest).is_err(), "reset by the server");
    let reset_local = client.local_addr().unwrap();
    drop(client);

    let mut client = h2c_client(&pair);
    client.write_all(&request(3)).unwrap();
    assert_eq!(read_until(&mut client, GOAWAY).0, GOAWAY);
    server.join().expect("server");
    assert_eq!(client.read(&mut rest).unwrap(), 0, "the server's FIN");
    let goaway_local = client.local_addr().unwrap();
    drop(client);

    trace.wait_for("the first close", |ev| {
        !select(ev, "close", |e| e["local"] == reset_local.to_string()).is_empty()
    });
    let events = closed(trace, goaway_local);
    let c = close_of(&events, reset_local);
    assert_eq!(
        (c["protocol"].as_str(), c["end"].as_str()),
        (Some("h2c"), Some("reset_received")),
        "{c}"
    );
    assert_eq!(c["requests"], 2, "{c}");
    let failed = failures_of(&events, reset_local);
    assert_eq!(failed.len(), 1, "{}", dump(&events));
    assert_eq!(failed[0]["stale"], true, "{}", failed[0]);
    assert_eq!(failed[0]["evidence"]["requests"], 2);

    let g = close_of(&events, goaway_local);
    assert_eq!(g["protocol"], "h2c", "{g}");
    // Seen where the ingress program runs (DNS by cgroup_skb, or packets).
    if let Some(frames) = g.get("h2_from_peer") {
        assert_eq!(frames, &serde_json::json!(["goaway", "rst_stream"]), "{g}");
    }
    assert!(
        failures_of(&events, goaway_local).is_empty(),
        "the server answered with GOAWAY: {}",
        dump(&events)
    );
}

fn socket2_linger_zero(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a properly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// A TLS server that closes connections idle for 500 ms the way Envoy and
/// most servers do: `close_notify`, then close, without waiting for the
/// client's own `close_notify`.
const TLS_SERVER: &str = r#"
import socket, ssl, sys
cert, key, host, port, count = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket(socket.AF_INET)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((host, int(port)))
ls.listen()
print("ready", flush=True)
for _ in range(int(count)):
    c, _ = ls.accept()
    t = ctx.wrap_socket(c, server_side=True)
    t.settimeout(0.5)
    try:
        while True:
            if not t.recv(1000):
                break
            t.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    except (TimeoutError, socket.timeout):
        pass
    t.settimeout(0.01)
    try:
        t.unwrap()
    except Exception:
        pass
    t.close()
"#;

/// Two requests, then the server's idle close; the client answers with its
/// own `close_notify` (after the server's FIN) and prints its local port.
const TLS_CLIENT: &str = r#"
import socket, ssl, sys, time
host, port, version = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM")
else:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
s = ctx.wrap_socket(socket.create_connection((host, int(port))))
for _ in range(2):
    s.sendall(b"GET / HTTP/1.1\r\nhost: app\r\n\r\n")
    s.recv(1000)
    time.sleep(0.1)
assert s.recv(1000) == b""
time.sleep(0.05)
try:
    s.unwrap()
except Exception:
    pass
print(s.getsockname()[1], s.version(), flush=True)
s.close()
"#;

#[test]
fn tls_close_notify_after_the_servers_idle_close_is_not_a_request() {
    require_root();
    let pair = PodPair::new();
    let dir = std::env::temp_dir().join(format!("ct-tls-{}", support::unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=app", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let host = pair.server_v4.to_string();
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.server.name,
            "python3",
            "-c",
            TLS_SERVER,
        ])
        .arg(&cert)
        .arg(&key)
        .args([&host, &PORT.to_string(), "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 TLS server");
    let mut ready = [0u8; 6];
    server
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();

    let mut clients = Vec::new();
    for version in ["1.3", "1.2"] {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &pair.client.name,
                "python3",
                "-c",
                TLS_CLIENT,
            ])
            .args([&host, &PORT.to_string(), version])
            .output()
            .expect("python3 TLS client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let mut words = line.split_whitespace();
        let port: u16 = words.next().unwrap().parse().unwrap();
        clients.push((
            SocketAddr::new(pair.client_v4, port),
            words.next().unwrap().to_owned(),
        ));
    }
    assert!(server.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);

    let last = clients[1].0;
    let events = closed(trace, last);
    for (local, version) in &clients {
        let c = close_of(&events, *local);
        assert_eq!(c["protocol"], "tls", "{version}: {c}");
        // The handshake's flights count as requests too (encrypted: only the
        // record sizes are seen); the two requests come on top.
        assert!(c["requests"].as_u64().unwrap() >= 3, "{version}: {c}");
        assert!(
            failures_of(&events, *local).is_empty(),
            "{version}: the idle close lost no request:\n{}",
            dump(&events)
        );
    }
}
