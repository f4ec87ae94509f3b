//! Per-socket activity on the data path: one hash lookup and a few stores per
//! send or receive, and an event only for a reuse after a long idle gap.

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
    let now = unsafe { bpf_ktime_get_ns() };
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

pub fn on_recv(ctx: &TracePointContext) {
    let Some((_, len, st)) = tracked(ctx, &config::recv_length(), true) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
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
