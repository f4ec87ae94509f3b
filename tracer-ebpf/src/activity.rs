//! Per-socket activity on the data path: one hash lookup and a few stores per
//! send or receive, and an event only for a reuse after a long idle gap.
//! Sources: the `sock_send_length`/`sock_recv_length` tracepoints (6.3+;
//! BTF or classic) here, or packets (`packet_activity`) on older kernels.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};
use tracer_common::{
    config::MsgLengthLayout,
    event::{EventKind, SockState, flags},
    proto::TLS_ALERT_MAX_RECORD,
    tcp::{IPPROTO_TCP, MSG_PEEK},
};

use crate::{
    config,
    emit::{self, Detail},
    kernel,
    maps::SOCKS,
    record,
};

/// `sock:sock_send_length`: `len` bytes (or an error) sent on `sk`. Called
/// with the BTF tracepoint's own arguments, or with the classic record's.
#[inline(always)]
pub fn on_send(sk: u64, len: i32) {
    if len <= 0 {
        return;
    }
    let Some(st) = tracked(sk) else { return };
    st.stats.io_tid = bpf_get_current_pid_tgid() as u32;
    record_send(sk, st, len as u64, unsafe { bpf_ktime_get_ns() });
}

/// `sock:sock_recv_length`: `len` bytes (or an error) received; peeks are not reads.
#[inline(always)]
pub fn on_recv(sk: u64, len: i32, msg_flags: i32) {
    if len <= 0 || msg_flags & MSG_PEEK != 0 {
        return;
    }
    let Some(st) = tracked(sk) else { return };
    st.stats.io_tid = bpf_get_current_pid_tgid() as u32;
    record_recv(st, len as u64, unsafe { bpf_ktime_get_ns() });
}

/// The classic `sock_send_length` tracepoint.
pub fn on_send_record(ctx: &TracePointContext) {
    if let Some((sk, len, _)) = message(ctx, &config::send_length()) {
        on_send(sk, len);
    }
}

/// The classic `sock_recv_length` tracepoint.
pub fn on_recv_record(ctx: &TracePointContext) {
    if let Some((sk, len, msg_flags)) = message(ctx, &config::recv_length()) {
        on_recv(sk, len, msg_flags);
    }
}

/// `len` bytes left the socket `sk`: a message (tracepoints) or a packet
/// (the cgroup_skb fallback). On h2c the frames say whether it is a request
/// (`proto` counts it); on TLS an alert-sized record is not one.
#[inline(always)]
pub fn record_send(sk: u64, st: &mut SockState, len: u64, now: u64) {
    st.stats.tx_bytes += len;
    st.stats.tx_msgs += 1;
    let proto = st.stats.flags & (flags::H2C | flags::TLS);
    if proto == flags::H2C || (proto == flags::TLS && len <= TLS_ALERT_MAX_RECORD) {
        return;
    }
    record_write(sk, st, now);
}

/// A write that may be a request: a new one if it is the first or follows
/// a receive; reuse after a long idle gap is reported.
#[inline(always)]
pub fn record_write(sk: u64, st: &mut SockState, now: u64) {
    let stats = &mut st.stats;
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

/// A classic record's socket, length and flags, if it is a TCP message (most
/// messages on a node are not: that check comes first).
#[inline(always)]
fn message(ctx: &TracePointContext, layout: &MsgLengthLayout) -> Option<(u64, i32, i32)> {
    if record::uint(ctx, layout.protocol) != IPPROTO_TCP as u32 {
        return None;
    }
    let len = record::int(ctx, layout.ret);
    if len <= 0 {
        return None;
    }
    Some((
        record::pointer(ctx, layout.sk),
        len,
        record::int(ctx, layout.flags),
    ))
}

/// The socket's entry, if it is tracked (only TCP sockets are).
#[inline(always)]
fn tracked(sk: u64) -> Option<&'static mut SockState> {
    let st = SOCKS.get_ptr_mut(&sk)?;
    // SAFETY: map value pointer, valid for this run.
    let st = unsafe { &mut *st };
    // Accepted before its listener was seen: the first I/O runs in the owner's context.
    if st.owner.tgid == 0 {
        kernel::current_owner(&mut st.owner);
    }
    Some(st)
}
