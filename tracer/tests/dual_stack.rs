//! Dual stack against the real kernel: IPv4 packets on AF_INET6 sockets (a
//! `[::]` listener with IPV6_V6ONLY off, as Envoy and Java listen). The
//! packet programs take the IP version from the packet, and the lifecycle's
//! IPv4-mapped addresses are shown as IPv4, so both name the same
//! connection: lifecycle, activity, the 503 peek and DNS answers.

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::FromRawFd,
    thread,
    time::Duration,
};

use support::{
    netns::PodPair,
    require_root,
    tracer::{TraceSession, dump, select},
};

const PORT: u16 = 8080;

/// `[::]:port` with IPV6_V6ONLY off, whatever the sysctl says.
fn dual_stack_listener(port: u16) -> TcpListener {
    // SAFETY: plain socket calls on a fd we own; checked one by one.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let off: libc::c_int = 0;
        let opt = |name, value: &libc::c_int| {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                name,
                (value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(opt(libc::IPV6_V6ONLY, &off), 0);
        let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_port = port.to_be();
        let rc = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        );
        assert_eq!(
            rc,
            0,
            "bind [::]:{port}: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::listen(fd, 16), 0);
        TcpListener::from_raw_fd(fd)
    }
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_seen_as_ipv4() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    // The proxy: a `[::]` listener in a thread named `envoy`.
    let listener = pair.server.run("envoy", || dual_stack_listener(PORT));
    let proxy = pair.server.spawn("envoy", move || {
        let (mut conn, from) = listener.accept().expect("accept");
        assert!(matches!(from, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some()));
        let mut request = [0u8; 4];
        for _ in 0..2 {
            conn.read_exact(&mut request).expect("request");
            conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .expect("response");
        }
    });
    let to = SocketAddr::new(pair.server_v4, PORT);
    let mut client = pair.client.run("ct-client", move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect")
    });
    let mut buf = [0u8; 128];
    for _ in 0..2 {
        client.write_all(b"GET ").unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        thread::sleep(Duration::from_millis(100));
    }
    proxy.join().expect("proxy");
    let client_local = client.local_addr().unwrap();
    drop(client);
    trace.wait_for("both closes and the 503s", |ev| {
        select(ev, "close", |e| {
            e["local"] == client_local.to_string() || e["remote"] == client_local.to_string()
        })
        .len()
            == 2
            && select(ev, "http_503", |_| true).len() == 2
    });
    thread::sleep(Duration::from_secs(2));
    let events = trace.stop();

    let server_end = SocketAddr::new(pair.server_v4, PORT).to_string();
    let accepted = select(&events, "accept", |e| {
        e["remote"] == client_local.to_string()
    });
    assert_eq!(accepted.len(), 1, "{}", dump(&events));
    assert_eq!(
        (
            accepted[0]["family"].as_str(),
            accepted[0]["local"].as_str()
        ),
        (Some("ipv4"), Some(server_end.as_str())),
        "{}",
        accepted[0]
    );
    let s = select(&events, "close", |e| {
        e["remote"] == client_local.to_string()
    });
    assert_eq!(s.len(), 1, "{}", dump(&events));
    assert_eq!(s[0]["local"], server_end);
    assert_eq!(s[0]["comm"], "envoy");
    // Activity on the AF_INET6 socket: two requests in, two responses out.
    assert_eq!(s[0]["requests"], 2, "{}", s[0]);
    assert_eq!(s[0]["rx_bytes"], 8, "{}", s[0]);
    let peeked = select(&events, "http_503", |_| true);
    assert_eq!(peeked.len(), 2, "{}", dump(&events));
    assert!(
        peeked.iter().all(|e| e["pod"] == "server"),
        "{}",
        dump(&events)
    );
}

/// A DNS answer from an IPv4 server received on an AF_INET6 UDP socket
/// (a dual-stack resolver socket) is parsed from the IPv4 packet.
#[test]
fn a_dns_answer_over_ipv4_to_an_ipv6_socket_is_seen() {
    require_root();
    let pair = PodPair::new();
    let trace = TraceSession::start(&["--namespace", &pair.namespace, "--event", "dns"]);
    let server = SocketAddr::new(pair.server_v4, 53);
    let socket = pair
        .server
        .run("ct-dns", move || UdpSocket::bind(server).expect("bind :53"));
    let responder = thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (_, from) = socket.recv_from(&mut buf).unwrap();
        let answer = support::dns::response(0x4242, "dual.lab.example", [203, 0, 113, 6]);
        socket.send_to(&answer, from).unwrap();
    });
    let mapped = match server {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), 53),
        SocketAddr::V6(_) => unreachable!(),
    };
    pair.client.run("ct-resolver", move || {
        // `[::]` with the default IPV6_V6ONLY=0: dual stack.
        let s = UdpSocket::bind("[::]:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"query", mapped).unwrap();
        let mut buf = [0u8; 512];
        s.recv_from(&mut buf).unwrap();
    });
    responder.join().unwrap();
    trace.wait_for("the dns answer", |ev| !ev.is_empty());
    let events = trace.stop();
    assert_eq!(events.len(), 1, "{}", dump(&events));
    assert_eq!(events[0]["name"], "dual.lab.example");
    assert_eq!(events[0]["pod"], "client");
    assert_eq!(events[0]["answers"], serde_json::json!(["203.0.113.6"]));
}
