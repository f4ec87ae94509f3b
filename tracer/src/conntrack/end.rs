//! How a connection ended, decided from what the programs recorded.
//!
//! Precedence (first match wins), so every connection gets exactly one end:
//! 1. never established: `connect_refused` (a reset answered the SYN, or
//!    ECONNREFUSED), else `connect_timeout` (ETIMEDOUT), else `local_close`
//!    (the caller gave up);
//! 2. a reset arrived: `reset_received` — even after FINs, the reset is
//!    what ended it (the typical stale-connection race: peer FIN, our
//!    request, peer RST);
//! 3. we sent a reset: `reset_sent` with the kernel's reason;
//! 4. FINs: whoever sent the first one: `peer_close` or `local_close`.

use tracer_common::event::{ConnStats, flags};

const ECONNREFUSED: u32 = libc::ECONNREFUSED as u32;
const ETIMEDOUT: u32 = libc::ETIMEDOUT as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    LocalClose,
    PeerClose,
    ResetReceived,
    /// `reason`: `enum sk_rst_reason` value, on kernels that report it.
    ResetSent {
        reason: Option<u32>,
    },
    ConnectRefused,
    ConnectTimeout,
}

impl EndReason {
    pub fn from_stats(stats: &ConnStats) -> Self {
        let has = |flag| stats.flags & flag != 0;
        if !has(flags::ESTABLISHED) {
            return if has(flags::RST_IN) || stats.sk_err == ECONNREFUSED {
                EndReason::ConnectRefused
            } else if stats.sk_err == ETIMEDOUT {
                EndReason::ConnectTimeout
            } else {
                EndReason::LocalClose
            };
        }
        if has(flags::RST_IN) {
            return EndReason::ResetReceived;
        }
        if has(flags::RST_OUT) {
            let reason = has(flags::RST_REASON).then_some(stats.rst_reason);
            return EndReason::ResetSent { reason };
        }
        match (has(flags::FIN_IN), has(flags::FIN_OUT)) {
            (true, true) if stats.fin_in_ns < stats.fin_out_ns => EndReason::PeerClose,
            (true, false) => EndReason::PeerClose,
            _ => EndReason::LocalClose,
        }
    }

    /// The name used in trace output, metrics and diagnose.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::LocalClose => "local_close",
            EndReason::PeerClose => "peer_close",
            EndReason::ResetReceived => "reset_received",
            EndReason::ResetSent { .. } => "reset_sent",
            EndReason::ConnectRefused => "connect_refused",
            EndReason::ConnectTimeout => "connect_timeout",
        }
    }

    /// The end a name stands for (`reset_sent` without its reason).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "local_close" => EndReason::LocalClose,
            "peer_close" => EndReason::PeerClose,
            "reset_received" => EndReason::ResetReceived,
            "reset_sent" => EndReason::ResetSent { reason: None },
            "connect_refused" => EndReason::ConnectRefused,
            "connect_timeout" => EndReason::ConnectTimeout,
            _ => return None,
        })
    }

    /// Ended by the other side.
    pub fn by_peer(&self) -> bool {
        matches!(self, EndReason::PeerClose | EndReason::ResetReceived)
    }
}

// Serialised by name: the reset reason travels separately (`reason`).
impl serde::Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EndReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EndReason::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown end `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(bits: u32) -> ConnStats {
        ConnStats {
            flags: bits,
            ..ConnStats::default()
        }
    }

    #[test]
    fn refused_connect() {
        assert_eq!(
            EndReason::from_stats(&stats(flags::RST_IN | flags::CLOSED)),
            EndReason::ConnectRefused
        );
        let s = ConnStats {
            sk_err: ECONNREFUSED,
            ..stats(flags::CLOSED)
        };
        assert_eq!(EndReason::from_stats(&s), EndReason::ConnectRefused);
    }

    #[test]
    fn timed_out_connect() {
        let s = ConnStats {
            sk_err: ETIMEDOUT,
            ..stats(flags::CLOSED)
        };
        assert_eq!(EndReason::from_stats(&s), EndReason::ConnectTimeout);
    }

    #[test]
    fn abandoned_connect_is_local() {
        assert_eq!(
            EndReason::from_stats(&stats(flags::CLOSED)),
            EndReason::LocalClose
        );
    }

    #[test]
    fn first_fin_decides() {
        let est = flags::ESTABLISHED | flags::CLOSED | flags::FIN_IN | flags::FIN_OUT;
        let peer_first = ConnStats {
            fin_in_ns: 10,
            fin_out_ns: 20,
            ..stats(est)
        };
        assert_eq!(EndReason::from_stats(&peer_first), EndReason::PeerClose);
        let local_first = ConnStats {
            fin_in_ns: 30,
            fin_out_ns: 20,
            ..stats(est)
        };
        assert_eq!(EndReason::from_stats(&local_first), EndReason::LocalClose);
        let only_peer = stats(flags::ESTABLISHED | flags::FIN_IN);
        assert_eq!(EndReason::from_stats(&only_peer), EndReason::PeerClose);
        let only_local = stats(flags::ESTABLISHED | flags::FIN_OUT);
        assert_eq!(EndReason::from_stats(&only_local), EndReason::LocalClose);
    }

    #[test]
    fn reset_received_beats_fins() {
        let s = ConnStats {
            fin_in_ns: 10,
            ..stats(flags::ESTABLISHED | flags::FIN_IN | flags::RST_IN | flags::RST_OUT)
        };
        assert_eq!(EndReason::from_stats(&s), EndReason::ResetReceived);
        assert!(EndReason::from_stats(&s).by_peer());
    }

    #[test]
    fn reset_sent_keeps_reason_when_reported() {
        let with = ConnStats {
            rst_reason: 12,
            ..stats(flags::ESTABLISHED | flags::RST_OUT | flags::RST_REASON)
        };
        assert_eq!(
            EndReason::from_stats(&with),
            EndReason::ResetSent { reason: Some(12) }
        );
        let without = stats(flags::ESTABLISHED | flags::RST_OUT);
        assert_eq!(
            EndReason::from_stats(&without),
            EndReason::ResetSent { reason: None }
        );
        assert!(!EndReason::from_stats(&without).by_peer());
    }
}
