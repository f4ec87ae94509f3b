//! The cause of a failure: exactly one, by a fixed precedence.
//!
//! 1. `pod_terminating` — the destination's listener (in its pod on this
//!    node, or the app behind the sidecar in the same pod) had closed, or the
//!    cluster says the destination pod is terminating (on any node), within
//!    the termination window before the failure;
//! 2. `app_not_listening` — a connect refused to a port in the same pod with
//!    no listener on that address (e.g. the app binds 127.0.0.1 only) and no
//!    termination under way;
//! 3. `dns_stale` — the remote IP had dropped out of the latest DNS answer
//!    for its name in that pod, or its record expired with no new answer;
//! 4. `idle_timeout` — on a reused connection, the request was written onto
//!    a connection the peer had already closed (its FIN came first), or after
//!    an idle gap of at least 80 % of the peer's learned idle-close time;
//! 5. `peer_reset` — any other reset received with a request in flight;
//! 6. `unknown`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    PodTerminating,
    AppNotListening,
    DnsStale,
    IdleTimeout,
    PeerReset,
    Unknown,
}

impl Cause {
    pub const ALL: [Cause; 6] = [
        Cause::PodTerminating,
        Cause::AppNotListening,
        Cause::DnsStale,
        Cause::IdleTimeout,
        Cause::PeerReset,
        Cause::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::IdleTimeout => "idle_timeout",
            Cause::DnsStale => "dns_stale",
            Cause::PodTerminating => "pod_terminating",
            Cause::AppNotListening => "app_not_listening",
            Cause::PeerReset => "peer_reset",
            Cause::Unknown => "unknown",
        }
    }
}

/// The facts the precedence looks at, gathered by the analyzer.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub connect_refused: bool,
    pub reset_received: bool,
    /// The destination is in the connection's own pod (sidecar→app, loopback).
    pub same_pod: bool,
    /// The destination's listener closed this long before the failure (within the window).
    pub listener_closed_before: Option<std::time::Duration>,
    /// The cluster says the destination pod began terminating this long
    /// before the failure (within the window; on any node).
    pub peer_terminating_before: Option<std::time::Duration>,
    /// Something listens on the port, but not on the address connected to.
    pub listener_other_address_only: bool,
    pub dns_stale: bool,
    /// Reused connection (at least one earlier request).
    pub reused: bool,
    /// The peer's FIN arrived before our last write.
    pub peer_closed_before_request: bool,
    pub idle_before_request: Option<std::time::Duration>,
    pub learned_peer_idle_close: Option<std::time::Duration>,
}

pub fn decide(f: &Facts) -> Cause {
    if f.listener_closed_before.is_some() || f.peer_terminating_before.is_some() {
        return Cause::PodTerminating;
    }
    if f.connect_refused && f.same_pod {
        return Cause::AppNotListening;
    }
    if f.dns_stale {
        return Cause::DnsStale;
    }
    if f.reused {
        let raced_close = f.peer_closed_before_request;
        let idle_past_timeout = match (f.idle_before_request, f.learned_peer_idle_close) {
            (Some(idle), Some(learned)) => idle.as_secs_f64() >= 0.8 * learned.as_secs_f64(),
            _ => false,
        };
        if raced_close || idle_past_timeout {
            return Cause::IdleTimeout;
        }
    }
    if f.reset_received {
        return Cause::PeerReset;
    }
    Cause::Unknown
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn precedence() {
        let secs = Duration::from_secs;
        let base = Facts {
            reset_received: true,
            reused: true,
            ..Facts::default()
        };
        assert_eq!(decide(&base), Cause::PeerReset);
        let raced = Facts {
            peer_closed_before_request: true,
            ..base.clone()
        };
        assert_eq!(decide(&raced), Cause::IdleTimeout);
        let idle = Facts {
            idle_before_request: Some(secs(9)),
            learned_peer_idle_close: Some(secs(10)),
            ..base.clone()
        };
        assert_eq!(decide(&idle), Cause::IdleTimeout);
        let short = Facts {
            idle_before_request: Some(secs(1)),
            learned_peer_idle_close: Some(secs(10)),
            ..base.clone()
        };
        assert_eq!(decide(&short), Cause::PeerReset);
        let not_reused = Facts {
            reused: false,
            ..raced.clone()
        };
        assert_eq!(decide(&not_reused), Cause::PeerReset);
        let dns = Facts {
            dns_stale: true,
            ..raced.clone()
        };
        assert_eq!(decide(&dns), Cause::DnsStale);
        let terminating = Facts {
            listener_closed_before: Some(secs(1)),
            ..dns.clone()
        };
        assert_eq!(decide(&terminating), Cause::PodTerminating);
        let refused = Facts {
            connect_refused: true,
            same_pod: true,
            ..Facts::default()
        };
        assert_eq!(decide(&refused), Cause::AppNotListening);
        let refused_while_terminating = Facts {
            listener_closed_before: Some(secs(2)),
            ..refused.clone()
        };
        assert_eq!(decide(&refused_while_terminating), Cause::PodTerminating);
        let refused_elsewhere = Facts {
            connect_refused: true,
            ..Facts::default()
        };
        assert_eq!(decide(&refused_elsewhere), Cause::Unknown);
        let plain_fin = Facts {
            reused: true,
            ..Facts::default()
        };
        assert_eq!(decide(&plain_fin), Cause::Unknown);
    }
}
