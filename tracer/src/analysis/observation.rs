//! What the analysis concludes from an event or from time passing: the
//! vocabulary every output (metrics, trace, findings) reads.

use std::time::{Duration, SystemTime};

use tracer_common::event::{ResetSide, Role};

use super::{cause::Cause, failure::Failure, naming::Labels};
use crate::dns::DnsAnswer;

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
    /// `None`: no upstream failure of that proxy explains it.
    pub cause: Option<Cause>,
}

impl Http503 {
    /// The `cause` label: the cause, or `unattributed`.
    pub fn cause_name(&self) -> &'static str {
        self.cause.map_or("unattributed", Cause::as_str)
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
