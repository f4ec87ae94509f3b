//! Direction of a connection (DESIGN.md): `inbound` (accepted in the pod, or
//! sidecar→app inside the pod), `outbound` (to a cluster address), `egress`
//! (outside the cluster CIDRs, which are configurable).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracer_common::event::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Egress => "egress",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirectionClassifier {
    cluster: Vec<IpNet>,
}

/// Private and unique-local ranges: where cluster pod and service CIDRs live
/// unless told otherwise.
pub const DEFAULT_CLUSTER_CIDRS: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];

impl DirectionClassifier {
    pub fn new(cluster: Vec<IpNet>) -> Self {
        Self { cluster }
    }

    /// `same_pod`: the remote address belongs to the connection's own network namespace.
    pub fn classify(&self, role: Role, remote: IpAddr, same_pod: bool) -> Direction {
        // Unknown roles come from resets answering SYNs nobody listens for: inbound.
        if matches!(role, Role::Server | Role::Unknown) || same_pod || remote.is_loopback() {
            return Direction::Inbound;
        }
        let remote = canonical(remote);
        if self.cluster.iter().any(|net| net.contains(&remote)) {
            Direction::Outbound
        } else {
            Direction::Egress
        }
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Default for DirectionClassifier {
    fn default() -> Self {
        Self::new(
            DEFAULT_CLUSTER_CIDRS
                .iter()
                .map(|c| c.parse().expect("valid default CIDR"))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions() {
        let c = DirectionClassifier::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            c.classify(Role::Server, ip("8.8.8.8"), false),
            Direction::Inbound
        );
        assert_eq!(
            c.classify(Role::Client, ip("127.0.0.1"), false),
            Direction::Inbound
        );
        assert_eq!(
            c.classify(Role::Client, ip("10.1.2.3"), true),
            Direction::Inbound
        );
        assert_eq!(
            c.classify(Role::Client, ip("10.1.2.3"), false),
            Direction::Outbound
        );
        assert_eq!(
            c.classify(Role::Client, ip("::ffff:10.1.2.3"), false),
            Direction::Outbound
        );
        assert_eq!(
            c.classify(Role::Client, ip("93.184.216.34"), false),
            Direction::Egress
        );
        assert_eq!(
            c.classify(Role::Client, ip("2001:db8::1"), false),
            Direction::Egress
        );
    }
}
