//! Ring buffer records, built with tracer-common's own types: one
//! connection's life (connect, reuse, a 503, a reset, the close) in IPv4 and
//! IPv6, and DNS ring records carrying the answers dnsmasq gave.

use tracer_common::{
    event::{
        ConnEvent, DNS_CAPTURE_MAX, DnsEvent, EventKind, REASON_REPORTED, ResetSide, Role, flags,
    },
    tcp::{AF_INET, AF_INET6, TCP_CLOSE, TCP_ESTABLISHED},
};

/// First byte of a `kernel_records` input: which ring the records came from.
const CONN_RING: u8 = 0;
const DNS_RING: u8 = 1;

const SEC: u64 = 1_000_000_000;

pub fn build(dns: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (family, name) in [(AF_INET, "ipv4"), (AF_INET6, "ipv6")] {
        let mut input = vec![CONN_RING];
        for event in life(family) {
            input.extend_from_slice(bytes(&event));
        }
        seeds.push((format!("conn-life-{name}.bin"), input));
    }
    let mut input = vec![DNS_RING];
    for (name, answer) in dns {
        input.extend_from_slice(bytes(&dns_event(name.starts_with("tcp-"), answer)));
    }
    seeds.push(("dns-answers.bin".to_owned(), input));
    seeds
}

/// A client connection from an Envoy (uid 1337) that is reused after 40 s
/// idle, writes a 503, and is reset by its peer.
fn life(family: u16) -> Vec<ConnEvent> {
    let mut base = ConnEvent {
        sock: 0xffff_8880_0000_1000,
        tcp_state: TCP_ESTABLISHED,
        ..Default::default()
    };
    let st = &mut base.state;
    st.tuple.family = family;
    (st.tuple.sport, st.tuple.dport) = (40_000, 8080);
    if family == AF_INET {
        st.tuple.saddr[..4].copy_from_slice(&[10, 200, 0, 2]);
        st.tuple.daddr[..4].copy_from_slice(&[10, 200, 0, 3]);
    } else {
        st.tuple.saddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        st.tuple.daddr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
    }
    st.netns = 4_026_532_100;
    st.role = Role::Client as u8;
    (st.owner.tgid, st.owner.pid, st.owner.uid) = (100, 101, 1337);
    st.owner.comm[..5].copy_from_slice(b"envoy");
    st.stats.start_ns = 10 * SEC;
    st.stats.established_ns = 10 * SEC + 200_000;
    st.stats.flags = flags::ESTABLISHED;
    let at = |kind: EventKind, ts: u64, edit: &dyn Fn(&mut ConnEvent)| {
        let mut e = base;
        e.kind = kind as u8;
        e.ts_ns = ts;
        edit(&mut e);
        e
    };
    vec![
        at(EventKind::Connect, 10 * SEC + 200_000, &|_| {}),
        at(EventKind::Reuse, 55 * SEC, &|e| {
            e.state.stats.last_reuse_idle_ns = 40 * SEC;
            e.state.stats.max_reuse_idle_ns = 40 * SEC;
            e.state.stats.last_send_ns = 55 * SEC;
            e.state.stats.requests = 2;
        }),
        at(EventKind::HttpStatus, 55 * SEC + 1_000, &|e| {
            e.http_status = 503
        }),
        at(EventKind::Reset, 55 * SEC + 500_000, &|e| {
            e.reset_side = ResetSide::Received as u8;
            e.state.stats.flags |= flags::RST_IN;
            e.state.stats.rst_ns = 55 * SEC + 500_000;
            e.state.stats.peer_close_idle_ns = 40 * SEC;
        }),
        at(EventKind::Reset, 55 * SEC + 600_000, &|e| {
            e.reset_side = ResetSide::Sent as u8;
            e.has_reason = REASON_REPORTED;
            e.reset_reason = 2;
        }),
        at(EventKind::Close, 55 * SEC + 700_000, &|e| {
            e.tcp_state = TCP_CLOSE;
            e.state.stats.flags |= flags::RST_IN | flags::CLOSED;
            e.state.stats.closed_ns = 55 * SEC + 700_000;
            e.state.stats.sk_err = 104;
        }),
    ]
}

fn dns_event(tcp: bool, answer: &[u8]) -> DnsEvent {
    let mut event = DnsEvent {
        ts_ns: 9 * SEC,
        netns_cookie: 4096,
        tuple: Default::default(),
        uid: 1337,
        protocol: if tcp { 6 } else { 17 },
        _pad: [0; 3],
        netns: 0,
        _pad2: 0,
        len: answer.len() as u32,
        captured: answer.len().min(DNS_CAPTURE_MAX) as u32,
        data: [0; DNS_CAPTURE_MAX],
    };
    event.tuple.family = AF_INET;
    (event.tuple.sport, event.tuple.dport) = (53, 41_000);
    let n = event.captured as usize;
    event.data[..n].copy_from_slice(&answer[..n]);
    event
}

/// The record as the ring buffer carries it.
fn bytes<T: Copy>(record: &T) -> &[u8] {
    // SAFETY: the records are #[repr(C)] plain old data without padding
    // holes left uninitialised (every padding is an explicit field).
    unsafe {
        std::slice::from_raw_parts((record as *const T).cast::<u8>(), std::mem::size_of::<T>())
    }
}
