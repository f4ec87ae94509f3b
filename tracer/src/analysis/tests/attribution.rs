//! The attribution rules (`analysis/attribution.rs`), one test per rule,
//! on synthetic event sequences through the real connection table.
//!
//! The node: the frontend pod (netns 1) with its outbound sidecar P1 (pid
//! 100; workers 11 and 12, listener thread 10), the cart pod (netns 2) with
//! its inbound sidecar P2 (pid 300, worker 31) and its app (pid 400).

use super::*;

const P1: u32 = PROXY_PID;
const P2: u32 = 300;
const APP: u32 = 400;
/// P1's upstream connection to the cart; P2 accepted it behind REDIRECT.
const P1_UP: (&str, &str) = ("10.0.0.1:40000", "10.0.0.2:8080");
const P2_DOWN: (&str, &str) = ("10.0.0.2:15006", "10.0.0.1:40000");
/// P2's upstream connection to its app, and the app's side of it.
const P2_UP: (&str, &str) = ("127.0.0.1:41000", "127.0.0.1:8080");
const APP_DOWN: (&str, &str) = ("127.0.0.1:8080", "127.0.0.1:41000");
/// Another upstream connection of P2's worker.
const UNRELATED: (&str, &str) = ("127.0.0.1:41001", "127.0.0.1:8080");

impl Ev {
    fn thread(mut self, pid: u32, tid: u32) -> Self {
        self.0.process.pid = pid;
        self.0.process.tid = tid;
        self
    }
    fn app(mut self) -> Self {
        self.0.process = Process {
            pid: APP,
            tid: APP,
            uid: 1000,
            cgroup_id: 0,
            comm: "app".into(),
        };
        self
    }
}

/// A connection opened at 10 ms by `(pid, tid)`.
fn open(lab: &mut Lab, sock: u64, netns: u32, role: Role, who: (u32, u32), ends: (&str, &str)) {
    let kind = if role == Role::Client {
        EventKind::Connect
    } else {
        EventKind::Accept
    };
    let ev = event(kind, sock, netns, role)
        .thread(who.0, who.1)
        .at(10 * MS)
        .between(ends.0, ends.1)
        .stats(established(10));
    lab.feed_ev(ev, 10 * MS);
}

/// The app's accepted side of P2's upstream connection.
fn app_accepts(lab: &mut Lab) {
    let ev = event(EventKind::Accept, 0xa0, CART, Role::Server)
        .app()
        .at(10 * MS)
        .between(APP_DOWN.0, APP_DOWN.1)
        .stats(established(10));
    lab.feed_ev(ev, 10 * MS);
}

/// P1's downstream connection `n` from the caller, accepted (owner: the
/// listener's thread 10).
fn p1_downstream(lab: &mut Lab, n: u64) -> (String, String) {
    let ends = (
        "10.0.0.1:15001".to_owned(),
        format!("10.0.0.1:{}", 5000 + n),
    );
    open(
        lab,
        0xd0 + n,
        FRONTEND,
        Role::Server,
        (P1, 10),
        (&ends.0, &ends.1),
    );
    ends
}

/// A 503 status line leaving the socket `ends`, whose worker is `io_tid`.
fn status_503(lab: &mut Lab, ends: (&str, &str), at_ms: u64, io_tid: u32) {
    let mut ev = event(EventKind::HttpStatus, 0, 0, Role::Unknown)
        .pid(0)
        .at(at_ms * MS)
        .between(ends.0, ends.1)
        .stats(ConnStats {
            io_tid,
            ..ConnStats::default()
        });
    ev.0.http_status = Some(503);
    lab.feed(ev.0, at_ms * MS);
}

/// The open connection `sock` of `(pid, tid)` fails at `at_ms`: reused after
/// 900 ms idle, the peer's FIN before the request, its reset after.
fn stale_failure(
    lab: &mut Lab,
    sock: u64,
    netns: u32,
    who: (u32, u32),
    ends: (&str, &str),
    at_ms: u64,
) {
    let ev = event(EventKind::Close, sock, netns, Role::Client)
        .thread(who.0, who.1)
        .at(at_ms * MS)
        .between(ends.0, ends.1)
        .stats(reused_then_reset(at_ms - 5, 900, at_ms - 400, at_ms));
    lab.feed_ev(ev, at_ms * MS);
}

