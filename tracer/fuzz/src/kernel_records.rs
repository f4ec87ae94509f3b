//! Ring buffer records → events → the daemon's pipeline. The first byte
//! picks the ring (connection events or DNS answers); the rest is cut into
//! records of that ring's size, a short tail included, as the reader would
//! see them after a build mismatch.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use tracer::{
    analysis::AnalysisConfig,
    events::{Clock, Event, Family},
    kernel::reset_reasons::ResetReasons,
    metadata::{PodName, PodSource, Pods, addresses::NetnsAddresses, cookies::NetnsCookies},
    pipeline::Pipeline,
    probes::reader::{decode, decode_dns},
};
use tracer_common::{
    event::{ConnEvent, DnsEvent, EventKind, REASON_INFERRED},
    tcp::AF_INET6,
};

const READ_NS: u64 = 86_400_000_000_000;

/// Names no namespace: the fuzzer must not depend on the machine's.
struct NoPods;

impl PodSource for NoPods {
    fn lookup(&mut self, _netns: u32) -> Option<PodName> {
        None
    }
}

pub fn check(data: &[u8]) {
    let Some((&ring, records)) = data.split_first() else {
        return;
    };
    let clock = Clock::with_offset(std::time::Duration::from_secs(1_700_000_000));
    let mut pipeline = Pipeline::new(
        AnalysisConfig::default(),
        Pods::new(Box::new(NoPods)),
        64,
        ResetReasons::default(),
    );
    pipeline.clock = clock;
    // Namespace cookies and addresses given, not scanned from this machine
    // (a scan enters every namespace: the daemon does it rarely, an input
    // with an unknown cookie would do it every time).
    pipeline.cookies = NetnsCookies::from_map(HashMap::from([(4096, 4_026_532_100)]));
    pipeline.addresses = NetnsAddresses::from_map(HashMap::from([(
        4_026_532_100,
        HashSet::from([
            IpAddr::from([10, 200, 0, 2]),
            IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 2]),
        ]),
    )]));
    let mut observations = Vec::new();
    // Records are read on the monotonic clock of a machine up for a day
    // (the daemon's `now` is never near u64::MAX; a record's time may be
    // anything).
    if ring % 2 == 0 {
        for bytes in records.chunks(ConnEvent::SIZE) {
            let Some(raw) = decode(bytes) else {
                assert!(bytes.len() < ConnEvent::SIZE, "a whole record decodes");
                continue;
            };
            decoded_within_bounds(&raw, &clock);
            pipeline.process(&raw, READ_NS, &mut observations, None);
        }
    } else {
        for bytes in records.chunks(DnsEvent::SIZE) {
            let Some(raw) = decode_dns(bytes) else {
                assert!(bytes.len() < DnsEvent::SIZE, "a whole record decodes");
                continue;
            };
            pipeline.process_dns(&raw, &mut observations);
        }
    }
    // Time passes: whatever settled is decided.
    pipeline.tick(READ_NS + 10_000_000_000, &mut observations);
}

/// What `Event::decode` makes of a record matches the record, field by field.
fn decoded_within_bounds(raw: &ConnEvent, clock: &Clock) {
    let Ok(event) = Event::decode(raw, clock) else {
        let known = EventKind::from_u8(raw.kind);
        assert!(
            known.is_none() || known == Some(EventKind::HttpStatus),
            "known kinds decode"
        );
        return;
    };
    assert_eq!(event.kind as u8, raw.kind);
    assert_eq!(event.time, clock.wall(raw.ts_ns));
    let v6 = raw.state.tuple.family == AF_INET6;
    assert_eq!(event.family == Family::Ipv6, v6);
    for (addr, raw_addr, port) in [
        (event.local, &raw.state.tuple.saddr, raw.state.tuple.sport),
        (event.remote, &raw.state.tuple.daddr, raw.state.tuple.dport),
    ] {
        assert_eq!(addr.port(), port);
        match addr.ip() {
            IpAddr::V4(ip) => assert!(!v6 && ip.octets() == raw_addr[..4]),
            IpAddr::V6(ip) => assert!(v6 && ip.octets() == *raw_addr),
        }
    }
    assert!(event.process.comm.chars().count() <= 16);
    assert!(!event.process.comm.contains('\0'));
    assert_eq!(event.reset.is_some(), event.kind == EventKind::Reset);
    if let Some(reset) = event.reset {
        assert_eq!(reset.reason.is_some(), raw.has_reason != 0);
        assert_eq!(reset.inferred, raw.has_reason == REASON_INFERRED);
    }
    assert_eq!(
        event.http_status.is_some(),
        event.kind == EventKind::HttpStatus
    );
    if let Some(status) = event.http_status {
        assert_eq!(u32::from(status), raw.http_status, "status kept whole");
    }
}
