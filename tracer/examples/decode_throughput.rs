//! Userspace cost per event: synthetic kernel records (a connection's
//! connect, a reuse and its close) through the same pipeline the daemon runs
//! (decode → connection table → analysis) and into the daemon's metrics, on
//! one core. Used by `cargo xtask bench`; prints `events_per_second N`.

use std::time::Instant;

use tracer::{
    analysis::{AnalysisConfig, Observation},
    kernel::reset_reasons::ResetReasons,
    metadata::{NetnsNames, Pods},
    output::metrics::Metrics,
    pipeline::Pipeline,
};
use tracer_common::{
    event::{ConnEvent, EventKind, Role, flags},
    tcp::AF_INET,
};

fn record(kind: EventKind, sock: u64, i: u64) -> ConnEvent {
    let mut ev = ConnEvent {
        kind: kind as u8,
        ts_ns: 1_000_000 + i * 1000,
        sock,
        ..Default::default()
    };
    let st = &mut ev.state;
    st.netns = 4026532000 + (i % 8) as u32;
    st.role = Role::Client as u8;
    st.tuple.family = AF_INET;
    st.tuple.sport = 10_000 + (i % 50_000) as u16;
    st.tuple.dport = 8080;
    st.tuple.saddr[..4].copy_from_slice(&[10, 1, (i % 8) as u8, 10]);
    st.tuple.daddr[..4].copy_from_slice(&[10, 1, 9, 20]);
    st.owner.tgid = 1000;
    st.owner.comm = *b"bench\0\0\0\0\0\0\0\0\0\0\0";
    st.stats.start_ns = ev.ts_ns;
    st.stats.established_ns = ev.ts_ns + 10;
    st.stats.flags = flags::ESTABLISHED;
    if kind == EventKind::Reuse {
        st.stats.last_reuse_idle_ns = 600_000_000;
        st.stats.requests = 2;
    }
    if kind == EventKind::Close {
        st.stats.flags |= flags::FIN_OUT | flags::CLOSED;
        st.stats.fin_out_ns = ev.ts_ns + 100;
        st.stats.closed_ns = ev.ts_ns + 200;
        st.stats.last_send_ns = ev.ts_ns + 50;
        st.stats.last_recv_ns = ev.ts_ns + 60;
    }
    ev
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
    let kinds = [EventKind::Connect, EventKind::Reuse, EventKind::Close];
    let records: Vec<ConnEvent> = (0..n)
        .map(|i| {
            record(
                kinds[(i % 3) as usize],
                0xffff_8880_0000_0000 + (i / 3) * 64,
                i,
            )
        })
        .collect();
    let mut observations: Vec<Observation> = Vec::new();
    let started = Instant::now();
    for (i, raw) in records.iter().enumerate() {
        pipeline.process(raw, raw.ts_ns, &mut observations, None);
        if i % 4096 == 0 {
            pipeline.tick(raw.ts_ns, &mut observations);
            for observation in observations.drain(..) {
                metrics.observe(&observation);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("events_per_second {:.0}", n as f64 / secs);
}
