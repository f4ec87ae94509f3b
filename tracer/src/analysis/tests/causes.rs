//! Facts and causes: FIN before the request, the termination window and the
//! settle, DNS names that moved on, resets, the cluster's word on terminations.

use super::*;

#[test]
fn a_request_written_after_the_peers_fin_is_an_idle_timeout_once_settled() {
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    // The cart's FIN (2 500 ms) came before our request (2 990 ms): the race
    // an idle-timeout mismatch loses.
    connect_and_close(
        &mut lab,
        0xa,
        reused_then_reset(2990, 1990, 2500, 2995),
        3000,
    );
    lab.tick(3100 * MS);
    assert!(lab.failures().is_empty(), "decided only after settling");
    lab.tick(3250 * MS);
    let failures = lab.failures();
    assert_eq!(failures.len(), 1);
    let f = failures[0];
    assert_eq!(f.cause, Cause::IdleTimeout);
    assert!(f.stale);
    assert_eq!((f.namespace.as_str(), f.pod.as_str()), ("lab", "frontend"));
    assert_eq!(
        (f.peer.as_str(), f.direction),
        ("lab/cart", Direction::Outbound)
    );
    assert_eq!(f.end, EndReason::ResetReceived);
    assert_eq!((f.pid, f.tid, f.uid), (PROXY_PID, PROXY_PID + 1, 1337));
    assert_eq!(f.time, UNIX_EPOCH + Duration::from_millis(2995));
    assert!(f.evidence.peer_closed_before_request);
    assert_eq!(
        f.evidence.last_send_to_peer_close,
        Some(Duration::from_millis(5))
    );
    assert_eq!(
        f.evidence.idle_before_request,
        Some(Duration::from_millis(1990))
    );

    // The FIN 2 ms after a request that followed ~2 s of idle: the peer's
    // idle timer fired as the request crossed it (idle-close evidence).
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    connect_and_close(
        &mut lab,
        0xb,
        reused_then_reset(2990, 1990, 2992, 2995),
        3000,
    );
    lab.tick(4000 * MS);
    assert_eq!(lab.failures()[0].cause, Cause::IdleTimeout);

    // The same FIN after a busy connection's request, nothing learned: peer_reset.
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    connect_and_close(&mut lab, 0xc, reused_then_reset(2990, 50, 2992, 2995), 3000);
    lab.tick(4000 * MS);
    assert_eq!(lab.failures()[0].cause, Cause::PeerReset);
}

#[test]
fn a_listener_closing_within_the_termination_window_or_the_settle_is_termination() {
    let config = AnalysisConfig {
        termination_window: Duration::from_secs(10),
        ..AnalysisConfig::default()
    };
    // (listener closes at, failure at) in ms → terminating?
    let cases = [
        (1000, 1100, true),    // closed 100 ms before
        (3200, 3000, true),    // closed 200 ms after, within the 250 ms settle
        (3400, 3000, false),   // closed 400 ms after: too late to explain it
        (1000, 12_000, false), // closed 11 s before: outside the 10 s window
    ];
    for (closed_ms, fail_ms, terminating) in cases {
        let mut lab = Lab::new(config.clone());
        lab.cart_listening();
        let stats = reused_then_reset(fail_ms - 10, 5, fail_ms - 5, fail_ms);
        lab.feed_ev(
            event(EventKind::Connect, 0xa, FRONTEND, Role::Client)
                .at(10 * MS)
                .stats(established(10)),
            10 * MS,
        );
        let mut events = vec![
            (
                closed_ms,
                Event::from(
                    event(EventKind::ListenClose, 0xc0, CART, Role::Listener)
                        .at(closed_ms * MS)
                        .between("0.0.0.0:8080", "0.0.0.0:0"),
                ),
            ),
            (
                fail_ms,
                Event::from(
                    event(EventKind::Close, 0xa, FRONTEND, Role::Client)
                        .at(fail_ms * MS)
                        .stats(stats),
                ),
            ),
        ];
        events.sort_by_key(|(t, _)| *t);
        for (t, ev) in events {
            lab.feed(ev, t * MS);
        }
        lab.tick((fail_ms + 1000) * MS);
        let f = lab.failures()[0];
        assert_eq!(
            f.cause == Cause::PodTerminating,
            terminating,
            "listener closed at {closed_ms} ms, failure at {fail_ms} ms: {:?}",
            f.cause
        );
        if terminating && closed_ms < fail_ms {
            assert_eq!(
                f.evidence.listener_closed_before,
                Some(Duration::from_millis(fail_ms - closed_ms))
            );
        }
    }
}

