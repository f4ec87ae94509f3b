//! One line of trace output, the same fields for the table and JSON.
//! JSON field names are a stable interface: add fields, never rename.

use std::time::Duration;

use serde::Serialize;
use tracer_common::{
    event::{EventKind, flags},
    tcp,
};

use crate::{
    analysis::{DnsSeen, FailureRef, Http503, failure::Failure, observation::side_name},
    conntrack::{Connection, EndReason, table::Applied},
    events::{self, Event, Family},
    kernel::reset_reasons::ResetReasons,
    metadata::PodName,
    units::{ms, rfc3339},
};

#[derive(Debug, Clone, Serialize)]
pub struct TraceRecord {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub event: &'static str,
    /// Network namespace inode.
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub family: &'static str,
    /// `ip:port`, IPv6 as `[ip]:port`.
    pub local: String,
    pub remote: String,
    /// Connection id, stable for the connection's life in this session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conn: Option<u64>,
    /// The connection or listener existed before conntracer started (found
    /// by the start-up enumeration); only present when true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeded: Option<bool>,

    // close
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<f64>,
    /// Idle time when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<f64>,
    /// For ends by the peer: how long the connection had been idle when the
    /// peer's FIN or RST arrived (the peer's keep-alive timeout shows here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_idle_close_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_msgs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_msgs: Option<u32>,
    /// Send bursts: the first send, and each send that follows a receive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// Longest idle gap before a reuse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_idle_before_reuse_ms: Option<f64>,
    /// The socket error at close (`ETIMEDOUT`, `ECONNREFUSED`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `h2c` or `tls`, told from the connection's first payload (their
    /// keep-alive traffic is not counted as requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// HTTP/2 frames the peer sent that end streams or the connection
    /// (`goaway`, `rst_stream`), on h2c.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_from_peer: Option<Vec<&'static str>>,

    // reset (and `reason` on a close that ended with `reset_sent`)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<&'static str>,
    /// The kernel's `sk_rst_reason` name, e.g. `NO_SOCKET` (resets sent, Linux 6.10+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `true` when `reason` was inferred, not named by the kernel (a reset
    /// from a namespace's control socket, seen as a packet before 6.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_inferred: Option<bool>,
    /// TCP state of the socket at the reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,

    // reuse
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_before_reuse_ms: Option<f64>,

    // http_503
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The app answered 503 itself and the proxy passed it on (only when true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
    /// The failure an attributed 503 was paired with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureRecord>,

    // failure and http_503
    /// `idle_timeout`, `pod_terminating`, ... (`unattributed` for a 503 with no failure behind it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<serde_json::Value>,

    // dns
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// The address set differs from the name's previous answer in this pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
}

/// The failure behind an attributed 503, as `http_503` records carry it.
#[derive(Debug, Clone, Serialize)]
pub struct FailureRecord {
    /// The failed connection's `ip:port`s (an upstream connection of the
    /// proxy, or of the next hop's proxy).
    pub local: String,
    pub remote: String,
    pub namespace: String,
    pub pod: String,
    pub pid: u32,
    /// 0: not known.
    pub tid: u32,
    /// RFC 3339 with nanoseconds, UTC: when the connection failed.
    pub at: String,
    /// `local`: the proxy's own upstream connection; `far`: the next hop's on this node.
    pub hop: &'static str,
    pub cause: &'static str,
    pub end: &'static str,
}

impl FailureRecord {
    fn of(f: &FailureRef) -> Self {
        Self {
            local: f.local.to_string(),
            remote: f.remote.to_string(),
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            pid: f.pid,
            tid: f.tid,
            at: rfc3339(f.time),
            hop: f.hop.as_str(),
            cause: f.cause.as_str(),
            end: f.end.as_str(),
        }
    }
}

/// Turns events into records; holds the kernel's names for reset reasons.
pub struct RecordBuilder {
    reset_reasons: ResetReasons,
}

impl RecordBuilder {
    pub fn new(reset_reasons: ResetReasons) -> Self {
        Self { reset_reasons }
    }

    fn reason_name(&self, reason: u32) -> String {
        self.reset_reasons.name(reason)
    }

