//! Bounded label cardinality in the real daemon: 10 000 distinct peers and
//! 1 000 pods churned through it with real kernel traffic. Every family's
//! pods stay under `--pod-cap` (+ `other`), each pod's peers under
//! `--peer-cap` (+ `other`), the overflow is counted, findings stay under
//! `--findings-cap`, and memory stays bounded.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use support::{
    daemon::{Daemon, raise_fd_limit, series_per_family},
    http::get as scrape,
    http::metric,
    netns::Netns,
    require_root, unique_tag,
};

/// The documented defaults (`conntracer daemon --help`).
const POD_CAP: usize = 500;
const PEER_CAP: usize = 20;
const FINDINGS_CAP: usize = 1000;

const PEERS: usize = 10_000;
const PODS: usize = 1_000;
/// Refused connects, each to its own port: one finding each.
const REFUSED: usize = 2_000;
/// Distinct DNS names answered in the peers' pod, each twice with a new
/// address (a change, which makes a `dns_answer_changes` series).
const NAMES: usize = 200;
/// Peers connected at once (then closed after an idle pause, so the
/// server side sees each peer close an idle connection).
const BATCH: usize = 500;

/// Peer `i`: an address of 10.77.0.0/16, which the test namespace's local
/// route makes its own.
fn peer_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        77,
        (1 + i / 250) as u8,
        (1 + i % 250) as u8,
    ))
}

/// `PEERS` clients, each from its own address, to one server: the server's
/// peer label (`--peer-addresses`) has `PEERS` candidates.
fn distinct_peers(ns: &Netns) -> thread::JoinHandle<usize> {
    ns.spawn("cd-peers", || {
        let listener = TcpListener::bind("10.78.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut made = 0;
        for batch in 0..PEERS.div_ceil(BATCH) {
            assert!(Instant::now() < deadline, "peers took over 40 s");
            let mut open = Vec::with_capacity(BATCH * 2);
            for i in batch * BATCH..((batch + 1) * BATCH).min(PEERS) {
                let socket = socket2_bind(peer_address(i));
                let c = connect_from(socket, server);
                let (s, _) = listener.accept().unwrap();
                open.push((c, s));
                made += 1;
            }
            // Idle long enough to count as the peer closing an idle connection.
            thread::sleep(Duration::from_millis(150));
            for (c, s) in open.drain(..) {
                drop(c);
                thread::sleep(Duration::ZERO);
                drop(s);
            }
        }
        made
    })
}

/// A TCP socket bound to `ip` (any port), as a raw fd.
fn socket2_bind(ip: IpAddr) -> i32 {
    let IpAddr::V4(v4) = ip else { unreachable!() };
    // SAFETY: plain socket/bind calls on a fresh fd with a valid sockaddr_in.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(v4).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "bind {ip}: {}", std::io::Error::last_os_error());
        fd
    }
}

