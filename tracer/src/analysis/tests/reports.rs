//! 503s joined to their failures, and findings: merged per pod, peer and
//! port, read without side effects, round-tripped through JSON.

use super::*;

#[test]
fn a_503_takes_the_cause_of_its_proxys_failure_and_others_stay_unattributed() {
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    // The proxy's downstream connection, and a second proxy process beside it.
    for (sock, pid, port) in [(0xd0, PROXY_PID, 5555), (0xd1, 200, 5556)] {
        lab.feed_ev(
            event(EventKind::Accept, sock, FRONTEND, Role::Server)
                .pid(pid)
                .at(20 * MS)
                .between("10.0.0.1:15001", &format!("10.0.0.9:{port}"))
                .stats(established(20)),
            20 * MS,
        );
    }
    connect_and_close(
        &mut lab,
        0xa,
        reused_then_reset(2990, 1990, 2500, 2995),
        3000,
    );
    // The status lines carry only addresses: the table joins them to their socket.
    for port in [5555, 5556] {
        let mut status = event(EventKind::HttpStatus, 0, 0, Role::Unknown)
            .pid(0)
            .at(2999 * MS)
            .between("10.0.0.1:15001", &format!("10.0.0.9:{port}"));
        status.0.http_status = Some(503);
        lab.feed(status.0, 3000 * MS);
    }
    // Decided once every failure that could explain them has arrived.
    lab.tick(3300 * MS);
    assert!(lab.http_503s().is_empty());
    lab.tick(4100 * MS);
    let all = lab.http_503s();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (all[0].pid, all[0].cause),
        (PROXY_PID, Some(Cause::IdleTimeout))
    );
    assert_eq!((all[1].pid, all[1].cause_name()), (200, "unattributed"));
    let findings = lab.analysis.findings(&Scope::default());
    assert_eq!(findings[0].http_503, 1);
}

#[test]
fn a_mismatch_merges_into_the_failures_it_explains_and_reading_changes_nothing() {
    let config = AnalysisConfig {
        peer_cap: 2,
        ..AnalysisConfig::default()
    };
    let mut lab = Lab::new(config);
    // The frontend's pool closes nothing; the cart closes idle connections after 1 s.
    lab.feed_ev(
        event(EventKind::Connect, 0xa, FRONTEND, Role::Client)
            .at(10 * MS)
            .stats(established(10)),
        10 * MS,
    );
    let idle_close = ConnStats {
        requests: 1,
        last_send_ns: 100 * MS,
        last_recv_ns: 110 * MS,
        fin_in_ns: 1110 * MS,
        peer_close_idle_ns: 1000 * MS,
        closed_ns: 1111 * MS,
        flags: flags::ESTABLISHED | flags::FIN_IN | flags::FIN_OUT | flags::CLOSED,
        fin_out_ns: 1111 * MS,
        ..established(10)
    };
    lab.feed_ev(
        event(EventKind::Close, 0xa, FRONTEND, Role::Client)
            .at(1111 * MS)
            .stats(idle_close),
        1111 * MS,
    );
    let mut reuse = event(EventKind::Reuse, 0xb, FRONTEND, Role::Client)
        .at(1200 * MS)
        .stats(ConnStats {
            last_reuse_idle_ns: 900 * MS,
            requests: 2,
            ..established(1150)
        });
    reuse.0.local = addr("10.0.0.1:40001");
    lab.feed(reuse.0, 1200 * MS);
    lab.tick(1500 * MS);

    let findings = lab.analysis.findings(&Scope::default());
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].kind, FindingKind::IdleTimeoutMismatch);
    assert_eq!(
        findings[0].peer, "port-8080",
        "the cart's address is not known yet"
    );

    // The cart shows up (its address becomes known); reading the findings
    // must not admit its new peer label: only metric observations do.
    lab.cart_listening();
    for _ in 0..3 {
        let read = lab.analysis.findings(&Scope::default());
        assert_eq!(read[0].peer, "lab/cart", "the label metrics would give it");
        lab.analysis.open_to_terminating(lab.table.iter());
    }
    // One peer slot (of 2) is left for the next destination metrics see.
    let mut other = event(EventKind::Connect, 0xe, FRONTEND, Role::Client)
        .at(1600 * MS)
        .between("10.0.0.1:40002", "10.0.0.7:9090")
        .stats(established(1600));
    other.0.process.uid = 0;
    lab.feed(other.0, 1600 * MS);
    let last_opened = lab.seen.iter().rev().find_map(|o| match o {
        Observation::Opened { labels, .. } => Some(labels.peer.clone()),
        _ => None,
    });
    assert_eq!(last_opened.as_deref(), Some("port-9090"));

    // An idle-timeout failure to the same destination (same peer label):
    // one finding, with the mismatch's evidence merged in.
    let mut lab2 = Lab::new(AnalysisConfig::default());
    lab2.feed_ev(
        event(EventKind::Connect, 0xa, FRONTEND, Role::Client)
            .at(10 * MS)
            .stats(established(10)),
        10 * MS,
    );
    lab2.feed_ev(
        event(EventKind::Close, 0xa, FRONTEND, Role::Client)
            .at(1111 * MS)
            .stats(idle_close),
        1111 * MS,
    );
    connect_and_close(
        &mut lab2,
        0xb,
        reused_then_reset(2990, 950, 2992, 2995),
        3000,
    );
    lab2.tick(3300 * MS);
    assert_eq!(
        lab2.failures()[0].cause,
        Cause::IdleTimeout,
        "950 ms ≥ 80 % of 1 s"
    );
    let merged = lab2.analysis.findings(&Scope::default());
    assert_eq!(merged.len(), 1, "{merged:#?}");
    let f = &merged[0];
    assert_eq!(f.kind, FindingKind::StaleConnectionFailures);
    assert_eq!((f.failures, f.stale_failures), (1, 1));
    assert_eq!(f.evidence.peer_idle_closes, Some(1));
    assert_eq!(
        f.evidence.learned_peer_idle_close,
        Some(Duration::from_millis(1000))
    );
    assert!(
        f.remedy.yaml.contains("idleTimeout: 800ms"),
        "{}",
        f.remedy.yaml
    );
    // Scoped to another pod: nothing.
    let none = lab2.analysis.findings(&Scope {
        namespace: Some("lab".into()),
        pod: Some("cart".into()),
    });
    assert!(none.is_empty());
}