    pub fn build(&self, ev: &Event, applied: &Applied, pod: &PodName) -> TraceRecord {
        let closed = match applied {
            Applied::Closed(conn) => Some(conn.as_ref()),
            _ => None,
        };
        // A closed connection carries the best-known owner and addresses.
        let (process, local, remote) = match closed {
            Some(c) => (&*c.process, c.local, c.remote),
            None => (&ev.process, ev.local, ev.remote),
        };
        let mut record = TraceRecord {
            time: rfc3339(ev.time),
            event: events::kind_name(ev.kind),
            netns: ev.netns,
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            pid: process.pid,
            tid: process.tid,
            comm: process.comm.clone(),
            uid: process.uid,
            role: events::role_name(closed.map_or(ev.role, |c| c.role)),
            family: ev.family.as_str(),
            local: local.to_string(),
            remote: remote.to_string(),
            conn: match applied {
                Applied::Open { id } => Some(*id),
                Applied::Closed(c) => Some(c.id),
                Applied::Untracked => None,
            },
            status: ev.http_status,
            seeded: (ev.seeded() || closed.is_some_and(Connection::seeded)).then_some(true),
            ..Self::empty()
        };
        match ev.kind {
            EventKind::Close => {
                if let Some(conn) = closed {
                    self.fill_close(&mut record, conn);
                }
            }
            EventKind::Reset => {
                if let Some(reset) = ev.reset {
                    record.side = side_name(reset.side);
                    record.reason = reset.reason.map(|r| self.reason_name(r));
                    record.reason_inferred = reset.inferred.then_some(true);
                }
                record.state = (ev.tcp_state != 0).then(|| tcp::state_name(ev.tcp_state));
            }
            EventKind::Seeded => {
                let s = &ev.stats;
                record.state = Some(tcp::state_name(ev.tcp_state));
                record.tx_bytes = Some(s.tx_bytes);
                record.rx_bytes = Some(s.rx_bytes);
                let last = s.last_send_ns.max(s.last_recv_ns);
                record.idle_ms = (last != 0 && ev.mono_ns >= last)
                    .then(|| ms(Duration::from_nanos(ev.mono_ns - last)));
            }
            EventKind::Reuse => {
                record.idle_before_reuse_ms = (ev.stats.last_reuse_idle_ns != 0)
                    .then(|| ms(Duration::from_nanos(ev.stats.last_reuse_idle_ns)));
                record.requests = Some(ev.stats.requests);
            }
            _ => {}
        }
        record
    }

    pub fn failure(&self, f: &Failure) -> TraceRecord {
        TraceRecord {
            time: rfc3339(f.time),
            event: "failure",
            netns: f.netns,
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            pid: f.pid,
            tid: f.tid,
            comm: f.comm.clone(),
            uid: f.uid,
            role: Some("client"),
            family: Family::of(f.local.ip()).as_str(),
            local: f.local.to_string(),
            remote: f.remote.to_string(),
            end: Some(f.end.as_str()),
            cause: Some(f.cause.as_str()),
            stale: Some(f.stale),
            direction: Some(f.direction.as_str()),
            peer: Some(f.peer.clone()),
            evidence: serde_json::to_value(&f.evidence).ok(),
            seeded: f.evidence.seeded.then_some(true),
            ..Self::empty()
        }
    }

    pub fn http_503(&self, h: &Http503) -> TraceRecord {
        TraceRecord {
            time: rfc3339(h.time),
            event: "http_503",
            netns: h.netns,
            namespace: h.namespace.clone(),
            pod: h.pod.clone(),
            pid: h.pid,
            tid: h.tid,
            comm: h.comm.clone(),
            role: Some("server"),
            family: Family::of(h.local.ip()).as_str(),
            local: h.local.to_string(),
            remote: h.remote.to_string(),
            status: Some(503),
            cause: Some(h.cause_name()),
            passthrough: h.passthrough.then_some(true),
            failure: h.failure.as_deref().map(FailureRecord::of),
            ..Self::empty()
        }
    }

