//! TCP state changes and socket destruction: creating, updating and
//! retiring `SOCKS` entries, and reporting the lifecycle edges. The logic is
//! written once over a [`Source`]: a BTF tracepoint (arguments straight from
//! the context, the tuple read from the socket) or a classic one (every field
//! copied out of the record).

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext};
use tracer_common::{
    config::TupleLayout,
    counters::Counter,
    event::{ConnStats, EventKind, ListenerKey, Role, SockState, Tuple, flags},
    tcp::*,
};

use crate::{
    config,
    emit::{self, Detail},
    kernel,
    maps::{LISTENERS, SOCKS, bump, scratch},
    record,
};

/// Where a lifecycle program reads what its arguments do not carry.
pub trait Source {
    /// The socket's addresses and ports.
    fn tuple(&self, sk: u64, out: &mut Tuple);
    /// The socket is TCP (checked only where a socket starts being tracked).
    fn is_tcp(&self, sk: u64) -> bool;
    /// The peer's port (0: a listener or a never-connected socket).
    fn peer_port(&self, sk: u64) -> u16;
}

/// A BTF tracepoint: the socket itself, read at BTF offsets.
pub struct FromSock;

impl Source for FromSock {
    #[inline(always)]
    fn tuple(&self, sk: u64, out: &mut Tuple) {
        kernel::sock_tuple(sk, out);
    }

    #[inline(always)]
    fn is_tcp(&self, sk: u64) -> bool {
        kernel::sock_protocol(sk) == IPPROTO_TCP as u32
    }

    #[inline(always)]
    fn peer_port(&self, sk: u64) -> u16 {
        kernel::sock_dport(sk)
    }
}

/// A classic tracepoint's record, at the offsets its format file gives.
pub struct FromRecord<'a> {
    pub ctx: &'a TracePointContext,
    pub layout: TupleLayout,
}

impl Source for FromRecord<'_> {
    #[inline(always)]
    fn tuple(&self, _sk: u64, out: &mut Tuple) {
        record::tuple(self.ctx, &self.layout, out);
    }

    /// The record's protocol was checked on entry.
    #[inline(always)]
    fn is_tcp(&self, _sk: u64) -> bool {
        true
    }

    #[inline(always)]
    fn peer_port(&self, _sk: u64) -> u16 {
        record::uint(self.ctx, self.layout.dport) as u16
    }
}

/// `sock:inet_sock_set_state` as a classic tracepoint.
pub fn on_state_record(ctx: &TracePointContext) {
    let layout = config::state_change();
    if record::uint(ctx, layout.protocol) != IPPROTO_TCP as u32 {
        return;
    }
    let sk = record::pointer(ctx, layout.skaddr);
    let old = record::uint(ctx, layout.oldstate);
    let new = record::uint(ctx, layout.newstate);
    let source = FromRecord {
        ctx,
        layout: layout.tuple,
    };
    on_state_change(&source, sk, old, new);
}

#[inline(always)]
pub fn on_state_change<S: Source>(source: &S, sk: u64, old: u32, new: u32) {
    if sk == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => track_new(source, sk, now, Role::Client),
        (TCP_LISTEN, TCP_SYN_RECV) => track_new(source, sk, now, Role::Server),
        (TCP_CLOSE, TCP_LISTEN) => listener(source, sk, now, EventKind::Listen),
        (TCP_LISTEN, TCP_CLOSE) => listener(source, sk, now, EventKind::ListenClose),
        _ => update(source, sk, now, new),
    }
}

/// A connection starts: `connect()` (process context: the caller owns it) or
/// a SYN answered on a listener (softirq: the listener's owner is inherited).
#[inline(always)]
fn track_new<S: Source>(source: &S, sk: u64, now: u64, role: Role) {
    if !source.is_tcp(sk) {
        return;
    }
    let Some(st) = scratch() else { return };
    st.netns = kernel::sock_netns(sk);
    st.role = role as u8;
    source.tuple(sk, &mut st.tuple);
    st.stats.start_ns = now;
    if role == Role::Client {
        kernel::current_owner(&mut st.owner);
    } else {
        let key = ListenerKey {
            netns: st.netns,
            port: st.tuple.sport,
            _pad: 0,
        };
        // SAFETY: the value is copied out at once.
        if let Some(owner) = unsafe { LISTENERS.get(&key) } {
            st.owner = *owner;
        }
    }
    if SOCKS.insert(&sk, &*st, 0).is_err() {
        bump(Counter::SockMapFull);
    }
}

