//! No payload is copied out of the kernel but an HTTP status line and DNS
//! answers: real HTTP requests and responses through a proxy (the 503 peek's
//! path) and a DNS exchange carry a unique marker in their request line,
//! headers, bodies, reason phrase and DNS query; then every map of the
//! loaded programs is read whole (`bpftool map dump`, and the ring buffers'
//! memory mapped read-only, records already consumed included) and every
//! event `conntracer trace` printed is searched. The marker is nowhere;
//! what must be there (the proxy's comm, the DNS answer's name) is found by
//! the same search, so the search itself is proven.

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _},
    process::Command,
    time::Duration,
};

use aya::maps::{MapInfo, MapType};
use support::{netns::PodPair, require_root, tracer::TraceSession};

const PORT: u16 = 8080;
const REQUESTS: usize = 3;

/// A proxy (comm `envoy`, so the tracer treats it as one) answering each
/// request on one keep-alive connection: 200, 503, then a 503 whose reason
/// phrase is the marker; every header and body carries it too. Its listener
/// is returned, still open (so it stays in the listener map).
fn proxy_exchange(pair: &PodPair, marker: &str) -> TcpListener {
    let server = SocketAddr::new(pair.server_v4, PORT);
    let listener = pair
        .server
        .run("envoy", move || TcpListener::bind(server).expect("bind"));
    let answers: Vec<String> = [
        "200 OK".to_owned(),
        "503 Service Unavailable".to_owned(),
        format!("503 {marker}"),
    ]
    .iter()
    .map(|status| {
        let body = format!("{marker} response body");
        format!(
            "HTTP/1.1 {status}\r\nx-trace-marker: {marker}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    })
    .collect();
    let proxy = std::thread::Builder::new()
        .name("envoy".into())
        .spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let kept = listener;
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut conn = conn;
            for answer in answers {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(n) = line.strip_prefix("content-length: ") {
                        length = n.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                conn.write_all(answer.as_bytes()).unwrap();
            }
            kept
        })
        .unwrap();
    let marker = marker.to_owned();
    pair.client.run("ct-caller", move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        for i in 0..REQUESTS {
            let body = format!("{marker} request body {i}");
            write!(
                s,
                "POST /{marker}/{i} HTTP/1.1\r\nhost: cart\r\nx-trace-marker: {marker}\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(n) = line.strip_prefix("content-length: ") {
                    length = n.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut reply = vec![0; length];
            reader.read_exact(&mut reply).unwrap();
        }
    });
    proxy.join().unwrap()
}

/// A DNS query carrying the marker, answered for `name` from the server pod.
fn dns_exchange(pair: &PodPair, marker: &str, name: &'static str) {
    let server = SocketAddr::new(pair.server_v4, 53);
    let socket = pair
        .server
        .run("ct-dns", move || UdpSocket::bind(server).expect("bind :53"));
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (_, from) = socket.recv_from(&mut buf).unwrap();
        socket
            .send_to(
                &support::dns::response(0x5151, name, [203, 0, 113, 51]),
                from,
            )
            .unwrap();
    });
    let query = format!("query {marker}");
    pair.client.run("ct-resolver", move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(query.as_bytes(), server).unwrap();
        let mut buf = [0u8; 512];
        s.recv_from(&mut buf).unwrap();
    });
    responder.join().unwrap();
}

/// The bytes of one map, whole.
struct MapBytes {
    name: String,
    kind: MapType,
    bytes: Vec<u8>,
}

/// Every byte of a ring buffer's data area (twice mapped by the kernel, so
/// a record that wraps reads contiguously), read through a read-only mapping.
fn ring_bytes(info: &MapInfo) -> Vec<u8> {
    let fd = info.fd().expect("map fd");
    let page = 4096usize;
    let size = info.max_entries() as usize;
    let len = 2 * page + 2 * size;
    // SAFETY: a read-only shared mapping of the ring buffer's pages (consumer,
    // producer, data twice), copied out and unmapped before returning.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_fd().as_raw_fd(),
            0,
        );
        assert_ne!(
            at,
            libc::MAP_FAILED,
            "mmap ring buffer: {}",
            std::io::Error::last_os_error()
        );
        let data = std::slice::from_raw_parts(at.cast::<u8>().add(2 * page), 2 * size).to_vec();
        libc::munmap(at, len);
        data
    }
}

