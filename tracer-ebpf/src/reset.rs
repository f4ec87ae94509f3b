//! Resets either way. A reset is a failure edge, so it is reported at once.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext};
use tracer_common::{
    config::{TupleLayout, features::RST_PACKETS},
    event::{EventKind, ResetSide, SockState, flags},
};

use crate::{
    config,
    emit::{self, Detail},
    kernel, lifecycle,
    maps::{LAST_TRACED_RST, SOCKS, scratch},
    record,
};

pub fn on_receive_reset(ctx: &TracePointContext) {
    let layout = config::receive_reset();
    let sk = record::pointer(ctx, layout.skaddr);
    if sk == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let tcp_state = kernel::sock_state(sk);
    let detail = Detail {
        tcp_state,
        reset_side: ResetSide::Received as u8,
        ..Detail::NONE
    };
    if let Some(st) = SOCKS.get_ptr_mut(&sk) {
        // SAFETY: map value pointer, valid for this run.
        let st = unsafe { &mut *st };
        // A reset with no FIN before it is the peer's way of closing.
        if st.stats.flags & (flags::RST_IN | flags::FIN_IN) == 0 {
            st.stats.peer_close_idle_ns = lifecycle::idle_since_activity(&st.stats, now);
        }
        st.stats.flags |= flags::RST_IN;
        // A connect refused before its port was traced: take the tuple from the record.
        if st.tuple.sport == 0 {
            record::tuple(ctx, &layout.tuple, &mut st.tuple);
        }
        first_reset(st, now, tcp_state);
        emit::event(EventKind::Reset, sk, now, st, detail);
    } else if let Some(st) = scratch() {
        st.netns = kernel::sock_netns(sk);
        record::tuple(ctx, &layout.tuple, &mut st.tuple);
        emit::event(EventKind::Reset, sk, now, st, detail);
    }
}

pub fn on_send_reset(ctx: &TracePointContext) {
    let layout = config::send_reset();
    let sk = record::pointer(ctx, layout.skaddr);
    let now = unsafe { bpf_ktime_get_ns() };
    let tcp_state = record::uint(ctx, layout.state);
    let reset_reason = layout
        .reason
        .is_present()
        .then(|| record::uint(ctx, layout.reason));
    let detail = Detail {
        tcp_state,
        reset_side: ResetSide::Sent as u8,
        reset_reason,
        ..Detail::NONE
    };
    if config::features() & RST_PACKETS != 0 {
        // Resets without a socket are reported by the packet path; tell it
        // which one this is when there is a socket.
        if sk == 0 {
            return;
        }
        remember_traced(ctx, &layout.tuple, now);
    }

    if sk != 0
        && let Some(st) = SOCKS.get_ptr_mut(&sk)
    {
        // SAFETY: map value pointer, valid for this run.
        let st = unsafe { &mut *st };
        if st.stats.flags & flags::RST_OUT == 0 {
            st.stats.flags |= flags::RST_OUT;
            if let Some(reason) = reset_reason {
                st.stats.flags |= flags::RST_REASON;
                st.stats.rst_reason = reason;
            }
        }
        first_reset(st, now, tcp_state);
        emit::event(EventKind::Reset, sk, now, st, detail);
        return;
    }
    // No tracked socket: typically the answer to a SYN for a port nobody
    // listens on (NO_SOCKET). Its namespace is the receiving device's.
    let Some(st) = scratch() else { return };
    st.netns = if sk != 0 {
        kernel::sock_netns(sk)
    } else {
        kernel::skb_netns(record::pointer(ctx, layout.skbaddr))
    };
    record::tuple(ctx, &layout.tuple, &mut st.tuple);
    emit::event(EventKind::Reset, sk, now, st, detail);
}

#[inline(always)]
fn remember_traced(ctx: &TracePointContext, layout: &TupleLayout, now: u64) {
    let Some(slot) = LAST_TRACED_RST.get_ptr_mut(0) else {
        return;
    };
    let Some(st) = scratch() else { return };
    record::tuple(ctx, layout, &mut st.tuple);
    // SAFETY: per-CPU slot, no other writer on this CPU while we run.
    unsafe {
        (*slot).sport = st.tuple.sport;
        (*slot).dport = st.tuple.dport;
        (*slot).ts_ns = now;
    }
}

#[inline(always)]
fn first_reset(st: &mut SockState, now: u64, tcp_state: u32) {
    if st.stats.rst_ns == 0 {
        st.stats.rst_ns = now;
        st.stats.rst_state = tcp_state;
    }
}