fn connect_from(fd: i32, to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = to else {
        unreachable!()
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid fd we own and a valid sockaddr_in.
    unsafe {
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, 0, "connect {to}: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// `REFUSED` connects to closed ports of one peer: each a failure with its
/// own port, and so its own finding.
fn refused_connects(ns: &Netns) -> thread::JoinHandle<usize> {
    ns.spawn("cd-refused", || {
        let deadline = Instant::now() + Duration::from_secs(30);
        (0..REFUSED)
            .take_while(|_| Instant::now() < deadline)
            .filter(|i| {
                let to = SocketAddr::new(peer_address(*i), 20_000 + *i as u16);
                TcpStream::connect(to).is_err()
            })
            .count()
    })
}

/// A DNS response for `name` with one A record, TTL 30, answering query `id`.
fn dns_response(id: u16, name: &str, ip: [u8; 4]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
    m.extend_from_slice(&ip);
    m
}

/// `NAMES` names answered from port 53 in the peers' pod, each twice with
/// a different address; returns the answers received.
fn distinct_names(ns: &Netns) -> thread::JoinHandle<usize> {
    ns.spawn("cd-dns", || {
        let server = std::net::UdpSocket::bind("10.78.0.1:53").expect("bind :53");
        let client = std::net::UdpSocket::bind("10.78.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let to = client.local_addr().unwrap();
        let mut buf = [0u8; 512];
        let mut received = 0;
        for i in 0..NAMES {
            for round in 0..2u8 {
                let name = format!("svc{i}.churn.example");
                let answer = dns_response(i as u16, &name, [203, 0, 113, 1 + round]);
                server.send_to(&answer, to).unwrap();
                if client.recv_from(&mut buf).is_ok() {
                    received += 1;
                }
            }
        }
        received
    })
}

/// Sets `lo` up in the calling thread's network namespace.
fn loopback_up() {
    // SAFETY: ioctls on a fresh datagram socket with a zeroed ifreq naming `lo`.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut ifr),
            0,
            "lo up: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
}

/// `PODS` short-lived pods: anonymous network namespaces (the daemon labels
/// each `netns-INODE`, as it does any namespace no source names), each
/// making one loopback connection. Four threads, each moving to a new
/// namespace per pod; the old one goes when its sockets do.
fn churned_pods() -> usize {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            thread::Builder::new()
                .name(format!("cd-pods{t}"))
                .spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut made = 0;
                    for _ in 0..PODS / 4 {
                        if Instant::now() > deadline {
                            break;
                        }
                        // SAFETY: moves only this thread to a new network namespace.
                        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
                        loopback_up();
                        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                        let c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                        let (s, _) = listener.accept().unwrap();
                        drop((c, s, listener));
                        made += 1;
                    }
                    made
                })
                .unwrap()
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// Label `key`'s value in a sample line.
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

#[test]
fn labels_and_findings_stay_bounded_under_churn() {
    require_root();
    raise_fd_limit();
    let daemon = Daemon::start(&["--peer-addresses"]);
    let tag = unique_tag();
    let ns = Netns::new(&format!("cd{tag}.peers"));
    ns.exec(&["route", "add", "local", "10.77.0.0/16", "dev", "lo"]);
    ns.exec(&["addr", "add", "10.78.0.1/32", "dev", "lo"]);
    let rss_before = daemon.rss_mib();
    let started = Instant::now();

    // The peers' pod first, so that it is labelled before the pod cap fills.
    let peers = distinct_peers(&ns);
    let refused = refused_connects(&ns);
    let names = distinct_names(&ns);
    let (peers, refused) = (peers.join().unwrap(), refused.join().unwrap());
    let names = names.join().unwrap();
    let pods = churned_pods();
    let churn = started.elapsed();
    assert_eq!(
        (peers, refused, pods, names),
        (PEERS, REFUSED, PODS, 2 * NAMES),
        "churn cut short"
    );

    // Wait (bounded) until the daemon has counted the last of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = daemon.metrics();
        let overflows = |l| metric(&body, "conntracer_label_overflows_total", &[("label", l)]);
        let dropped = metric(&body, "conntracer_findings_dropped_total", &[]);
        if (overflows("pod") > 0.0
            && overflows("peer") >= (PEERS - PEER_CAP) as f64
            && overflows("name") >= (NAMES - PEER_CAP) as f64
            && dropped >= (REFUSED - FINDINGS_CAP) as f64
            && metric(
                &body,
                "conntracer_connections_opened_total",
                &[("pod", "other")],
            ) > 0.0)
            || Instant::now() > deadline
        {
            break body;
        }
        thread::sleep(Duration::from_millis(300));
    };
    let counted_after = started.elapsed() - churn;
    let rss_after = daemon.rss_mib();
    let (_, findings) = scrape(daemon.addr, "/findings").expect("/findings answered");
    let findings: serde_json::Value = serde_json::from_str(&findings).unwrap();
    let findings = findings["findings"].as_array().unwrap().len();

    let samples: Vec<&str> = body.lines().filter(|l| !l.starts_with('#')).collect();
    let mut pods_per_family: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    let mut peers_per_pod: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    let mut names_per_pod: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for line in &samples {
        let family = line.split(['{', ' ']).next().unwrap();
        if let (Some(namespace), Some(pod)) = (label(line, "namespace"), label(line, "pod")) {
            pods_per_family
                .entry(family)
                .or_default()
                .insert((namespace, pod));
            if let Some(name) = label(line, "name") {
                names_per_pod
                    .entry((namespace, pod))
                    .or_default()
                    .insert(name);
            }
            if let Some(peer) = label(line, "peer") {
                peers_per_pod
                    .entry((namespace, pod))
                    .or_default()
                    .insert(peer);
            }
        }
    }
    let overflows = |l| metric(&body, "conntracer_label_overflows_total", &[("label", l)]);
    let dropped = metric(&body, "conntracer_findings_dropped_total", &[]);
    let server = (format!("cd{tag}"), "peers".to_owned());
    let server_peers = peers_per_pod
        .get(&(server.0.as_str(), server.1.as_str()))
        .cloned()
        .unwrap_or_default();
    let server_names = names_per_pod
        .get(&(server.0.as_str(), server.1.as_str()))
        .cloned()
        .unwrap_or_default();
    println!(
        "cardinality: {PEERS} peers, {PODS} pods, {REFUSED} refused ports and {NAMES} DNS names \
         churned in {:.1} s",
        churn.as_secs_f64()
    );
    for (family, lines) in series_per_family(&body) {
        let pods = pods_per_family
            .iter()
            .filter(|(f, _)| f.starts_with(family.as_str()))
            .map(|(_, p)| p.len())
            .max()
            .unwrap_or(0);
        if lines > 1 {
            println!("cardinality: {family}: {lines} lines, {pods} pods");
        }
    }
    println!(
        "cardinality: the peers' server pod has {} peer values (cap {PEER_CAP} + other); \
         most peers of any pod: {}",
        server_peers.len(),
        peers_per_pod.values().map(BTreeSet::len).max().unwrap_or(0)
    );
    println!(
        "cardinality: the peers' pod has {} DNS name values (cap {PEER_CAP} + other)",
        server_names.len()
    );
    println!(
        "cardinality: overflows counted: pod {}, peer {}, name {}; findings {findings} \
         (cap {FINDINGS_CAP}), {dropped} dropped",
        overflows("pod"),
        overflows("peer"),
        overflows("name")
    );
    println!(
        "cardinality: counted {:.1} s after the churn; events lost {}",
        counted_after.as_secs_f64(),
        metric(&body, "conntracer_events_lost_total", &[])
    );
    println!(
        "cardinality: /metrics {} lines, {} KiB; daemon RSS before {rss_before:.1} MiB, after {rss_after:.1} MiB",
        body.lines().count(),
        body.len() / 1024
    );

    for (family, pods) in &pods_per_family {
        assert!(
            pods.len() <= POD_CAP + 1,
            "{family}: {} pods (cap {POD_CAP} + other)",
            pods.len()
        );
    }
    assert!(
        pods_per_family["conntracer_connections_opened_total"].contains(&("other", "other")),
        "pods past the cap are counted under other"
    );
    for (pod, peers) in &peers_per_pod {
        assert!(
            peers.len() <= PEER_CAP + 1,
            "{pod:?}: {} peers (cap {PEER_CAP} + other)",
            peers.len()
        );
    }
    assert!(
        server_peers.contains("other"),
        "the server's peers past the cap are other: {server_peers:?}"
    );
    for (pod, names) in &names_per_pod {
        assert!(
            names.len() <= PEER_CAP + 1,
            "{pod:?}: {} DNS names (cap {PEER_CAP} + other)",
            names.len()
        );
    }
    assert!(
        server_names.contains("other"),
        "names past the cap are other: {server_names:?}"
    );
    assert!(overflows("name") >= (NAMES - PEER_CAP) as f64);
    assert!(overflows("pod") > 0.0);
    assert!(overflows("peer") >= (PEERS - PEER_CAP) as f64);
    assert!(findings <= FINDINGS_CAP, "{findings} findings");
    // Not every refused connect need be counted (events lost under load).
    assert!(dropped > 0.0, "no finding dropped");
    assert!(
        rss_after < rss_before + 128.0,
        "RSS grew from {rss_before:.1} to {rss_after:.1} MiB"
    );
}
