//! Which source each feature uses on this kernel. Decided once at start-up
//! from tracefs and BTF, reported by `check`, the start-up log and
//! `conntracer_build_info`, and handed to the programs as `features` bits.

use std::fmt;

use tracer_common::config::features;

/// Where per-connection activity (bytes, requests, idle times) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivitySource {
    /// `sock:sock_send_length` / `sock:sock_recv_length` (Linux 6.3+): one
    /// update per message.
    Tracepoints,
    /// TCP segments with data seen by the cgroup_skb programs: one update
    /// per segment (a GSO/GRO batch).
    Packets,
}

/// Where DNS answers are captured, and how their namespace is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsSource {
    /// cgroup_skb ingress, named by `bpf_get_netns_cookie` (Linux 6.15 or so).
    CgroupSkb,
    /// `net:netif_receive_skb`, named by the receiving device's namespace.
    Devices,
    /// Neither is available.
    Unavailable,
}

/// How resets the kernel sends without a socket (refused connects) are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSocketResets {
    /// `tcp:tcp_send_reset` fires without a socket and names the reason (6.10+).
    Tracepoint,
    /// RST segments leaving the namespace's control socket, through
    /// cgroup_skb egress; the reason (`NO_SOCKET`) is inferred.
    Packets,
}

/// How the lifecycle and per-message tracepoints are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracepointKind {
    /// BTF tracepoints (`tp_btf`, Linux 5.5+ with BTF): arguments straight
    /// from the context. A program that cannot attach so falls back alone.
    Btf,
    /// Classic tracepoints: every field copied out of the record.
    Classic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub tracepoints: TracepointKind,
    pub activity: ActivitySource,
    pub dns: DnsSource,
    pub no_socket_resets: NoSocketResets,
}

impl Modes {
    /// The `features` bits for the programs, given what the user enabled.
    pub fn features(&self, http_peek: bool, dns_capture: bool) -> u32 {
        let mut bits = 0;
        if self.activity == ActivitySource::Packets {
            bits |= features::PACKET_ACTIVITY;
        }
        if http_peek {
            // Payload peeks, both: 503 status lines, and h2c/TLS keep-alive
            // traffic told from requests.
            bits |= features::HTTP_PEEK | features::PROTOCOLS;
        }
        if dns_capture && self.dns == DnsSource::CgroupSkb {
            bits |= features::DNS_NETNS_COOKIE;
        }
        if self.no_socket_resets == NoSocketResets::Packets {
            bits |= features::RST_PACKETS;
        }
        bits
    }

    /// The cgroup_skb egress program has work on this kernel.
    pub fn needs_egress(&self, http_peek: bool) -> bool {
        http_peek
            || self.activity == ActivitySource::Packets
            || self.no_socket_resets == NoSocketResets::Packets
    }

    /// The cgroup_skb ingress program has work on this kernel. (An h2c
    /// peer's GOAWAY / RST_STREAM is noted only where it runs anyway.)
    pub fn needs_ingress(&self, dns_capture: bool) -> bool {
        self.activity == ActivitySource::Packets
            || (dns_capture && self.dns == DnsSource::CgroupSkb)
    }

    /// `(feature, source)` pairs, as `check` and the metrics show them.
    pub fn describe(&self) -> [(&'static str, &'static str); 4] {
        [
            ("tracepoints", self.tracepoints.name()),
            ("activity", self.activity.name()),
            ("dns", self.dns.name()),
            ("no_socket_resets", self.no_socket_resets.name()),
        ]
    }
}

/// A bad `CONNTRACER_FORCE_SOURCES` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "CONNTRACER_FORCE_SOURCES: `{0}` is not one of tracepoints=classic, activity=packets, dns=devices, no_socket_resets=packets"
)]
pub struct ForceError(String);

impl Modes {
    /// The older kernels' sources, forced on this one (for testing them on a
    /// new kernel): `tracepoints=classic,activity=packets,dns=devices,no_socket_resets=packets`,
    /// any subset. Only fallbacks can be forced; they exist on every kernel.
    pub fn forced(mut self, spec: &str) -> Result<Self, ForceError> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "tracepoints=classic" => self.tracepoints = TracepointKind::Classic,
                "activity=packets" => self.activity = ActivitySource::Packets,
                "dns=devices" => self.dns = DnsSource::Devices,
                "no_socket_resets=packets" => self.no_socket_resets = NoSocketResets::Packets,
                other => return Err(ForceError(other.to_owned())),
            }
        }
        Ok(self)
    }
}

impl TracepointKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Btf => "btf",
            Self::Classic => "classic",
        }
    }
}

impl ActivitySource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tracepoints => "tracepoints",
            Self::Packets => "packets",
        }
    }
}

impl DnsSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::CgroupSkb => "cgroup_skb",
            Self::Devices => "devices",
            Self::Unavailable => "unavailable",
        }
    }
}

impl NoSocketResets {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::Packets => "packets",
        }
    }
}

impl fmt::Display for Modes {
    /// `tracepoints=classic activity=packets dns=devices no_socket_resets=packets`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .describe()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: Modes = Modes {
        tracepoints: TracepointKind::Classic,
        activity: ActivitySource::Packets,
        dns: DnsSource::Devices,
        no_socket_resets: NoSocketResets::Packets,
    };
    const NEW: Modes = Modes {
        tracepoints: TracepointKind::Btf,
        activity: ActivitySource::Tracepoints,
        dns: DnsSource::CgroupSkb,
        no_socket_resets: NoSocketResets::Tracepoint,
    };

    #[test]
    fn old_kernels_do_everything_from_packets_but_dns() {
        let bits = OLD.features(true, true);
        assert_eq!(
            bits,
            features::PACKET_ACTIVITY
                | features::HTTP_PEEK
                | features::PROTOCOLS
                | features::RST_PACKETS
        );
        // Activity needs both directions even with the peek and DNS off.
        assert!(OLD.needs_egress(false) && OLD.needs_ingress(false));
        assert_eq!(
            OLD.to_string(),
            "tracepoints=classic activity=packets dns=devices no_socket_resets=packets"
        );
    }

    #[test]
    fn fallbacks_can_be_forced_and_nothing_else() {
        let forced = NEW
            .forced("tracepoints=classic,activity=packets, dns=devices,no_socket_resets=packets")
            .unwrap();
        assert_eq!(forced, OLD);
        assert_eq!(NEW.forced("").unwrap(), NEW);
        let err = NEW.forced("activity=tracepoints").unwrap_err();
        assert!(err.to_string().contains("`activity=tracepoints`"), "{err}");
    }

    #[test]
    fn new_kernels_use_cgroup_skb_only_for_the_peek_and_dns() {
        assert_eq!(
            NEW.features(true, true),
            features::HTTP_PEEK | features::PROTOCOLS | features::DNS_NETNS_COOKIE
        );
        assert_eq!(NEW.features(false, false), 0);
        assert!(!NEW.needs_egress(false) && !NEW.needs_ingress(false));
        assert!(NEW.needs_ingress(true));
    }
}