/// Every key and value `bpftool` dumps (its JSON gives them as hex bytes).
fn dumped_bytes(id: u32) -> Vec<u8> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map dump id {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bytes = Vec::new();
    collect_hex(&json, &mut bytes);
    bytes
}

fn collect_hex(value: &serde_json::Value, out: &mut Vec<u8>) {
    match value {
        serde_json::Value::Array(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|v| v.as_str().is_some_and(|s| s.starts_with("0x"))) =>
        {
            out.extend(
                items
                    .iter()
                    .map(|v| u8::from_str_radix(&v.as_str().unwrap()[2..], 16).unwrap()),
            );
            out.push(0);
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_hex(v, out)),
        serde_json::Value::Object(fields) => fields.values().for_each(|v| collect_hex(v, out)),
        _ => {}
    }
}

/// Every map of the programs `ids`, read whole.
fn every_map(program_ids: &[u32]) -> Vec<MapBytes> {
    let mut map_ids: Vec<u32> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| program_ids.contains(&p.id()))
        .flat_map(|p| p.map_ids().ok().flatten().unwrap_or_default())
        .collect();
    map_ids.sort_unstable();
    map_ids.dedup();
    map_ids
        .into_iter()
        .map(|id| {
            let info = MapInfo::from_id(id).expect("map info");
            let kind = info.map_type().expect("map type");
            let bytes = if kind == MapType::RingBuf {
                ring_bytes(&info)
            } else {
                dumped_bytes(id)
            };
            MapBytes {
                name: info.name_as_str().unwrap_or("?").to_owned(),
                kind,
                bytes,
            }
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_request_or_response_byte_leaves_the_kernel_but_the_status_line_and_dns_answers() {
    require_root();
    let pair = PodPair::new();
    let marker = format!(
        "ctmark{}q{}",
        support::unique_tag(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let trace = TraceSession::start(&["--namespace", &pair.namespace]);
    let _listener = proxy_exchange(&pair, &marker);
    let name = "api.nopayload.example";
    dns_exchange(&pair, &marker, name);
    let events = trace.wait_for("the 503s, the DNS answer and the close", |ev| {
        ev.iter().filter(|e| e["event"] == "http_503").count() == 2
            && ev.iter().any(|e| e["event"] == "dns")
            && ev
                .iter()
                .any(|e| e["event"] == "close" && e["comm"] == "envoy")
    });

    // Every map, while the programs are loaded.
    let maps = every_map(&trace.program_ids);
    let mut total = 0;
    for map in &maps {
        total += map.bytes.len();
        println!(
            "map {:<14} {:?}: {} bytes read",
            map.name,
            map.kind,
            map.bytes.len()
        );
        assert!(
            !contains(&map.bytes, marker.as_bytes()),
            "the marker is in map {} ({:?})",
            map.name,
            map.kind
        );
    }
    let names: Vec<&str> = maps.iter().map(|m| m.name.as_str()).collect();
    for wanted in ["EVENTS", "DNS_EVENTS", "SOCKS", "LISTENERS"] {
        assert!(names.contains(&wanted), "{wanted} not read: {names:?}");
    }
    // The same search finds what is meant to be there: the proxy's comm in
    // the events and the listener map, the answer's name (wire format) in the
    // DNS ring.
    let ring = |name: &str| &maps.iter().find(|m| m.name == name).unwrap().bytes;
    assert!(contains(ring("EVENTS"), b"envoy"));
    assert!(
        contains(ring("LISTENERS"), b"envoy"),
        "bpftool's dump decoded"
    );
    assert!(contains(ring("DNS_EVENTS"), b"\x09nopayload\x07example"));

    let mut trace = trace;
    let events_after = trace.stop_with(libc::SIGINT);
    assert!(events_after.len() >= events.len());
    let printed: String = events_after.iter().map(|e| e.to_string() + "\n").collect();
    println!(
        "{} maps ({total} bytes) and {} events ({} bytes of JSON) searched: marker `{marker}` absent; \
         {} http_503 events, {} dns events",
        maps.len(),
        events_after.len(),
        printed.len(),
        events_after
            .iter()
            .filter(|e| e["event"] == "http_503")
            .count(),
        events_after.iter().filter(|e| e["event"] == "dns").count(),
    );
    assert!(!printed.contains(&marker), "{printed}");
    assert!(printed.contains(name));
}