fn api_answer(ip: &str) -> DnsAnswer {
    DnsAnswer {
        name: "api.example".into(),
        rcode: "NoError".into(),
        addresses: vec![ip.parse().unwrap()],
        ttl: 30,
        cnames: Vec::new(),
        truncated: false,
    }
}

#[test]
fn a_connection_to_an_address_its_name_moved_away_from_is_dns_stale() {
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.analysis
        .observe_dns(FRONTEND, api_answer("10.0.0.2"), MS, &mut lab.seen);
    lab.feed_ev(
        event(EventKind::Connect, 0xa, FRONTEND, Role::Client)
            .at(10 * MS)
            .stats(established(10)),
        10 * MS,
    );
    assert!(
        lab.analysis
            .open_to_stale_dns(lab.table.iter(), 1000 * MS)
            .is_empty()
    );
    lab.analysis
        .observe_dns(FRONTEND, api_answer("10.0.0.3"), 2000 * MS, &mut lab.seen);
    let stale = lab.analysis.open_to_stale_dns(lab.table.iter(), 2100 * MS);
    let frontend = PodName {
        namespace: "lab".into(),
        pod: "frontend".into(),
        workload: None,
    };
    assert_eq!(stale.get(&(frontend, "api.example".to_owned())), Some(&1));
    let changed: Vec<bool> = lab
        .seen
        .iter()
        .filter_map(|o| match o {
            Observation::Dns(d) => Some(d.changed),
            _ => None,
        })
        .collect();
    assert_eq!(changed, [false, true]);

    lab.feed_ev(
        event(EventKind::Close, 0xa, FRONTEND, Role::Client)
            .at(3000 * MS)
            .stats(reused_then_reset(2990, 20, 2992, 2995)),
        3000 * MS,
    );
    lab.tick(3300 * MS);
    let f = lab.failures()[0];
    assert_eq!(f.cause, Cause::DnsStale);
    let dns = f.evidence.dns.as_ref().expect("DNS evidence");
    assert_eq!(dns.name, "api.example");
    assert_eq!(
        dns.old_answer,
        ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        dns.new_answer,
        ["10.0.0.3".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(dns.changed_before_failure, Duration::from_millis(995));
    assert!(!dns.ttl_expired);
}

#[test]
fn resets_are_counted_with_the_kernels_reason_or_as_the_peers() {
    let mut lab = Lab::new(AnalysisConfig::default());
    let mut sent = event(EventKind::Reset, 0, CART, Role::Unknown)
        .at(MS)
        .between("10.0.0.2:9090", "10.0.0.1:40000");
    sent.0.reset = Some(Reset {
        inferred: false,
        side: ResetSide::Sent,
        reason: None,
    });
    lab.feed(sent.0, MS);
    let Some(Observation::Reset {
        labels,
        side,
        reason,
    }) = lab.seen.last()
    else {
        panic!("{:?}", lab.seen)
    };
    assert_eq!((labels.pod.as_str(), *side), ("cart", ResetSide::Sent));
    assert_eq!(reason, "unknown");
    assert_eq!(labels.direction, Direction::Inbound);
}

#[test]
fn a_peer_the_cluster_says_is_terminating_is_pod_terminating_on_any_node() {
    let mut lab = Lab::new(AnalysisConfig::default());
    let mut connect = event(EventKind::Connect, 0xa, FRONTEND, Role::Client)
        .at(10 * MS)
        .between("10.0.0.1:40000", "10.0.9.9:8443")
        .stats(established(10));
    connect.0.process.uid = 0;
    lab.feed(connect.0, 10 * MS);
    let opened = lab.seen.iter().find_map(|o| match o {
        Observation::Opened { labels, .. } => Some(labels.peer.clone()),
        _ => None,
    });
    assert_eq!(opened.as_deref(), Some("pay/ledger"), "the cluster's name");
    let terminating = lab.analysis.open_to_terminating(lab.table.iter());
    assert_eq!(terminating.values().sum::<u64>(), 1);
    lab.feed_ev(
        event(EventKind::Close, 0xa, FRONTEND, Role::Client)
            .at(3000 * MS)
            .between("10.0.0.1:40000", "10.0.9.9:8443")
            .stats(reused_then_reset(2990, 5, 2992, 2995)),
        3000 * MS,
    );
    lab.tick(3300 * MS);
    let f = lab.failures()[0];
    assert_eq!(f.cause, Cause::PodTerminating);
    assert_eq!(
        f.evidence.peer_terminating_since,
        Some(UNIX_EPOCH + Duration::from_secs(1))
    );
    assert_eq!(
        f.evidence.peer_terminating_before,
        Some(Duration::from_millis(1995))
    );
    assert_eq!(f.peer_host.as_deref(), Some("ledger.pay.svc.cluster.local"));
    let findings = lab.analysis.findings(&Scope::default());
    assert!(
        findings[0]
            .remedy
            .yaml
            .contains("host: ledger.pay.svc.cluster.local"),
        "{}",
        findings[0].remedy.yaml
    );
    assert!(
        findings[0].remedy.yaml.contains("number: 443"),
        "the Service's port, not the pod's 8443: {}",
        findings[0].remedy.yaml
    );
}

/// A 1 s TTL that never changes: every idle pooled connection outlives it.
/// Its idle-timeout failures stay `idle_timeout` (the DNS evidence is kept);
/// with no idle-close evidence the expired TTL is the cause.
#[test]
fn an_expired_ttl_does_not_outrank_idle_close_evidence() {
    let short_ttl = || DnsAnswer {
        ttl: 1,
        ..api_answer("10.0.0.2")
    };
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.analysis
        .observe_dns(FRONTEND, short_ttl(), MS, &mut lab.seen);
    // The peer's FIN (2 500 ms) came before the request (2 990 ms).
    connect_and_close(
        &mut lab,
        0xa,
        reused_then_reset(2990, 1990, 2500, 2995),
        3000,
    );
    lab.tick(3300 * MS);
    let f = lab.failures()[0];
    assert_eq!(f.cause, Cause::IdleTimeout);
    let dns = f.evidence.dns.as_ref().expect("DNS evidence kept");
    assert!(dns.ttl_expired);

    // A busy connection reset with no idle evidence: the expired TTL speaks.
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.analysis
        .observe_dns(FRONTEND, short_ttl(), MS, &mut lab.seen);
    connect_and_close(&mut lab, 0xb, reused_then_reset(2990, 50, 2992, 2995), 3000);
    lab.tick(3300 * MS);
    let f = lab.failures()[0];
    assert_eq!(f.cause, Cause::DnsStale);
    assert!(f.evidence.dns.as_ref().unwrap().ttl_expired);
}

/// A pooled client notices the peer's idle close only when it writes: the
/// FIN came first, so its idle time is learned all the same, and a later
/// request reset after as long an idle gap is `idle_timeout`, not `peer_reset`.
#[test]
fn a_fin_before_the_next_request_teaches_the_peers_idle_close() {
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    let fin_first = ConnStats {
        peer_close_idle_ns: 1000 * MS,
        ..reused_then_reset(2990, 1990, 2000, 2995)
    };
    connect_and_close(&mut lab, 0xa, fin_first, 3000);
    // Reset 13 ms after a request that followed 980 ms of idle, no FIN.
    let raced = ConnStats {
        fin_in_ns: 0,
        flags: flags::ESTABLISHED | flags::RST_IN | flags::CLOSED,
        ..reused_then_reset(5990, 980, 0, 6003)
    };
    connect_and_close(&mut lab, 0xb, raced, 6010);
    lab.tick(7000 * MS);
    let failures = lab.failures();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[1].cause, Cause::IdleTimeout);
    assert_eq!(
        failures[1].evidence.learned_peer_idle_close,
        Some(Duration::from_secs(1))
    );
}
