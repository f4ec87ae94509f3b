use super::*;
use crate::lab::mesh::records::PairedFailure;

const CALLER: &str = "127.0.0.1:40000";
const POOLED: &str = "10.213.1.10:50000";
const APP: &str = "127.0.0.1:8080";

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms)
}

fn a(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn line(ms: u64, code: u16, flags: &str, from: &str, upstream: Option<&str>) -> Line {
    Line {
        start: at(ms),
        duration: Duration::from_millis(3),
        code,
        flags: flags.into(),
        downstream_remote: a(from),
        upstream_local: upstream.and_then(a),
        failure_reason: "-".into(),
        attempts: 1,
        path: "/".into(),
    }
}

fn seen(ms: u64, remote: &str, cause: &str, failure: Option<(&str, u64)>) -> Seen503 {
    Seen503 {
        time: at(ms),
        pod: "frontend".into(),
        pid: 1,
        tid: 2,
        local: a("127.0.0.1:15001"),
        remote: a(remote),
        cause: cause.into(),
        passthrough: false,
        failure: failure.map(|(local, t)| PairedFailure {
            local: a(local),
            remote: a(APP),
            namespace: "lab1".into(),
            pod: "cart".into(),
            at: Some(at(t)),
            hop: "far".into(),
        }),
    }
}

fn failure(ms: u64, local: &str, end: &str) -> FailureSeen {
    FailureSeen {
        time: at(ms),
        pod: "cart".into(),
        local: a(local),
        remote: a(APP),
        cause: "idle_timeout".into(),
        stale: true,
        end: end.into(),
    }
}

fn evidence<'a>(
    outbound: &'a [Line],
    inbound: &'a [Line],
    seen: &'a [Seen503],
    failures: &'a [FailureSeen],
) -> Evidence<'a> {
    Evidence {
        outbound,
        inbound,
        seen,
        failures,
        far_pod: "cart",
        app: APP.parse().unwrap(),
    }
}

#[test]
fn a_far_hop_503_joins_across_both_sidecars() {
    let outbound = [line(1000, 503, "-", CALLER, Some(POOLED))];
    let inbound = [line(1001, 503, "UC", POOLED, Some("127.0.0.1:51000"))];
    let seen = [seen(
        1004,
        CALLER,
        "idle_timeout",
        Some(("127.0.0.1:51000", 1002)),
    )];
    let failures = [failure(1002, "127.0.0.1:51000", "reset_received")];
    let joined = join(&evidence(&outbound, &inbound, &seen, &failures));
    let r = &joined.requests[0];
    assert_eq!(r.inbound, Some(&inbound[0]));
    assert_eq!(r.far_failures.len(), 1);
    assert_eq!(r.attributed_at_far_hop("idle_timeout", "cart"), Ok(()));
    assert!(joined.unexplained.is_empty());
    assert!(r.attributed_at_far_hop("pod_terminating", "cart").is_err());
}

#[test]
fn a_503_paired_with_another_requests_failure_is_wrong() {
    let outbound = [line(1000, 503, "-", CALLER, Some(POOLED))];
    let inbound = [line(1001, 503, "UC", POOLED, Some("127.0.0.1:51000"))];
    let seen = [seen(
        1004,
        CALLER,
        "idle_timeout",
        Some(("127.0.0.1:52000", 990)),
    )];
    let failures = [
        failure(1002, "127.0.0.1:51000", "reset_received"),
        failure(990, "127.0.0.1:52000", "reset_received"),
    ];
    let joined = join(&evidence(&outbound, &inbound, &seen, &failures));
    let why = joined.requests[0]
        .attributed_at_far_hop("idle_timeout", "cart")
        .unwrap_err();
    assert!(why.contains("127.0.0.1:52000"), "{why}");
}