    /// A proxy failure no 503 seen here took: a 503 that proxy will have answered.
    pub fn proxy_answered_503(&self, f: &FailureRef) -> TraceRecord {
        TraceRecord {
            time: rfc3339(f.time),
            event: "proxy_answered_503",
            netns: f.netns,
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            pid: f.pid,
            tid: f.tid,
            comm: f.comm.clone(),
            role: Some("client"),
            family: Family::of(f.local.ip()).as_str(),
            local: f.local.to_string(),
            remote: f.remote.to_string(),
            end: Some(f.end.as_str()),
            cause: Some(f.cause.as_str()),
            ..Self::empty()
        }
    }

    fn empty() -> TraceRecord {
        TraceRecord {
            time: String::new(),
            event: "",
            netns: 0,
            namespace: String::new(),
            pod: String::new(),
            pid: 0,
            tid: 0,
            comm: String::new(),
            uid: 0,
            role: None,
            family: "ipv4",
            local: String::new(),
            remote: String::new(),
            conn: None,
            seeded: None,
            end: None,
            lifetime_ms: None,
            idle_ms: None,
            peer_idle_close_ms: None,
            tx_bytes: None,
            rx_bytes: None,
            tx_msgs: None,
            rx_msgs: None,
            requests: None,
            max_idle_before_reuse_ms: None,
            error: None,
            protocol: None,
            h2_from_peer: None,
            side: None,
            reason: None,
            reason_inferred: None,
            state: None,
            idle_before_reuse_ms: None,
            status: None,
            passthrough: None,
            failure: None,
            cause: None,
            stale: None,
            direction: None,
            peer: None,
            evidence: None,
            name: None,
            answers: None,
            ttl: None,
            rcode: None,
            changed: None,
        }
    }

    pub fn dns(&self, d: &DnsSeen) -> TraceRecord {
        TraceRecord {
            time: rfc3339(d.time),
            event: "dns",
            netns: d.netns,
            namespace: d.namespace.clone(),
            pod: d.pod.clone(),
            name: Some(d.answer.name.clone()),
            answers: Some(d.answer.addresses.iter().map(|a| a.to_string()).collect()),
            ttl: Some(d.answer.ttl),
            rcode: Some(d.answer.rcode.clone()),
            changed: Some(d.changed),
            ..Self::empty()
        }
    }

    fn fill_close(&self, record: &mut TraceRecord, conn: &Connection) {
        let s = &conn.stats;
        let end = conn.end.unwrap_or(EndReason::LocalClose);
        record.end = Some(end.as_str());
        if let EndReason::ResetSent {
            reason: Some(reason),
        } = end
        {
            record.reason = Some(self.reason_name(reason));
        }
        record.lifetime_ms = conn.lifetime().map(ms);
        record.idle_ms = conn.idle_at_close().map(ms);
        record.peer_idle_close_ms = conn.idle_at_peer_close().map(ms);
        record.tx_bytes = Some(s.tx_bytes);
        record.rx_bytes = Some(s.rx_bytes);
        record.tx_msgs = Some(s.tx_msgs);
        record.rx_msgs = Some(s.rx_msgs);
        record.requests = Some(s.requests);
        record.max_idle_before_reuse_ms =
            (s.max_reuse_idle_ns != 0).then(|| ms(Duration::from_nanos(s.max_reuse_idle_ns)));
        record.error = (s.sk_err != 0).then(|| errno_name(s.sk_err));
        record.protocol = protocol_name(s.flags);
        let h2: Vec<&'static str> = [
            (flags::H2_GOAWAY_IN, "goaway"),
            (flags::H2_RST_STREAM_IN, "rst_stream"),
        ]
        .into_iter()
        .filter(|(bit, _)| s.flags & bit != 0)
        .map(|(_, name)| name)
        .collect();
        record.h2_from_peer = (!h2.is_empty()).then_some(h2);
    }
}

fn protocol_name(bits: u32) -> Option<&'static str> {
    if bits & flags::H2C != 0 {
        Some("h2c")
    } else if bits & flags::TLS != 0 {
        Some("tls")
    } else {
        None
    }
}

fn errno_name(errno: u32) -> String {
    let name = match errno as i32 {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EPIPE => "EPIPE",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}
