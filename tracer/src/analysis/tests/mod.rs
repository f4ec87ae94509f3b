//! The analysis stages together, fed synthetic event sequences through the
//! real connection table, with the time given explicitly: how facts are
//! gathered and causes decided (`causes`), and how 503s are joined and
//! findings merged (`reports`). This file is the harness they share.

mod attribution;
mod causes;
mod reports;

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
