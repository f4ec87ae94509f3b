//! The analysis stages together, fed synthetic event sequences through the
//! real connection table, with the time given explicitly: how facts are
//! gathered (termination window, settle, DNS names, FIN before the
//! request), failures decided, 503s joined, findings merged.

use std::{
    net::SocketAddr,
    time::{Duration, UNIX_EPOCH},
};

use tracer_common::event::{ConnStats, EventKind, ResetSide, Role, flags};

use super::{
    cause::Cause,
    direction::Direction,
    failure::Failure,
    findings::{FindingKind, Scope},
    *,
};
use crate::{
    conntrack::ConnectionTable,
    dns::DnsAnswer,
    events::{Family, Process, Reset},
    metadata::{PodSource, Pods},
};

const MS: u64 = 1_000_000;
const FRONTEND: u32 = 1;
const CART: u32 = 2;
const PROXY_PID: u32 = 100;

/// netns N is pod `podN` in namespace `lab`; 1 and 2 have names. The
/// cluster knows 10.0.9.9, on another node: workload `pay/ledger` behind the
/// Service `ledger`, terminating since 1 s (wall clock = monotonic here).
struct LabPods;

const LEDGER: &str = "10.0.9.9";

impl PodSource for LabPods {
    fn peer(&self, addr: SocketAddr) -> Option<crate::metadata::Peer> {
        (addr.ip().to_string() == LEDGER).then(|| crate::metadata::Peer {
            label: "pay/ledger".into(),
            service_host: Some("ledger.pay.svc.cluster.local".into()),
            // The pod listens on 8443; the Service exposes it as 443.
            service_port: Some(443),
            terminating: Some(crate::metadata::Termination {
                since: Some(UNIX_EPOCH + Duration::from_secs(1)),
            }),
        })
    }

