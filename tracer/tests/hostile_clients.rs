//! Hostile clients of the real daemon's HTTP endpoint, while it traces:
//! a thousand idle connections, byte-a-second (slowloris) clients, oversized
//! heads and garbage. Scrapes are still answered, tracing goes on, memory
//! stays bounded, and the daemon closes every hostile connection itself.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    thread,
    time::{Duration, Instant},
};

use support::{
    daemon::{Daemon, raise_fd_limit},
    http::get as scrape,
    http::metric,
    netns::Netns,
    require_root, unique_tag,
};

/// Idle connections held at once (the default cap is 512).
const IDLE: usize = 1000;
const SLOW: usize = 20;
/// Connections made in a traced test namespace during the attack.
const LOAD_CONNECTS: usize = 300;
/// `--http-timeout`'s default (documented in `--help`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any hostile client waits for the daemon to close it.
const CLOSE_BOUND: Duration = Duration::from_secs(25);

/// Whether the daemon closed `s` within `wait` (EOF or a reset; any bytes
/// it sent first, such as an error response, are read and dropped).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if n <= 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        s.set_nonblocking(true).unwrap();
        let read = s.read(&mut buf);
        s.set_nonblocking(false).unwrap();
        match read {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// Holds `IDLE` connections that never send a byte; returns when each was
/// closed by the daemon (relative to its connect), or `None` if still open.
fn idle_connections(addr: SocketAddr) -> thread::JoinHandle<Vec<Option<Duration>>> {
    let opened: Vec<(TcpStream, Instant)> = (0..IDLE)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            (s, Instant::now())
        })
        .collect();
    thread::spawn(move || {
        let mut closed: Vec<Option<Duration>> = vec![None; opened.len()];
        let deadline = Instant::now() + CLOSE_BOUND;
        while Instant::now() < deadline && closed.iter().any(Option::is_none) {
            let mut pfds: Vec<libc::pollfd> = opened
                .iter()
                .map(|(s, _)| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLIN | libc::POLLRDHUP,
                    revents: 0,
                })
                .collect();
            // SAFETY: a valid array of pollfds.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
            for (i, pfd) in pfds.iter().enumerate() {
                if pfd.revents != 0 && closed[i].is_none() {
                    let mut byte = [0u8; 1];
                    // Readable and nothing to read: EOF or reset.
                    if matches!((&opened[i].0).read(&mut byte), Ok(0) | Err(_)) {
                        closed[i] = Some(opened[i].1.elapsed());
                    }
                }
            }
        }
        closed
    })
}

/// Sends a request head a byte a second; returns (bytes sent, closed by the
/// daemon after this long).
fn slow_client(addr: SocketAddr) -> thread::JoinHandle<(usize, Option<Duration>)> {
    thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nHost: slow\r\nUser-Agent: a-byte-a-second\r\n\r\n";
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        let start = Instant::now();
        for (sent, byte) in head.iter().enumerate() {
            if s.write_all(&[*byte]).is_err() || closed_within(&mut s, Duration::from_secs(1)) {
                return (sent, Some(start.elapsed()));
            }
            if start.elapsed() > CLOSE_BOUND {
                break;
            }
        }
        (head.len(), None)
    })
}

/// What the daemon did with one hostile request: its status, or `0` for
/// closed without one; `None` if neither within 10 s.
fn answer_to(addr: SocketAddr, payload: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    // The daemon may close before reading it all (an oversized head).
    let _ = s.write_all(payload);
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(_) => return None,
    }
    let text = String::from_utf8_lossy(&raw);
    Some(
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0),
    )
}

fn oversized_and_garbage() -> Vec<(String, Vec<u8>)> {
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let big_value = "a".repeat(64 * 1024);
    cases.push((
        "64 KiB header".into(),
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big_value}\r\n\r\n").into_bytes(),
    ));
    cases.push((
        "1 MiB request line".into(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "b".repeat(1 << 20)).into_bytes(),
    ));
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    cases.push((
        "200 headers".into(),
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes(),
    ));
    for (name, bytes) in [
        ("binary", &b"\x00\x01\x02\x03\xff\xfe\r\n\r\n"[..]),
        ("words", b"HELLO WORLD\r\n\r\n"),
        ("method only", b"GET\r\n\r\n"),
        ("HTTP/9.9", b"GET / HTTP/9.9\r\n\r\n"),
        (
            "bad header line",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        ),
        (
            "negative length",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        ),
        (
            "TLS hello",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        ),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("blank lines", b"\r\n\r\n\r\n\r\n"),
    ] {
        cases.push((name.into(), bytes.to_vec()));
    }
    // Seeded noise (xorshift), ending like a head so the parser has to judge it.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..5 {
        let mut noise: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        noise.extend_from_slice(b"\r\n\r\n");
        cases.push((format!("noise {i}"), noise));
    }
    cases
}

/// Connections in the test namespace, spread over the attack.
fn traced_load(load: &Netns) -> thread::JoinHandle<usize> {
    load.spawn("hc-load", || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut made = 0;
        for _ in 0..LOAD_CONNECTS {
            let c = TcpStream::connect(addr).unwrap();
            let (s, _) = listener.accept().unwrap();
            drop((c, s));
            made += 1;
            thread::sleep(Duration::from_millis(20));
        }
        made
    })
}

