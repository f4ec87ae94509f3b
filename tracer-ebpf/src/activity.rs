//! Per-socket activity on the data path: one hash lookup and a few stores per
//! send or receive, and an event only for a reuse after a long idle gap.
//! Sources: the `sock_send_length`/`sock_recv_length` tracepoints (6.3+)
//! here, or packets (`packet_activity`) on older kernels.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext};
use tracer_common::{
    config::MsgLengthLayout,
    event::{EventKind, SockState},
    tcp::{IPPROTO_TCP, MSG_PEEK},
};

use crate::{
    config,
    emit::{self, Detail},
    kernel,
    maps::SOCKS,
    record,
};

pub fn on_send(ctx: &TracePointContext) {
    let Some((sk, len, st)) = tracked(ctx, &config::send_length(), false) else {
        return;
    };
    record_send(sk, st, len, unsafe { bpf_ktime_get_ns() });
}

pub fn on_recv(ctx: &TracePointContext) {
    let Some((_, len, st)) = tracked(ctx, &config::recv_length(), true) else {
        return;
    };
    record_recv(st, len, unsafe { bpf_ktime_get_ns() });
}

/// `len` bytes left the socket `sk`: a message (tracepoints) or a packet
/// (the cgroup_skb fallback).
#[inline(always)]
pub fn record_send(sk: u64, st: &mut SockState, len: u64, now: u64) {
    let stats = &mut st.stats;
    // A new request: the first send, or a send after the peer answered.
    let after_receive = stats.last_recv_ns > stats.last_send_ns;
    let reuse_idle = if stats.last_send_ns != 0 && after_receive {
        Some(now - stats.last_recv_ns)
    } else {
        None
    };
    if stats.last_send_ns == 0 || after_receive {
        stats.requests += 1;
    }
    stats.last_send_ns = now;
    stats.tx_bytes += len;
    stats.tx_msgs += 1;
    if let Some(idle) = reuse_idle {
        stats.last_reuse_idle_ns = idle;
        if idle > stats.max_reuse_idle_ns {
            stats.max_reuse_idle_ns = idle;
        }
        if idle >= config::reuse_event_min_idle_ns() {
            emit::event(EventKind::Reuse, sk, now, st, Detail::NONE);
        }
    }
}

/// `len` bytes arrived for the socket.
#[inline(always)]
pub fn record_recv(st: &mut SockState, len: u64, now: u64) {
    st.stats.last_recv_ns = now;
    st.stats.rx_bytes += len;
    st.stats.rx_msgs += 1;
}

/// The socket's entry, if this is a TCP message with data on a tracked socket
/// (and, for receives, not a peek). The cheapest checks come first: most
/// messages on a node are not TCP.
#[inline(always)]
fn tracked(
    ctx: &TracePointContext,
    layout: &MsgLengthLayout,
    skip_peek: bool,
) -> Option<(u64, u64, &'static mut SockState)> {
    if record::uint(ctx, layout.protocol) != IPPROTO_TCP as u32 {
        return None;
    }
    let len = record::int(ctx, layout.ret);
    if len <= 0 {
        return None;
    }
    if skip_peek && record::int(ctx, layout.flags) & MSG_PEEK != 0 {
        return None;
    }
    let sk = record::pointer(ctx, layout.sk);
    let st = SOCKS.get_ptr_mut(&sk)?;
    // SAFETY: map value pointer, valid for this run.
    let st = unsafe { &mut *st };
    // Accepted before its listener was seen: the first I/O runs in the owner's context.
    if st.owner.tgid == 0 {
        kernel::current_owner(&mut st.owner);
    }
    Some((sk, len as u64, st))
}