    fn lookup(&mut self, netns: u32) -> Option<PodName> {
        let pod = match netns {
            FRONTEND => "frontend".to_owned(),
            CART => "cart".to_owned(),
            n => format!("pod{n}"),
        };
        Some(PodName {
            namespace: "lab".into(),
            pod,
            workload: None,
        })
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Lab {
    table: ConnectionTable,
    analysis: Analysis,
    seen: Vec<Observation>,
}

impl Lab {
    fn new(config: AnalysisConfig) -> Self {
        Self {
            table: ConnectionTable::new(64),
            analysis: Analysis::new(
                config,
                Pods::new(Box::new(LabPods)),
                Clock::with_offset(Duration::ZERO),
                ResetReasons::default(),
            ),
            seen: Vec::new(),
        }
    }

    /// Applies `ev` to the table and the analysis, read at `now_ns`.
    fn feed(&mut self, mut ev: Event, now_ns: u64) {
        let applied = self.table.apply(&mut ev);
        self.analysis.observe(&ev, &applied, now_ns, &mut self.seen);
    }

    fn tick(&mut self, now_ns: u64) {
        self.analysis.tick(now_ns, &mut self.seen);
    }

    fn failures(&self) -> Vec<&Failure> {
        self.seen
            .iter()
            .filter_map(|o| match o {
                Observation::Failure(f) => Some(f.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn http_503s(&self) -> Vec<&Http503> {
        self.seen
            .iter()
            .filter_map(|o| match o {
                Observation::Http503(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    /// The cart listens on 0.0.0.0:8080 and has accepted one connection,
    /// so its address is known to be the cart's.
    fn cart_listening(&mut self) {
        self.feed_ev(
            event(EventKind::Listen, 0xc0, CART, Role::Listener)
                .at(0)
                .between("0.0.0.0:8080", "0.0.0.0:0"),
            0,
        );
        self.feed_ev(
            event(EventKind::Accept, 0xc1, CART, Role::Server)
                .at(5 * MS)
                .between("10.0.0.2:8080", "10.0.0.1:39999"),
            5 * MS,
        );
    }
}

/// An event builder with the frontend's client connection as its default.
struct Ev(Event);

fn event(kind: EventKind, sock: u64, netns: u32, role: Role) -> Ev {
    Ev(Event {
        kind,
        time: UNIX_EPOCH,
        mono_ns: 0,
        sock,
        netns,
        role,
        process: Process {
            pid: PROXY_PID,
            tid: PROXY_PID + 1,
            uid: 1337,
            cgroup_id: 0,
            comm: "wrk:worker_0".into(),
        },
        family: Family::Ipv4,
        local: addr("10.0.0.1:40000"),
        remote: addr("10.0.0.2:8080"),
        tcp_state: 0,
        reset: None,
        http_status: None,
        stats: ConnStats::default(),
    })
}

impl Ev {
    fn at(mut self, ns: u64) -> Self {
        self.0.mono_ns = ns;
        self.0.time = UNIX_EPOCH + Duration::from_nanos(ns);
        self
    }
    fn between(mut self, local: &str, remote: &str) -> Self {
        self.0.local = addr(local);
        self.0.remote = addr(remote);
        self
    }
    fn stats(mut self, stats: ConnStats) -> Self {
        self.0.stats = stats;
        self
    }
    fn pid(mut self, pid: u32) -> Self {
        self.0.process.pid = pid;
        self
    }
}

impl From<Ev> for Event {
    fn from(e: Ev) -> Self {
        e.0
    }
}

impl Lab {
    fn feed_ev(&mut self, ev: Ev, now_ns: u64) {
        self.feed(ev.0, now_ns)
    }
}

fn established(start_ms: u64) -> ConnStats {
    ConnStats {
        start_ns: start_ms * MS,
        established_ns: start_ms * MS + MS / 10,
        flags: flags::ESTABLISHED,
        ..ConnStats::default()
    }
}

/// A reused connection: a second request written at `send_ms` after
/// `idle_ms` of silence, answered by the peer's FIN at `fin_ms` and its
/// reset at `rst_ms`.
fn reused_then_reset(send_ms: u64, idle_ms: u64, fin_ms: u64, rst_ms: u64) -> ConnStats {
    ConnStats {
        requests: 2,
        last_send_ns: send_ms * MS,
        last_recv_ns: (send_ms - idle_ms) * MS,
        last_reuse_idle_ns: idle_ms * MS,
        fin_in_ns: fin_ms * MS,
        rst_ns: rst_ms * MS,
        closed_ns: rst_ms * MS,
        flags: flags::ESTABLISHED | flags::FIN_IN | flags::RST_IN | flags::CLOSED,
        ..established(10)
    }
}

fn connect_and_close(lab: &mut Lab, sock: u64, close: ConnStats, now_ms: u64) {
    lab.feed_ev(
        event(EventKind::Connect, sock, FRONTEND, Role::Client)
            .at(10 * MS)
            .stats(established(10)),
        10 * MS,
    );
    lab.feed_ev(
        event(EventKind::Close, sock, FRONTEND, Role::Client)
            .at(now_ms * MS)
            .stats(close),
        now_ms * MS,
    );
}

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

    // The same reset with the FIN after our request and nothing learned: peer_reset.
    let mut lab = Lab::new(AnalysisConfig::default());
    lab.cart_listening();
    connect_and_close(
        &mut lab,
        0xb,
        reused_then_reset(2990, 1990, 2992, 2995),
        3000,
    );
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
    lab.tick(3300 * MS);
    let attributed = lab.http_503s();
    assert_eq!(attributed.len(), 1, "{attributed:?}");
    assert_eq!(attributed[0].cause, Some(Cause::IdleTimeout));
    assert_eq!(attributed[0].pid, PROXY_PID);
    lab.tick(4100 * MS);
    let all = lab.http_503s();
    assert_eq!(all.len(), 2);
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
fn resets_are_counted_with_the_kernels_reason_or_as_the_peers() {
    let mut lab = Lab::new(AnalysisConfig::default());
    let mut sent = event(EventKind::Reset, 0, CART, Role::Unknown)
        .at(MS)
        .between("10.0.0.2:9090", "10.0.0.1:40000");
    sent.0.reset = Some(Reset {
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
