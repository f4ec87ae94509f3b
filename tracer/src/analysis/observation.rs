//! What the analysis concludes from an event or from time passing: the
//! vocabulary every output (metrics, trace, findings) reads.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use tracer_common::event::{ResetSide, Role};

use super::{cause::Cause, failure::Failure, naming::Labels};
use crate::{conntrack::EndReason, dns::DnsAnswer};

#[derive(Debug, Clone)]
pub enum Observation {
    Opened {
        labels: Labels,
        role: Role,
    },
    Reset {
        labels: Labels,
        side: ResetSide,
        /// The kernel's reason for resets sent (`unknown` where it gives none);
        /// `peer` for resets received.
        reason: String,
    },
    Reuse {
        labels: Labels,
        idle: Duration,
    },
    Closed {
        labels: Labels,
        lifetime: Option<Duration>,
        peer_idle_close: Option<Duration>,
    },
    Failure(Box<Failure>),
    Http503(Http503),
    /// A proxy's upstream failure with a request in flight that no 503 seen
    /// on this node took: a 503 that proxy will have answered.
    ProxyAnswered503(Box<FailureRef>),
    Dns(Box<DnsSeen>),
    /// A labelled pod unseen for long gave its place under the pod cap to a
    /// new one: its series go.
    PodForgotten {
        namespace: String,
        pod: String,
    },
}

/// A DNS answer seen in a pod.
#[derive(Debug, Clone)]
pub struct DnsSeen {
    pub time: SystemTime,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    /// Bounded label value for the name (`other` past the per-pod cap).
    pub name_label: String,
    pub answer: DnsAnswer,
    /// The address set differs from the name's previous answer.
    pub changed: bool,
}

/// A 503 a proxy wrote to its downstream, with its verdict.
#[derive(Debug, Clone)]
pub struct Http503 {
    pub time: SystemTime,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    pub pid: u32,
    /// The proxy's worker thread (0: not known).
    pub tid: u32,
    pub comm: String,
    /// The downstream connection the 503 was written on, as the proxy's
    /// socket has it.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// `None`: no upstream failure explains it.
    pub cause: Option<Cause>,
    /// The failure it was paired with.
    pub failure: Option<Box<FailureRef>>,
    /// The app answered 503 itself; the proxy passed it on.
    pub passthrough: bool,
}

impl Http503 {
    /// The `cause` label: the cause, or `unattributed`.
    pub fn cause_name(&self) -> &'static str {
        self.cause.map_or("unattributed", Cause::as_str)
    }
}

/// Where the failure behind a 503 was: the proxy's own upstream connection,
/// or the next hop's (the inbound sidecar the request went to, on this node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hop {
    Local,
    Far,
}

impl Hop {
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::Local => "local",
            Hop::Far => "far",
        }
    }
}

/// A failure as a 503 refers to it (or as a proxy failure no seen 503 took).
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRef {
    pub time: SystemTime,
    pub netns: u32,
    pub namespace: String,
    pub pod: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub cause: Cause,
    pub end: EndReason,
    pub hop: Hop,
}

impl FailureRef {
    pub fn of(f: &Failure, hop: Hop) -> Self {
        Self {
            time: f.time,
            netns: f.netns,
            namespace: f.namespace.clone(),
            pod: f.pod.clone(),
            pid: f.pid,
            tid: f.tid,
            comm: f.comm.clone(),
            local: f.local,
            remote: f.remote,
            cause: f.cause,
            end: f.end,
            hop,
        }
    }
}

/// `sent` / `received`, as metrics and trace name reset sides.
pub fn side_name(side: ResetSide) -> Option<&'static str> {
    match side {
        ResetSide::Sent => Some("sent"),
        ResetSide::Received => Some("received"),
        ResetSide::None => None,
    }
}
