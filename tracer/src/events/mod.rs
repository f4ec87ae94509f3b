//! Kernel records turned into typed events.

pub mod clock;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::SystemTime,
};

use tracer_common::{
    event::{ConnEvent, ConnStats, EventKind, REASON_INFERRED, ResetSide, Role, Tuple},
    tcp::AF_INET6,
};

pub use clock::Clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family of an address (IPv4-mapped IPv6 counts as IPv6: the socket's).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// The process that owns the socket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Process {
    /// Process id (thread group id); 0 when not known.
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: String,
}

/// A reset, sent or received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    pub side: ResetSide,
    /// `enum sk_rst_reason` value (kernels 6.10+, resets sent).
    pub reason: Option<u32>,
    /// The reason was inferred (a reset from a namespace's control socket
    /// on a kernel whose reset tracepoint misses those), not reported.
    pub inferred: bool,
}

impl Event {
    /// Opened before the tracer started (found by the start-up enumeration).
    pub fn seeded(&self) -> bool {
        self.stats.flags & tracer_common::event::flags::SEEDED != 0
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub time: SystemTime,
    /// Kernel monotonic time, the clock of every `stats` timestamp.
    pub mono_ns: u64,
    /// Kernel socket identity while the socket lives (never printed).
    pub sock: u64,
    pub netns: u32,
    pub role: Role,
    pub process: Process,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub tcp_state: u32,
    pub reset: Option<Reset>,
    /// For `HttpStatus`: the status code a socket wrote.
    pub http_status: Option<u16>,
    pub stats: ConnStats,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown event kind {0}")]
    Kind(u8),
    /// The kernel matches three ASCII digits, so anything else is a record
    /// this build cannot read.
    #[error("HTTP status {0} out of range")]
    HttpStatus(u32),
}

/// What an HTTP status code can be (RFC 9110 §15).
const HTTP_STATUS_RANGE: std::ops::RangeInclusive<u32> = 100..=599;

impl Event {
    pub fn decode(raw: &ConnEvent, clock: &Clock) -> Result<Self, DecodeError> {
        let kind = EventKind::from_u8(raw.kind).ok_or(DecodeError::Kind(raw.kind))?;
        let http_status = match kind {
            EventKind::HttpStatus if HTTP_STATUS_RANGE.contains(&raw.http_status) => {
                Some(raw.http_status as u16)
            }
            EventKind::HttpStatus => return Err(DecodeError::HttpStatus(raw.http_status)),
            _ => None,
        };
        let st = &raw.state;
        let (family, local, remote) = tuple_addresses(&st.tuple);
        let reset = (kind == EventKind::Reset).then(|| Reset {
            side: match raw.reset_side {
                1 => ResetSide::Sent,
                2 => ResetSide::Received,
                _ => ResetSide::None,
            },
            reason: (raw.has_reason != 0).then_some(raw.reset_reason),
            inferred: raw.has_reason == REASON_INFERRED,
        });
        Ok(Self {
            kind,
            time: clock.wall(raw.ts_ns),
            mono_ns: raw.ts_ns,
            sock: raw.sock,
            netns: st.netns,
            role: match st.role {
                1 => Role::Client,
                2 => Role::Server,
                3 => Role::Listener,
                _ => Role::Unknown,
            },
            process: Process {
                pid: st.owner.tgid,
                tid: st.owner.pid,
                uid: st.owner.uid,
                cgroup_id: st.owner.cgroup_id,
                comm: comm(&st.owner.comm),
            },
            family,
            local,
            remote,
            tcp_state: raw.tcp_state,
            reset,
            http_status,
            stats: st.stats,
        })
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The family and the two ends (`saddr:sport`, `daddr:dport`) of a tuple.
/// An AF_INET6 socket talking IPv4 (a dual-stack `[::]` listener's accepted
/// connections, a Java client) holds IPv4-mapped addresses: those are shown,
/// and joined, as the IPv4 they are on the wire (the packet programs report
/// them so).
pub fn tuple_addresses(t: &Tuple) -> (Family, SocketAddr, SocketAddr) {
    if t.family == AF_INET6 {
        let (local, remote) = (Ipv6Addr::from(t.saddr), Ipv6Addr::from(t.daddr));
        let local_v4 = local
            .to_ipv4_mapped()
            .or_else(|| local.is_unspecified().then_some(Ipv4Addr::UNSPECIFIED));
        if let (Some(local), Some(remote)) = (local_v4, remote.to_ipv4_mapped()) {
            return (
                Family::Ipv4,
                SocketAddr::new(IpAddr::V4(local), t.sport),
                SocketAddr::new(IpAddr::V4(remote), t.dport),
            );
        }
        return (
            Family::Ipv6,
            SocketAddr::new(IpAddr::V6(local), t.sport),
            SocketAddr::new(IpAddr::V6(remote), t.dport),
        );
    }
    let v4 = |raw: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
    (
        Family::Ipv4,
        SocketAddr::new(v4(&t.saddr), t.sport),
        SocketAddr::new(v4(&t.daddr), t.dport),
    )
}

/// Names for the `event` field of trace output and for `--event` filters.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Listen => "listen",
        EventKind::ListenClose => "listen_close",
        EventKind::Connect => "connect",
        EventKind::Accept => "accept",
        EventKind::Reset => "reset",
        EventKind::Close => "close",
        EventKind::Reuse => "reuse",
        EventKind::HttpStatus => "http_503",
        EventKind::Seeded => "seeded",
    }
}

pub fn role_name(role: Role) -> Option<&'static str> {
    match role {
        Role::Client => Some("client"),
        Role::Server => Some("server"),
        Role::Listener => Some("listener"),
        Role::Unknown => None,
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{event::ListenerKey, tcp::AF_INET};

    use super::*;
    use crate::probes::reader::decode;

    fn raw(kind: EventKind, family: u16) -> ConnEvent {
        let mut ev = ConnEvent {
            kind: kind as u8,
            ts_ns: 5_000_000_000,
            sock: 0xffff_8880_1234_5678,
            ..Default::default()
        };
        ev.state.tuple.family = family;
        ev.state.tuple.sport = 40000;
        ev.state.tuple.dport = 8080;
        ev.state.netns = 4026532000;
        ev.state.role = Role::Client as u8;
        ev.state.owner.tgid = 42;
        ev.state.owner.pid = 43;
        ev.state.owner.comm = *b"envoy\0\0\0\0\0\0\0\0\0\0\0";
        ev
    }

    #[test]
    fn ipv4_mapped_tuples_are_ipv4() {
        let mapped = |ip: &str| -> [u8; 16] { ip.parse::<Ipv6Addr>().unwrap().octets() };
        let mut t = Tuple {
            family: AF_INET6,
            sport: 8080,
            dport: 40000,
            saddr: mapped("::ffff:10.0.0.2"),
            daddr: mapped("::ffff:10.0.0.1"),
            ..Default::default()
        };
        let (family, local, remote) = tuple_addresses(&t);
        assert_eq!(family, Family::Ipv4);
        assert_eq!(
            (local.to_string(), remote.to_string()),
            ("10.0.0.2:8080".to_owned(), "10.0.0.1:40000".to_owned())
        );
        // A `[::]` listener, and real IPv6, stay IPv6.
        t.saddr = [0; 16];
        t.daddr = [0; 16];
        assert_eq!(tuple_addresses(&t).0, Family::Ipv6);
        t.saddr = mapped("fd00::2");
        t.daddr = mapped("fd00::1");
        assert_eq!(tuple_addresses(&t).1.to_string(), "[fd00::2]:8080");
    }

    fn bytes(ev: &ConnEvent) -> Vec<u8> {
        // SAFETY: ConnEvent is plain old data.
        unsafe {
            std::slice::from_raw_parts((ev as *const ConnEvent).cast::<u8>(), ConnEvent::SIZE)
        }
        .to_vec()
    }

    #[test]
    fn ipv4_connect_decodes_from_ring_bytes() {
        let mut ev = raw(EventKind::Connect, AF_INET);
        ev.state.tuple.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        ev.state.tuple.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let decoded = decode(&bytes(&ev)).expect("full record");
        let clock = Clock::calibrate();
        let event = Event::decode(&decoded, &clock).unwrap();
        assert_eq!(event.kind, EventKind::Connect);
        assert_eq!(event.local.to_string(), "10.0.0.1:40000");
        assert_eq!(event.remote.to_string(), "10.0.0.2:8080");
        assert_eq!(event.family, Family::Ipv4);
        assert_eq!((event.process.pid, event.process.tid), (42, 43));
        assert_eq!(event.process.comm, "envoy");
        assert_eq!(event.role, Role::Client);
        assert_eq!(event.netns, 4026532000);
        assert!(event.reset.is_none());
        assert_eq!(event.time, clock.wall(5_000_000_000));
    }

    #[test]
    fn ipv6_reset_with_reason() {
        let mut ev = raw(EventKind::Reset, AF_INET6);
        ev.state.tuple.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.state.tuple.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        ev.reset_side = ResetSide::Sent as u8;
        ev.has_reason = 1;
        ev.reset_reason = 1;
        let event = Event::decode(&ev, &Clock::calibrate()).unwrap();
        assert_eq!(event.local.to_string(), "[fd00::1]:40000");
        assert_eq!(event.family.as_str(), "ipv6");
        assert_eq!(
            event.reset,
            Some(Reset {
                inferred: false,
                side: ResetSide::Sent,
                reason: Some(1)
            })
        );
    }

    #[test]
    fn reset_without_kernel_reason() {
        let mut ev = raw(EventKind::Reset, AF_INET);
        ev.reset_side = ResetSide::Received as u8;
        let event = Event::decode(&ev, &Clock::calibrate()).unwrap();
        assert_eq!(
            event.reset,
            Some(Reset {
                inferred: false,
                side: ResetSide::Received,
                reason: None
            })
        );
    }

    #[test]
    fn short_records_and_unknown_kinds_are_rejected() {
        let ev = raw(EventKind::Close, AF_INET);
        assert!(decode(&bytes(&ev)[..ConnEvent::SIZE - 1]).is_none());
        let bad = ConnEvent { kind: 99, ..ev };
        assert_eq!(
            Event::decode(&bad, &Clock::calibrate()).unwrap_err(),
            DecodeError::Kind(99)
        );
        assert_eq!(size_of::<ListenerKey>(), 8);
    }

    /// Found by the fuzzer (`tracer/fuzz/regressions/kernel_records/`): an
    /// `HttpStatus` record's u32 status was cut to u16, so 16774647 became
    /// a "62967". A status outside 100..=599 is a record we cannot read.
    #[test]
    fn fuzz_regression_http_status_out_of_range_is_rejected() {
        let found = include_bytes!(
            "../../fuzz/regressions/kernel_records/crash-619c79070f3b57c9ad2c286297aa44e180b4926d"
        );
        let clock = Clock::calibrate();
        let statuses: Vec<_> = found[1..]
            .chunks(ConnEvent::SIZE)
            .filter_map(decode)
            .filter(|raw| raw.kind == EventKind::HttpStatus as u8)
            .map(|raw| (raw.http_status, Event::decode(&raw, &clock).err()))
            .collect();
        assert!(!statuses.is_empty(), "the input holds an HttpStatus record");
        for (status, error) in statuses {
            let expected =
                (!HTTP_STATUS_RANGE.contains(&status)).then_some(DecodeError::HttpStatus(status));
            assert_eq!(error, expected);
        }
        let mut ev = raw(EventKind::HttpStatus, AF_INET);
        ev.http_status = 503;
        assert_eq!(Event::decode(&ev, &clock).unwrap().http_status, Some(503));
        ev.http_status = 65_539;
        assert_eq!(
            Event::decode(&ev, &clock).unwrap_err(),
            DecodeError::HttpStatus(65_539)
        );
    }
}
