//! Which trace records to show.

use std::net::{IpAddr, SocketAddr};

use super::record::TraceRecord;

/// Every non-empty list must match (lists are alternatives within themselves).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub pods: Vec<String>,
    pub ports: Vec<u16>,
    pub addresses: Vec<IpAddr>,
    pub comms: Vec<String>,
    pub pids: Vec<u32>,
    pub events: Vec<&'static str>,
}

impl Filter {
    pub fn matches(&self, r: &TraceRecord) -> bool {
        let any = |list_empty: bool, hit: bool| list_empty || hit;
        let endpoints: Vec<SocketAddr> = [&r.local, &r.remote]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        any(self.events.is_empty(), self.events.contains(&r.event))
            && any(
                self.namespaces.is_empty(),
                self.namespaces.contains(&r.namespace),
            )
            && any(
                self.pods.is_empty(),
                self.pods
                    .iter()
                    .any(|p| *p == r.pod || *p == format!("{}/{}", r.namespace, r.pod)),
            )
            && any(
                self.ports.is_empty(),
                endpoints.iter().any(|a| self.ports.contains(&a.port())),
            )
            && any(
                self.addresses.is_empty(),
                endpoints.iter().any(|a| self.addresses.contains(&a.ip())),
            )
            && any(self.comms.is_empty(), self.comms.contains(&r.comm))
            && any(self.pids.is_empty(), self.pids.contains(&r.pid))
    }
}