#[test]
fn one_finding_per_pod_and_peer_led_by_its_most_common_cause() {
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    // Two resets with a request in flight (peer_reset), then a refused connect (unknown).
    for (sock, at) in [(0xa, 3000), (0xb, 5000)] {
        connect_and_close(
            &mut lab,
            sock,
            reused_then_reset(at - 10, 5, at - 5, at),
            at,
        );
    }
    let refused = ConnStats {
        flags: flags::RST_IN | flags::CLOSED,
        rst_ns: 6000 * MS,
        closed_ns: 6000 * MS,
        ..ConnStats::default()
    };
    lab.feed_ev(
        event(EventKind::Close, 0xc, FRONTEND, Role::Client)
            .at(6000 * MS)
            .stats(refused),
        6000 * MS,
    );
    lab.tick(7000 * MS);
    let causes: Vec<Cause> = lab.failures().iter().map(|f| f.cause).collect();
    assert_eq!(causes, [Cause::PeerReset, Cause::PeerReset, Cause::Unknown]);
    let findings = lab.analysis.findings(&Scope::default());
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        (f.cause, f.failures, f.stale_failures),
        (Cause::PeerReset, 3, 2)
    );
    let by_cause: Vec<(Cause, u64)> = f.causes.iter().map(|c| (c.cause, c.failures)).collect();
    assert_eq!(by_cause, [(Cause::PeerReset, 2), (Cause::Unknown, 1)]);
    assert_eq!(f.first_seen, Some(UNIX_EPOCH + Duration::from_millis(3000)));
    assert_eq!(f.last_seen, Some(UNIX_EPOCH + Duration::from_millis(6000)));
    assert!(
        f.remedy
            .summary
            .contains("reset connections with requests in flight")
    );

    // Another port of the same peer is another destination: its own finding.
    let mut other_port = event(EventKind::Close, 0xd, FRONTEND, Role::Client)
        .at(6500 * MS)
        .between("10.0.0.1:40009", "10.0.0.2:9")
        .stats(refused);
    other_port.0.stats.closed_ns = 6500 * MS;
    lab.feed(other_port.0, 6500 * MS);
    lab.tick(7500 * MS);
    let findings = lab.analysis.findings(&Scope::default());
    assert_eq!(findings.len(), 2);
    let ports: Vec<u16> = findings.iter().map(|f| f.destination.port()).collect();
    assert_eq!(ports, [9, 8080]);
    let f = &findings[1];

    // The finding survives its trip through JSON (what `diagnose` reads).
    let json = serde_json::to_string(f).unwrap();
    let back: findings::Finding = serde_json::from_str(&json).unwrap();
    assert_eq!(&back.causes, &f.causes);
    assert_eq!(back.samples.len(), 3);
    assert_eq!(back.samples[0].end, EndReason::ResetReceived);
    assert_eq!(
        back.samples[0].evidence.peer_close,
        failure::PeerClose::Reset
    );
}

#[test]
fn past_the_findings_cap_the_least_recently_seen_finding_goes() {
    let mut lab = Lab::new(AnalysisConfig {
        findings_cap: 2,
        ..AnalysisConfig::default()
    });
    let refused = |at_ms: u64| ConnStats {
        flags: flags::RST_IN | flags::CLOSED,
        rst_ns: at_ms * MS,
        closed_ns: at_ms * MS,
        ..ConnStats::default()
    };
    // Refused connects to ports 1, 2, 1 again, then 3: port 2 is the least recently seen.
    for (sock, port, at) in [
        (0xa, 1, 1000),
        (0xb, 2, 2000),
        (0xc, 1, 3000),
        (0xd, 3, 4000),
    ] {
        lab.feed_ev(
            event(EventKind::Close, sock, FRONTEND, Role::Client)
                .at(at * MS)
                .between("10.0.0.1:40009", &format!("10.0.0.2:{port}"))
                .stats(refused(at)),
            at * MS,
        );
        lab.tick((at + 500) * MS);
    }
    let findings = lab.analysis.findings(&Scope::default());
    let ports: Vec<u16> = findings.iter().map(|f| f.destination.port()).collect();
    assert_eq!(ports, [1, 3]);
    assert_eq!(findings[0].failures, 2);
    assert_eq!(lab.analysis.findings_dropped(), 1);
}
