//! Userspace cost per event: synthetic kernel records through the same
//! pipeline the daemon runs (decode → connection table → analysis) and into
//! the daemon's metrics, on one core. Used by `cargo xtask bench`; prints
//! `events_per_second N`, then which observations reached the metrics.
//!
//! Each round is a client connection (connect, a reuse after idling, a local
//! close) and a server one (accept, closed by its idle peer); one round in
//! 32 ends both in resets instead (received with a request in flight: a
//! failure, decided after the settle time; sent, with the kernel's reason).
//! So every lifecycle observation is fed: opened (both roles), reuse,
//! closed (lifetime, and the peer's idle close), reset (both sides), failure.

use std::time::Instant;

use tracer::{
    analysis::{AnalysisConfig, Observation},
    kernel::reset_reasons::ResetReasons,
    metadata::{NetnsNames, Pods},
    output::metrics::Metrics,
    pipeline::Pipeline,
};
use tracer_common::{
    event::{ConnEvent, EventKind, REASON_REPORTED, ResetSide, Role, flags},
    tcp::AF_INET,
};

/// One round in this many ends in resets.
const RESET_EVERY: u64 = 32;

/// A record of `kind` for socket `sock` of round `round`, at `ts_ns`.
fn record(kind: EventKind, role: Role, sock: u64, round: u64, ts_ns: u64) -> ConnEvent {
    let mut ev = ConnEvent {
        kind: kind as u8,
        ts_ns,
        sock,
        ..Default::default()
    };
    let st = &mut ev.state;
    st.netns = 4026532000 + (round % 8) as u32;
    st.role = role as u8;
    st.tuple.family = AF_INET;
    let ephemeral = 10_000 + (round % 50_000) as u16;
    let (local_port, remote_port) = match role {
        Role::Server => (8080, ephemeral),
        _ => (ephemeral, 8080),
    };
    st.tuple.sport = local_port;
    st.tuple.dport = remote_port;
    st.tuple.saddr[..4].copy_from_slice(&[10, 1, (round % 8) as u8, 10]);
    st.tuple.daddr[..4].copy_from_slice(&[10, 1, 9, 20]);
    st.owner.tgid = 1000;
    st.owner.comm = *b"bench\0\0\0\0\0\0\0\0\0\0\0";
    let start = ts_ns.saturating_sub(1_000_000);
    st.stats.start_ns = start;
    st.stats.established_ns = start + 10;
    st.stats.flags = flags::ESTABLISHED;
    st.stats.requests = 1;
    st.stats.last_send_ns = start + 20;
    st.stats.last_recv_ns = start + 30;
    ev
}

/// The records of round `round`, from `ts_ns` on (1 µs apart).
fn round(round: u64, ts_ns: u64, out: &mut Vec<ConnEvent>) {
    let client = 0xffff_8880_0000_0000 + round * 128;
    let server = client + 64;
    let resets = round % RESET_EVERY == RESET_EVERY - 1;
    let at = |k: u64| ts_ns + k * 1000;
    out.push(record(
        EventKind::Connect,
        Role::Client,
        client,
        round,
        at(0),
    ));
    out.push(record(
        EventKind::Accept,
        Role::Server,
        server,
        round,
        at(1),
    ));
    let mut reuse = record(EventKind::Reuse, Role::Client, client, round, at(2));
    reuse.state.stats.last_reuse_idle_ns = 600_000_000;
    reuse.state.stats.requests = 2;
    out.push(reuse);
    let mut client_close = record(EventKind::Close, Role::Client, client, round, at(4));
    let mut server_close = record(EventKind::Close, Role::Server, server, round, at(5));
    if resets {
        // The server resets the pooled connection the client just sent on.
        let c = &mut client_close.state.stats;
        c.requests = 2;
        c.last_send_ns = at(3);
        c.rst_ns = at(4);
        c.flags |= flags::RST_IN;
        let s = &mut server_close.state.stats;
        s.rst_ns = at(3);
        s.rst_reason = 2;
        s.flags |= flags::RST_OUT | flags::RST_REASON;
        let mut sent = record(EventKind::Reset, Role::Server, server, round, at(3));
        sent.reset_side = ResetSide::Sent as u8;
        sent.has_reason = REASON_REPORTED;
        sent.reset_reason = 2;
        out.push(sent);
        let mut received = record(EventKind::Reset, Role::Client, client, round, at(4));
        received.reset_side = ResetSide::Received as u8;
        out.push(received);
    } else {
        let c = &mut client_close.state.stats;
        c.flags |= flags::FIN_OUT;
        c.fin_out_ns = at(4);
        // The client idled 5 s, then closed: the server's peer closed it idle.
        let s = &mut server_close.state.stats;
        s.flags |= flags::FIN_IN | flags::FIN_OUT;
        s.fin_in_ns = at(4);
        s.fin_out_ns = at(5);
        s.peer_close_idle_ns = 5_000_000_000;
    }
    for close in [&mut client_close, &mut server_close] {
        close.state.stats.flags |= flags::CLOSED;
        close.state.stats.closed_ns = close.ts_ns;
    }
    out.push(client_close);
    out.push(server_close);
}

/// Observations that reached the metrics, by kind.
#[derive(Debug, Default)]
struct Fed {
    opened: u64,
    reuse: u64,
    closed: u64,
    peer_idle_close: u64,
    reset: u64,
    failure: u64,
    other: u64,
}

impl Fed {
    fn count(&mut self, o: &Observation) {
        match o {
            Observation::Opened { .. } => self.opened += 1,
            Observation::Reuse { .. } => self.reuse += 1,
            Observation::Closed {
                peer_idle_close, ..
            } => {
                self.closed += 1;
                self.peer_idle_close += u64::from(peer_idle_close.is_some());
            }
            Observation::Reset { .. } => self.reset += 1,
            Observation::Failure(_) => self.failure += 1,
            _ => self.other += 1,
        }
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let mut pipeline = Pipeline::new(
        AnalysisConfig::default(),
        Pods::new(Box::new(NetnsNames::new())),
        131_072,
        ResetReasons::default(),
    );
    let metrics = Metrics::new("bench", "bench", &[], false);
    let mut records: Vec<ConnEvent> = Vec::with_capacity(n as usize + 8);
    let mut r = 0;
    while (records.len() as u64) < n {
        round(r, 1_000_000_000 + records.len() as u64 * 1000, &mut records);
        r += 1;
    }
    records.truncate(n as usize);
    let mut observations: Vec<Observation> = Vec::new();
    let mut fed = Fed::default();
    let started = Instant::now();
    for (i, raw) in records.iter().enumerate() {
        pipeline.process(raw, raw.ts_ns, &mut observations, None);
        // As the daemon: a drained batch, then what it settled, then the outputs.
        if i % 4096 == 4095 || i + 1 == records.len() {
            pipeline.tick(raw.ts_ns, &mut observations);
            for observation in observations.drain(..) {
                fed.count(&observation);
                metrics.observe(&observation);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("events_per_second {:.0}", n as f64 / secs);
    println!("fed {fed:?}");
}
