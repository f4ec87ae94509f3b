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
//!    for its name in that pod (a newer answer no longer has it);
//! 4. `dns_stale` (`ttl_expired` in its evidence) — the name's record
//!    expired with no new lookup since, and no idle-close evidence (5)
//!    explains the failure: only where the DNS answer itself is the reason
//!    (a firewall that admits recently resolved addresses only). A quiet
//!    pooled client outlives a 5–30 s TTL on every idle connection, so an
//!    expired TTL alone proves nothing;
//! 5. `idle_timeout` — on a reused connection, idle-close evidence: the
//!    request was written onto a connection the peer had already closed (its
//!    FIN came first), or after an idle gap of at least 80 % of the peer's
//!    learned idle-close time, or the peer's FIN came right after (within
//!    [`FIN_RACE`]) a request that followed an idle gap of at least
//!    [`RACE_MIN_IDLE`] (the peer's idle timer fired as the request crossed);
//! 6. `peer_reset` — any other reset received with a request in flight;
//! 7. `unknown`.

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

/// A peer FIN this soon after our request raced it (the peer closed an
/// idle connection as the request was on its way, not because of it).
pub const FIN_RACE: std::time::Duration = std::time::Duration::from_millis(200);
/// ...when the request followed at least this much idle time.
pub const RACE_MIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// The remote IP dropped out of a newer DNS answer for its name.
    pub dns_dropped: bool,
    /// The name's record expired with no new lookup since.
    pub dns_ttl_expired: bool,
    /// Reused connection (at least one earlier request).
    pub reused: bool,
    /// The peer's FIN arrived before our last write.
    pub peer_closed_before_request: bool,
    pub idle_before_request: Option<std::time::Duration>,
    pub learned_peer_idle_close: Option<std::time::Duration>,
    /// From our last send to the peer's FIN, when the FIN came after it.
    pub send_to_peer_fin: Option<std::time::Duration>,
}

impl Facts {
    /// Evidence that the peer closed an idle connection under the request.
    pub fn idle_close_evidence(&self) -> bool {
        if !self.reused {
            return false;
        }
        let idle_past_timeout = match (self.idle_before_request, self.learned_peer_idle_close) {
            (Some(idle), Some(learned)) => idle.as_secs_f64() >= 0.8 * learned.as_secs_f64(),
            _ => false,
        };
        let fin_raced_request = match (self.send_to_peer_fin, self.idle_before_request) {
            (Some(fin), Some(idle)) => fin <= FIN_RACE && idle >= RACE_MIN_IDLE,
            _ => false,
        };
        self.peer_closed_before_request || idle_past_timeout || fin_raced_request
    }
}

pub fn decide(f: &Facts) -> Cause {
    if f.listener_closed_before.is_some() || f.peer_terminating_before.is_some() {
        return Cause::PodTerminating;
    }
    if f.connect_refused && f.same_pod {
        return Cause::AppNotListening;
    }
    if f.dns_dropped {
        return Cause::DnsStale;
    }
    let idle_close = f.idle_close_evidence();
    if f.dns_ttl_expired && !idle_close {
        return Cause::DnsStale;
    }
    if idle_close {
        return Cause::IdleTimeout;
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
            dns_dropped: true,
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

    /// A reused connection whose record expired (no lookup since) and that
    /// the peer reset: the base each idle-close branch is added to.
    fn ttl_expired_reset() -> Facts {
        Facts {
            reset_received: true,
            reused: true,
            dns_ttl_expired: true,
            ..Facts::default()
        }
    }

    #[test]
    fn an_expired_ttl_alone_is_dns_stale() {
        assert_eq!(decide(&ttl_expired_reset()), Cause::DnsStale);
        // A short idle gap or a late FIN is no idle-close evidence.
        let late_fin = Facts {
            idle_before_request: Some(Duration::from_secs(5)),
            send_to_peer_fin: Some(Duration::from_millis(900)),
            ..ttl_expired_reset()
        };
        assert_eq!(decide(&late_fin), Cause::DnsStale);
        let short_idle = Facts {
            idle_before_request: Some(Duration::from_millis(300)),
            learned_peer_idle_close: Some(Duration::from_secs(10)),
            send_to_peer_fin: Some(Duration::from_millis(1)),
            ..ttl_expired_reset()
        };
        assert_eq!(decide(&short_idle), Cause::DnsStale);
    }

    #[test]
    fn idle_close_evidence_outranks_an_expired_ttl() {
        let closed_first = Facts {
            peer_closed_before_request: true,
            ..ttl_expired_reset()
        };
        assert_eq!(decide(&closed_first), Cause::IdleTimeout);
        let past_learned = Facts {
            idle_before_request: Some(Duration::from_millis(4_900)),
            learned_peer_idle_close: Some(Duration::from_secs(5)),
            ..ttl_expired_reset()
        };
        assert_eq!(decide(&past_learned), Cause::IdleTimeout);
        let fin_raced = Facts {
            idle_before_request: Some(Duration::from_millis(1_950)),
            send_to_peer_fin: Some(Duration::from_micros(300)),
            ..ttl_expired_reset()
        };
        assert_eq!(decide(&fin_raced), Cause::IdleTimeout);
        // Idle evidence needs a reused connection.
        let first_request = Facts {
            reused: false,
            ..closed_first
        };
        assert_eq!(decide(&first_request), Cause::DnsStale);
    }

    #[test]
    fn an_address_dropped_from_a_newer_answer_stays_dns_stale() {
        let dropped = Facts {
            dns_dropped: true,
            peer_closed_before_request: true,
            idle_before_request: Some(Duration::from_secs(9)),
            learned_peer_idle_close: Some(Duration::from_secs(10)),
            ..ttl_expired_reset()
        };
        assert_eq!(decide(&dropped), Cause::DnsStale);
        // ...below termination, as before.
        let terminating = Facts {
            peer_terminating_before: Some(Duration::from_secs(1)),
            ..dropped
        };
        assert_eq!(decide(&terminating), Cause::PodTerminating);
    }

    #[test]
    fn a_fin_racing_a_request_after_idle_is_idle_timeout_without_dns() {
        let raced = Facts {
            reused: true,
            idle_before_request: Some(Duration::from_secs(2)),
            send_to_peer_fin: Some(Duration::from_millis(2)),
            ..Facts::default()
        };
        assert_eq!(decide(&raced), Cause::IdleTimeout);
        let busy = Facts {
            idle_before_request: Some(Duration::from_millis(20)),
            ..raced
        };
        assert_eq!(decide(&busy), Cause::Unknown);
    }
}