/// A connect by `(pid, tid)` refused at `at_ms` (never in the table).
fn refused_connect(lab: &mut Lab, sock: u64, who: (u32, u32), at_ms: u64) {
    let stats = ConnStats {
        start_ns: at_ms * MS - MS / 2,
        rst_ns: at_ms * MS,
        closed_ns: at_ms * MS,
        flags: flags::RST_IN | flags::CLOSED,
        ..ConnStats::default()
    };
    let ev = event(EventKind::Close, sock, FRONTEND, Role::Client)
        .thread(who.0, who.1)
        .at(at_ms * MS)
        .between("10.0.0.1:0", P1_UP.1)
        .stats(stats);
    lab.feed_ev(ev, at_ms * MS);
}

impl Lab {
    fn proxy_answered(&self) -> Vec<&FailureRef> {
        self.seen
            .iter()
            .filter_map(|o| match o {
                Observation::ProxyAnswered503(f) => Some(f.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn verdicts(&self) -> Vec<(String, &'static str, Option<Hop>, bool)> {
        self.http_503s()
            .iter()
            .map(|h| {
                (
                    h.remote.to_string(),
                    h.cause_name(),
                    h.failure.as_ref().map(|f| f.hop),
                    h.passthrough,
                )
            })
            .collect()
    }
}

#[test]
fn a_503_takes_a_failure_of_its_own_worker_thread_only() {
    let mut lab = Lab::new(AnalysisConfig::default());
    open(&mut lab, 0xa, FRONTEND, Role::Client, (P1, 11), P1_UP);
    let d1 = p1_downstream(&mut lab, 1);
    let d2 = p1_downstream(&mut lab, 2);
    stale_failure(&mut lab, 0xa, FRONTEND, (P1, 11), P1_UP, 1000);
    // Worker 12 writes a 503 first: not its failure.
    status_503(&mut lab, (&d1.0, &d1.1), 1001, 12);
    status_503(&mut lab, (&d2.0, &d2.1), 1002, 11);
    lab.tick(4000 * MS);
    let h = lab.http_503s();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!((h[0].tid, h[0].cause_name()), (12, "unattributed"));
    assert_eq!((h[1].tid, h[1].cause_name()), (11, "idle_timeout"));
    let f = h[1].failure.as_ref().expect("paired");
    assert_eq!(
        (f.hop, f.local, f.remote),
        (Hop::Local, addr(P1_UP.0), addr(P1_UP.1))
    );
    assert_eq!(h[1].local, addr("10.0.0.1:15001"));
    assert!(lab.proxy_answered().is_empty(), "the failure was taken");
}

#[test]
fn a_failure_after_the_503_does_not_explain_it() {
    let mut lab = Lab::new(AnalysisConfig::default());
    open(&mut lab, 0xa, FRONTEND, Role::Client, (P1, 11), P1_UP);
    let d = p1_downstream(&mut lab, 1);
    status_503(&mut lab, (&d.0, &d.1), 1000, 11);
    stale_failure(&mut lab, 0xa, FRONTEND, (P1, 11), P1_UP, 1010);
    lab.tick(4000 * MS);
    assert_eq!(lab.http_503s()[0].cause_name(), "unattributed");
    // Nothing seen took it: a 503 the proxy will have answered.
    let answered = lab.proxy_answered();
    assert_eq!(answered.len(), 1);
    assert_eq!(
        (answered[0].pid, answered[0].cause),
        (P1, Cause::IdleTimeout)
    );
}

#[test]
fn a_refused_connect_explains_every_503_queued_on_it_and_one_more_after() {
    let mut lab = Lab::new(AnalysisConfig::default());
    let downs: Vec<_> = (1..=4).map(|n| p1_downstream(&mut lab, n)).collect();
    refused_connect(&mut lab, 0xb, (P1, 11), 1000);
    for (d, at) in downs.iter().zip([1001, 1002, 1003]) {
        status_503(&mut lab, (&d.0, &d.1), at, 11);
    }
    // Past the queue: a fresh request of its own, no failure left for it.
    status_503(&mut lab, (&downs[3].0, &downs[3].1), 1300, 11);
    lab.tick(4000 * MS);
    let h = lab.http_503s();
    assert_eq!(h.len(), 4);
    for queued in &h[..3] {
        let f = queued.failure.as_ref().expect("attributed");
        assert_eq!(f.end, EndReason::ConnectRefused);
        assert_eq!(queued.cause, Some(f.cause));
    }
    assert_eq!(h[3].cause_name(), "unattributed");
    assert!(lab.proxy_answered().is_empty());
}

#[test]
fn the_apps_own_503_passed_on_is_not_attributed_and_leaves_the_failure_alone() {
    let mut lab = Lab::new(AnalysisConfig::default());
    // P2's upstream to its app, and another of its upstream connections
    // that fails (unrelated) just before the app answers 503.
    open(&mut lab, 0xa, CART, Role::Client, (P2, 31), P2_UP);
    open(&mut lab, 0xc, CART, Role::Client, (P2, 31), UNRELATED);
    app_accepts(&mut lab);
    open(&mut lab, 0xe, CART, Role::Server, (P2, 30), P2_DOWN);
    stale_failure(&mut lab, 0xc, CART, (P2, 31), UNRELATED, 999);
    status_503(&mut lab, APP_DOWN, 1000, APP);
    status_503(&mut lab, P2_DOWN, 1001, 31);
    lab.tick(4000 * MS);
    let h = lab.http_503s();
    assert_eq!(
        h.len(),
        1,
        "the app's 503 is not counted as a proxy's: {h:?}"
    );
    assert_eq!(
        (h[0].cause_name(), h[0].passthrough),
        ("unattributed", true)
    );
    assert!(h[0].failure.is_none());
    let answered = lab.proxy_answered();
    assert_eq!(answered.len(), 1, "the failure stays free");
    assert_eq!(answered[0].local, addr("127.0.0.1:41001"));
}

#[test]
fn a_failure_retried_successfully_is_not_taken_by_a_later_unrelated_503() {
    let mut lab = Lab::new(AnalysisConfig::default());
    open(&mut lab, 0xa, CART, Role::Client, (P2, 31), P2_UP);
    open(&mut lab, 0xc, CART, Role::Client, (P2, 31), UNRELATED);
    app_accepts(&mut lab);
    open(&mut lab, 0xe, CART, Role::Server, (P2, 30), P2_DOWN);
    let other = ("10.0.0.2:15006", "10.0.0.1:40001");
    open(&mut lab, 0xf, CART, Role::Server, (P2, 30), other);
    // Envoy retried this one: no 503 follows it on its thread.
    stale_failure(&mut lab, 0xc, CART, (P2, 31), UNRELATED, 1000);
    // Another worker's 503, then the app's own 503 passed on by worker 31.
    status_503(&mut lab, other, 1500, 32);
    status_503(&mut lab, APP_DOWN, 1600, APP);
    status_503(&mut lab, P2_DOWN, 1601, 31);
    lab.tick(5000 * MS);
    let causes: Vec<_> = lab.http_503s().iter().map(|h| h.cause_name()).collect();
    assert_eq!(causes, vec!["unattributed", "unattributed"]);
    assert_eq!(lab.proxy_answered().len(), 1);
}

/// P1 (frontend) → P2 (cart, behind REDIRECT) → app; P2's stale connection
/// to its app fails; P1 answers the caller 503.
fn two_hops(lab: &mut Lab) -> (String, String) {
    open(lab, 0xa, FRONTEND, Role::Client, (P1, 11), P1_UP);
    open(lab, 0xb, CART, Role::Server, (P2, 30), P2_DOWN);
    // P2's worker shows itself on the accepted connection's I/O.
    let reuse = event(EventKind::Reuse, 0xb, CART, Role::Server)
        .thread(P2, 30)
        .at(500 * MS)
        .between(P2_DOWN.0, P2_DOWN.1)
        .stats(ConnStats {
            io_tid: 31,
            last_reuse_idle_ns: 400 * MS,
            ..established(10)
        });
    lab.feed_ev(reuse, 500 * MS);
    open(lab, 0xc, CART, Role::Client, (P2, 31), P2_UP);
    app_accepts(lab);
    let d = p1_downstream(lab, 1);
    stale_failure(lab, 0xc, CART, (P2, 31), P2_UP, 1000);
    d
}

#[test]
fn a_503_behind_two_hops_gets_the_far_cause_counted_once() {
    let mut lab = Lab::new(AnalysisConfig::default());
    let d = two_hops(&mut lab);
    // mTLS between the sidecars: P2's 503 is not seen, P1's is.
    status_503(&mut lab, (&d.0, &d.1), 1002, 11);
    lab.tick(5000 * MS);
    let h = lab.http_503s();
    assert_eq!(h.len(), 1);
    assert_eq!(
        (h[0].pod.as_str(), h[0].cause_name()),
        ("frontend", "idle_timeout")
    );
    let f = h[0].failure.as_ref().expect("far failure");
    assert_eq!((f.hop, f.pod.as_str()), (Hop::Far, "cart"));
    assert_eq!((f.local, f.pid, f.tid), (addr(P2_UP.0), P2, 31));
    assert!(
        lab.proxy_answered().is_empty(),
        "counted once, as the seen 503"
    );

    // Plaintext between the sidecars: P2's 503 is seen too, and followed.
    let mut lab = Lab::new(AnalysisConfig::default());
    let d = two_hops(&mut lab);
    status_503(&mut lab, P2_DOWN, 1001, 31);
    status_503(&mut lab, (&d.0, &d.1), 1002, 11);
    lab.tick(5000 * MS);
    assert_eq!(
        lab.verdicts(),
        vec![(d.1.clone(), "idle_timeout", Some(Hop::Far), false)],
        "one request, one 503"
    );
    assert!(lab.proxy_answered().is_empty());
}

#[test]
fn the_apps_own_503_behind_two_hops_is_passthrough_and_a_retried_far_failure_stays_free() {
    let mut lab = Lab::new(AnalysisConfig::default());
    open(&mut lab, 0xa, FRONTEND, Role::Client, (P1, 11), P1_UP);
    open(&mut lab, 0xb, CART, Role::Server, (P2, 30), P2_DOWN);
    open(&mut lab, 0xc, CART, Role::Client, (P2, 31), P2_UP);
    open(&mut lab, 0xe, CART, Role::Client, (P2, 31), UNRELATED);
    app_accepts(&mut lab);
    let d = p1_downstream(&mut lab, 1);
    // P2 retried this one successfully; later the app answers 503 itself,
    // P2 passes it on over mTLS (unseen), P1 to the caller.
    stale_failure(&mut lab, 0xe, CART, (P2, 31), UNRELATED, 1000);
    status_503(&mut lab, APP_DOWN, 1100, APP);
    status_503(&mut lab, (&d.0, &d.1), 1102, 11);
    lab.tick(5000 * MS);
    assert_eq!(
        lab.verdicts(),
        vec![(d.1.clone(), "unattributed", None, true)]
    );
    assert_eq!(
        lab.proxy_answered().len(),
        1,
        "the retried failure stays free"
    );
}

#[test]
fn a_far_hop_failure_no_503_here_took_is_a_503_its_proxy_answered() {
    let mut lab = Lab::new(AnalysisConfig::default());
    two_hops(&mut lab);
    // The caller is on another node: no 503 seen.
    lab.tick(2500 * MS);
    assert!(lab.proxy_answered().is_empty(), "a 503 could still take it");
    lab.tick(3100 * MS);
    let answered = lab.proxy_answered();
    assert_eq!(answered.len(), 1);
    let f = answered[0];
    assert_eq!((f.namespace.as_str(), f.pod.as_str()), ("lab", "cart"));
    assert_eq!(
        (f.cause, f.pid, f.local),
        (Cause::IdleTimeout, P2, addr(P2_UP.0))
    );
    assert!(lab.http_503s().is_empty());
}

#[test]
fn a_503_of_an_unknown_process_is_never_attributed() {
    let mut lab = Lab::new(AnalysisConfig::default());
    open(&mut lab, 0xa, FRONTEND, Role::Client, (P1, 11), P1_UP);
    open(
        &mut lab,
        0xd,
        FRONTEND,
        Role::Server,
        (0, 0),
        ("10.0.0.1:15001", "10.0.0.1:5001"),
    );
    stale_failure(&mut lab, 0xa, FRONTEND, (P1, 11), P1_UP, 1000);
    status_503(&mut lab, ("10.0.0.1:15001", "10.0.0.1:5001"), 1001, 0);
    lab.tick(4000 * MS);
    // Its process unknown (pid 0): it matches nothing.
    assert!(lab.http_503s().iter().all(|h| h.cause.is_none()));
    assert_eq!(lab.proxy_answered().len(), 1);
}

#[test]
fn times_at_the_end_of_the_clock_settle_without_overflow() {
    // Kernel records are untrusted input: a timestamp a second before the
    // u64 clock wraps must not overflow the window arithmetic (found by the
    // kernel_records fuzz target).
    let end_ms = u64::MAX / MS - 100;
    let mut lab = Lab::new(AnalysisConfig::default());
    open(&mut lab, 0xa, FRONTEND, Role::Client, (P1, 11), P1_UP);
    let down = p1_downstream(&mut lab, 1);
    stale_failure(&mut lab, 0xa, FRONTEND, (P1, 11), P1_UP, end_ms);
    status_503(&mut lab, (&down.0, &down.1), end_ms, 11);
    lab.tick(u64::MAX);
    assert_eq!(
        lab.verdicts().len(),
        1,
        "the 503 is decided at the clock's end"
    );
}
