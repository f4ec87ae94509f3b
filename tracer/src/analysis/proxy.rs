//! Recognising proxy processes: Istio's sidecar runs as uid 1337; Envoy and
//! pilot-agent by name. Both lists are configurable.

#[derive(Debug, Clone)]
pub struct ProxyMatcher {
    pub uids: Vec<u32>,
    pub comms: Vec<String>,
}

impl Default for ProxyMatcher {
    fn default() -> Self {
        // Envoy's worker threads are named `wrk:worker_N`, and the thread's name
        // is what the kernel reports for the sockets they open.
        Self {
            uids: vec![1337],
            comms: vec!["envoy".into(), "pilot-agent".into(), "wrk:worker".into()],
        }
    }
}

impl ProxyMatcher {
    pub fn is_proxy(&self, uid: u32, comm: &str) -> bool {
        self.uids.contains(&uid)
            || self
                .comms
                .iter()
                .any(|c| comm == c || comm.starts_with(c.as_str()))
    }
}