#[test]
fn two_records_for_one_request_are_counted_twice() {
    let outbound = [line(1000, 503, "-", CALLER, Some(POOLED))];
    let inbound = [line(1001, 503, "UC", POOLED, Some("127.0.0.1:51000"))];
    let record = seen(
        1004,
        CALLER,
        "idle_timeout",
        Some(("127.0.0.1:51000", 1002)),
    );
    let seen = [record.clone(), record];
    let failures = [failure(1002, "127.0.0.1:51000", "reset_received")];
    let joined = join(&evidence(&outbound, &inbound, &seen, &failures));
    let why = joined.requests[0]
        .attributed_at_far_hop("idle_timeout", "cart")
        .unwrap_err();
    assert!(why.contains("counted twice"), "{why}");
}

/// The pooled mTLS connection carries every request: the time tells which
/// inbound line is whose.
#[test]
fn requests_on_one_pooled_connection_join_by_time() {
    let outbound = [
        line(1000, 200, "-", "127.0.0.1:40000", Some(POOLED)),
        line(2000, 503, "-", "127.0.0.1:40001", Some(POOLED)),
    ];
    let inbound = [
        line(2001, 503, "UC", POOLED, Some("127.0.0.1:51000")),
        line(1001, 200, "-", POOLED, Some("127.0.0.1:51000")),
    ];
    let joined = join(&evidence(&outbound, &inbound, &[], &[]));
    assert_eq!(joined.requests[0].inbound, Some(&inbound[1]));
    assert_eq!(joined.requests[1].inbound, Some(&inbound[0]));
}

/// A refused connect leaves Envoy no upstream address: the failed connect
/// to the app during the inbound request stands for it.
#[test]
fn a_refused_connect_joins_by_time_and_destination() {
    let outbound = [
        line(1000, 503, "-", "127.0.0.1:40000", Some(POOLED)),
        line(1010, 503, "-", "127.0.0.1:40001", Some(POOLED)),
    ];
    let inbound = [
        line(1001, 503, "UF", POOLED, None),
        line(1011, 503, "UF", POOLED, None),
    ];
    let seen = [
        seen(
            1004,
            "127.0.0.1:40000",
            "pod_terminating",
            Some(("127.0.0.1:53000", 1002)),
        ),
        seen(
            1014,
            "127.0.0.1:40001",
            "pod_terminating",
            Some(("127.0.0.1:53000", 1002)),
        ),
    ];
    let mut refused = failure(1002, "127.0.0.1:53000", "connect_refused");
    refused.cause = "pod_terminating".into();
    let failures = [refused];
    let joined = join(&evidence(&outbound, &inbound, &seen, &failures));
    assert_eq!(
        joined.requests[0].attributed_at_far_hop("pod_terminating", "cart"),
        Ok(())
    );
    // The second request's inbound line saw no failed connect of its own:
    // the first one's failure, 9 ms before, is outside it.
    let why = joined.requests[1]
        .attributed_at_far_hop("pod_terminating", "cart")
        .unwrap_err();
    assert!(why.contains("outside"), "{why}");
}

#[test]
fn the_apps_own_503_passes_through_unattributed() {
    let outbound = [
        line(1000, 503, "-", "127.0.0.1:40000", Some(POOLED)),
        line(1100, 503, "-", "127.0.0.1:40001", Some(POOLED)),
    ];
    let through = seen(1004, "127.0.0.1:40000", "unattributed", None);
    let taken = seen(
        1104,
        "127.0.0.1:40001",
        "peer_reset",
        Some(("127.0.0.1:51000", 1050)),
    );
    let seen = [through, taken];
    let joined = join(&evidence(&outbound, &[], &seen, &[]));
    assert_eq!(joined.requests[0].passed_through(), Ok(()));
    let why = joined.requests[1].passed_through().unwrap_err();
    assert!(why.contains("attributed to peer_reset"), "{why}");
}

#[test]
fn a_503_record_for_a_request_that_got_200_is_unexplained() {
    let outbound = [line(1000, 200, "-", CALLER, Some(POOLED))];
    let seen = [seen(1004, CALLER, "idle_timeout", None)];
    let joined = join(&evidence(&outbound, &[], &seen, &[]));
    assert_eq!(joined.unexplained.len(), 1);
    let tally = Tally::of(&joined.requests, |r| r.passed_through());
    assert_eq!((tally.checked, tally.passed), (1, 0));
}