#[test]
fn hostile_http_clients_do_not_stop_scrapes_or_tracing() {
    require_root();
    let fd_limit = raise_fd_limit();
    assert!(fd_limit as usize > IDLE + 200, "open-file limit {fd_limit}");
    let daemon = Daemon::start(&[]);
    let tag = unique_tag();
    let load = Netns::new(&format!("hc{tag}.load"));
    let rss_before = daemon.rss_mib();
    let attack = Instant::now();

    let idle = idle_connections(daemon.addr);
    let slow: Vec<_> = (0..SLOW).map(|_| slow_client(daemon.addr)).collect();
    let traffic = traced_load(&load);
    let addr = daemon.addr;
    let bad = thread::spawn(move || {
        oversized_and_garbage()
            .into_iter()
            .map(|(name, payload)| (name, answer_to(addr, &payload)))
            .collect::<Vec<_>>()
    });

    // Normal scrapes through it all: bounded in count and time.
    let (mut answered, mut slowest, mut rss_during) = (0, Duration::ZERO, 0.0f64);
    for _ in 0..30 {
        if attack.elapsed() > HTTP_TIMEOUT + Duration::from_secs(4) {
            break;
        }
        let asked = Instant::now();
        let (code, body) = scrape(daemon.addr, "/metrics")
            .unwrap_or_else(|| panic!("a scrape was not answered within 10 s during the attack"));
        assert_eq!(code, 200);
        assert!(body.contains("conntracer_build_info"));
        answered += 1;
        slowest = slowest.max(asked.elapsed());
        rss_during = rss_during.max(daemon.rss_mib());
        thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(scrape(daemon.addr, "/readyz").map(|(c, _)| c), Some(200));

    let idle = idle.join().unwrap();
    let slow: Vec<(usize, Option<Duration>)> =
        slow.into_iter().map(|h| h.join().unwrap()).collect();
    let bad = bad.join().unwrap();
    let made = traffic.join().unwrap();
    thread::sleep(Duration::from_secs(1));
    let rss_after = daemon.rss_mib();

    // (d) every hostile connection closed by the daemon.
    let closed: Vec<Duration> = idle.iter().flatten().copied().collect();
    // Closed before the timeout could fire: to make room under the cap.
    let early = closed
        .iter()
        .filter(|d| **d < HTTP_TIMEOUT - Duration::from_secs(1))
        .count();
    let at_timeout = closed.len() - early;
    let slow_closed: Vec<Duration> = slow.iter().filter_map(|(_, d)| *d).collect();
    let slowest_slow = slow_closed.iter().max().copied().unwrap_or_default();
    println!(
        "hostile: {IDLE} idle connections: {} closed by the daemon ({early} early to make room \
         under the cap, {at_timeout} at the {HTTP_TIMEOUT:?} timeout, the last after {:.1} s), {} left open",
        closed.len(),
        closed
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64(),
        idle.len() - closed.len()
    );
    println!(
        "hostile: {SLOW} byte-a-second clients: {} closed by the daemon (last after {:.1} s, \
         at most {} of {} head bytes sent)",
        slow_closed.len(),
        slowest_slow.as_secs_f64(),
        slow.iter().map(|(sent, _)| sent).max().unwrap(),
        b"GET /metrics HTTP/1.1\r\nHost: slow\r\nUser-Agent: a-byte-a-second\r\n\r\n".len()
    );
    for (name, answer) in &bad {
        let what = match answer {
            Some(0) => "closed".to_owned(),
            Some(code) => code.to_string(),
            None => "no answer in 10 s".to_owned(),
        };
        println!("hostile: {name}: {what}");
    }
    println!(
        "hostile: {answered} scrapes during the attack, all answered (slowest {:.0} ms)",
        slowest.as_secs_f64() * 1e3
    );
    println!(
        "hostile: daemon RSS before {rss_before:.1} MiB, during {rss_during:.1} MiB, after {rss_after:.1} MiB"
    );
    assert_eq!(closed.len(), IDLE, "idle connections the daemon left open");
    assert_eq!(slow_closed.len(), SLOW, "slow clients the daemon left open");
    for (name, answer) in &bad {
        assert!(
            matches!(answer, Some(0 | 400..=499)),
            "{name}: answered {answer:?} (want a 4xx or a close)"
        );
    }
    assert!(answered >= 5, "only {answered} scrapes");

    // (b) tracing went on: the namespace's connections are all counted.
    let (namespace, pod) = (format!("hc{tag}"), "load");
    let labels = [
        ("namespace", namespace.as_str()),
        ("pod", pod),
        ("role", "client"),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let n = metric(
            &daemon.metrics(),
            "conntracer_connections_opened_total",
            &labels,
        );
        if n >= made as f64 || Instant::now() > deadline {
            break n;
        }
        thread::sleep(Duration::from_millis(200));
    };
    println!(
        "hostile: {made} connections made in the test namespace during the attack, {counted} counted"
    );
    assert_eq!(counted, made as f64);

    // (c) memory bounded (generous: the connections' buffers are a few MiB).
    assert!(
        rss_during < rss_before + 128.0 && rss_after < rss_before + 128.0,
        "RSS grew from {rss_before:.1} MiB to {rss_during:.1} / {rss_after:.1} MiB"
    );
}