#[inline(always)]
fn listener<S: Source>(source: &S, sk: u64, now: u64, kind: EventKind) {
    if !source.is_tcp(sk) {
        return;
    }
    let Some(st) = scratch() else { return };
    st.netns = kernel::sock_netns(sk);
    st.role = Role::Listener as u8;
    source.tuple(sk, &mut st.tuple);
    let key = ListenerKey {
        netns: st.netns,
        port: st.tuple.sport,
        _pad: 0,
    };
    if kind == EventKind::Listen {
        kernel::current_owner(&mut st.owner);
        if LISTENERS.insert(&key, &st.owner, 0).is_err() {
            bump(Counter::ListenerMapFull);
        }
    } else {
        // SAFETY: the value is copied out at once.
        if let Some(owner) = unsafe { LISTENERS.get(&key) } {
            st.owner = *owner;
        }
        let _ = LISTENERS.remove(&key);
    }
    emit::event(kind, sk, now, st, Detail::NONE);
}

#[inline(always)]
fn update<S: Source>(source: &S, sk: u64, now: u64, new: u32) {
    let Some(st) = SOCKS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: map value pointer, valid for this run.
    let st = unsafe { &mut *st };
    let stats = &mut st.stats;
    match new {
        TCP_ESTABLISHED => {
            stats.established_ns = now;
            stats.flags |= flags::ESTABLISHED;
            // The client's port is assigned after SYN_SENT is traced: read the final tuple now.
            source.tuple(sk, &mut st.tuple);
            let kind = if st.role == Role::Client as u8 {
                EventKind::Connect
            } else {
                EventKind::Accept
            };
            emit::event(
                kind,
                sk,
                now,
                st,
                Detail {
                    tcp_state: new,
                    ..Detail::NONE
                },
            );
        }
        TCP_FIN_WAIT1 | TCP_LAST_ACK => {
            set_once(&mut stats.fin_out_ns, &mut stats.flags, flags::FIN_OUT, now)
        }
        TCP_CLOSE_WAIT | TCP_CLOSING | TCP_TIME_WAIT => peer_fin(stats, now),
        TCP_CLOSE => {
            // FIN_WAIT2 -> CLOSE is not evidence of a peer FIN: an orphaned socket hands
            // over to a timewait socket either way. We closed first, so it does not matter.
            stats.closed_ns = now;
            stats.flags |= flags::CLOSED;
            stats.sk_err = kernel::sock_err(sk);
            if st.tuple.sport == 0 {
                source.tuple(sk, &mut st.tuple);
            }
        }
        _ => {}
    }
}

/// The peer's first FIN: remember when, and how long the connection had been idle.
#[inline(always)]
fn peer_fin(stats: &mut ConnStats, now: u64) {
    if stats.flags & flags::FIN_IN == 0 {
        stats.peer_close_idle_ns = idle_since_activity(stats, now);
    }
    set_once(&mut stats.fin_in_ns, &mut stats.flags, flags::FIN_IN, now);
}

/// Time since the last send or receive (or since established, if none).
#[inline(always)]
pub fn idle_since_activity(stats: &ConnStats, now: u64) -> u64 {
    let mut last = stats.established_ns;
    if stats.last_send_ns > last {
        last = stats.last_send_ns;
    }
    if stats.last_recv_ns > last {
        last = stats.last_recv_ns;
    }
    if last == 0 || now < last {
        0
    } else {
        now - last
    }
}

#[inline(always)]
fn set_once(ts: &mut u64, bits: &mut u32, flag: u32, now: u64) {
    if *bits & flag == 0 {
        *bits |= flag;
        *ts = now;
    }
}

/// `tcp:tcp_destroy_sock` as a classic tracepoint.
pub fn on_destroy_record(ctx: &TracePointContext) {
    let layout = config::destroy_sock();
    let sk = record::pointer(ctx, layout.skaddr);
    let source = FromRecord {
        ctx,
        layout: layout.tuple,
    };
    on_destroy(&source, sk);
}

/// `tcp:tcp_destroy_sock`: report the whole connection and forget it.
#[inline(always)]
pub fn on_destroy<S: Source>(source: &S, sk: u64) {
    if sk == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    match SOCKS.get_ptr(&sk) {
        Some(st) => {
            // SAFETY: map value pointer, valid for this run.
            let st: &SockState = unsafe { &*st };
            emit::event(
                EventKind::Close,
                sk,
                now,
                st,
                Detail {
                    tcp_state: TCP_CLOSE,
                    ..Detail::NONE
                },
            );
            let _ = SOCKS.remove(&sk);
        }
        None => {
            // Listeners and never-connected sockets have no peer port.
            if source.peer_port(sk) != 0 {
                bump(Counter::UntrackedClose);
            }
        }
    }
}
