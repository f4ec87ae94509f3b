//! Gathering the facts a failure's cause is decided on, and the evidence
//! kept with it, from what the other stages know: the destination's
//! listener (termination window, settle), the cluster's word that the
//! destination pod is terminating, the DNS name behind the address,
//! the peer's learned idle-close time, and the connection's own timeline
//! (FIN before our send).

use std::time::Duration;

use tracer_common::event::flags;

use super::{
    cause::Facts,
    dns_names::DnsNames,
    failure::{DnsEvidence, Evidence, PeerClose},
    idle::IdleLearner,
    topology::{ListenerView, Topology},
};
use crate::{
    conntrack::{Connection, EndReason},
    events::Clock,
    kernel::reset_reasons::ResetReasons,
    metadata::Pods,
};

/// What the stages know, borrowed for one decision.
pub struct Sources<'a> {
    pub topology: &'a Topology,
    pub idle: &'a IdleLearner,
    pub dns: &'a DnsNames,
    pub reset_reasons: &'a ResetReasons,
    /// What the cluster says about remote addresses (termination anywhere).
    pub pods: &'a Pods,
    pub clock: Clock,
    /// A listener closed this recently before the failure means termination.
    pub termination_window: Duration,
    /// A listener may close this long after the connections it drains.
    pub settle: Duration,
}

/// The facts about a failure of `conn` at `at_ns`, with their evidence.
pub fn gather(
    conn: &Connection,
    at_ns: u64,
    dns_name: Option<&str>,
    src: &Sources,
) -> (Facts, Evidence) {
    let s = &conn.stats;
    let end = conn.end.unwrap_or(EndReason::LocalClose);
    let learned = src
        .idle
        .get(&(conn.netns, conn.remote))
        .and_then(|d| d.learned_peer_idle_close());
    let dest_netns = src.topology.netns_of(conn.netns, conn.remote.ip());
    let listener = dest_netns.map_or(ListenerView::Unknown, |n| {
        src.topology.listener(n, conn.remote)
    });
    let window = src.termination_window.as_nanos() as u64;
    let settle = src.settle.as_nanos() as u64;
    let listener_closed_before = match listener {
        // The app may close its listener just after the connections it drains.
        ListenerView::Closed { at_ns: closed }
            if closed <= at_ns + settle && at_ns.saturating_sub(closed) <= window =>
        {
            Some(Duration::from_nanos(at_ns.saturating_sub(closed)))
        }
        _ => None,
    };
    // The cluster may know the destination pod is terminating, wherever it runs.
    let failed_at = src.clock.wall(at_ns);
    let (peer_terminating_since, peer_terminating_before) =
        match src.pods.peer(conn.remote).and_then(|p| p.terminating) {
            Some(t) => {
                let since = t.since.unwrap_or(failed_at);
                let before = failed_at.duration_since(since).unwrap_or(Duration::ZERO);
                let in_window = since <= failed_at + src.settle && before <= src.termination_window;
                (t.since, in_window.then_some(before))
            }
            None => (None, None),
        };
    let listener_only_on = match listener {
        ListenerView::OtherAddressOnly(addrs) => addrs,
        _ => Vec::new(),
    };
    let reused = s.requests >= 2;
    let staleness =
        dns_name.and_then(|name| src.dns.staleness(conn.netns, name, conn.remote.ip(), at_ns));
    let facts = Facts {
        connect_refused: end == EndReason::ConnectRefused,
        reset_received: end == EndReason::ResetReceived,
        same_pod: dest_netns == Some(conn.netns),
        listener_closed_before,
        peer_terminating_before,
        listener_other_address_only: !listener_only_on.is_empty(),
        dns_dropped: staleness.as_ref().is_some_and(|st| !st.ttl_expired),
        dns_ttl_expired: staleness.as_ref().is_some_and(|st| st.ttl_expired),
        reused,
        peer_closed_before_request: s.fin_in_ns != 0 && s.fin_in_ns <= s.last_send_ns,
        idle_before_request: conn.last_reuse_idle().filter(|_| reused),
        learned_peer_idle_close: learned,
        send_to_peer_fin: (s.fin_in_ns != 0 && s.last_send_ns != 0 && s.fin_in_ns > s.last_send_ns)
            .then(|| Duration::from_nanos(s.fin_in_ns - s.last_send_ns)),
    };
    let peer_close_at = if s.rst_ns != 0 && s.flags & flags::RST_IN != 0 {
        s.rst_ns
    } else {
        s.fin_in_ns
    };
    let evidence = Evidence {
        idle_before_request: facts.idle_before_request,
        learned_peer_idle_close: learned,
        peer_closed_before_request: facts.peer_closed_before_request,
        last_send_to_peer_close: (s.last_send_ns != 0 && peer_close_at >= s.last_send_ns)
            .then(|| Duration::from_nanos(peer_close_at - s.last_send_ns)),
        peer_close: match end {
            EndReason::ConnectRefused => PeerClose::Refused,
            EndReason::ConnectTimeout => PeerClose::Timeout,
            EndReason::ResetReceived => PeerClose::Reset,
            _ => PeerClose::Fin,
        },
        reset_sent_reason: (s.flags & flags::RST_REASON != 0)
            .then(|| src.reset_reasons.name(s.rst_reason)),
        listener_closed_before,
        peer_terminating_since: peer_terminating_since
            .filter(|_| peer_terminating_before.is_some()),
        peer_terminating_before,
        listener_only_on,
        dns: staleness.map(|st| DnsEvidence {
            name: st.name,
            old_answer: st.old_answer,
            new_answer: st.new_answer,
            changed_before_failure: Duration::from_nanos(at_ns.saturating_sub(st.since_ns)),
            ttl_expired: st.ttl_expired,
        }),
        requests: s.requests,
        connection_age: Duration::from_nanos(at_ns.saturating_sub(conn.known_since_ns())),
        seeded: conn.seeded(),
    };
    (facts, evidence)
}
