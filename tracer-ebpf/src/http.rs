//! The HTTP status peek: a cgroup_skb egress program on the cgroup v2 root,
//! which sees every socket's packets in every network namespace. It reads
//! the first 12 payload bytes of a TCP segment and reports only a status line
//! `HTTP/1.x 503`; nothing else of the payload is copied. Everything else
//! costs a few loads and returns.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::SkBuffContext};
use tracer_common::{
    event::EventKind,
    http::{STATUS_LINE_PREFIX, status_code},
    tcp::AF_INET,
};

use crate::{
    emit::{self, Detail},
    maps::{SOCKS, scratch, sock_key},
    packet,
};

/// A TCP segment whose payload starts with `head`.
#[inline(always)]
pub fn on_egress(ctx: &SkBuffContext, family: u16, head: &[u8; STATUS_LINE_PREFIX]) {
    if status_code(head) == Some(503) {
        report(ctx, family, 503);
    }
}

/// Addresses and ports come from the socket, as its connection's tuple has
/// them: with iptables REDIRECT the packet's source is the original
/// destination (de-NATed before this hook), the socket's is the proxy's
/// port. The socket keeps IPv4 addresses for an IPv4 peer of an AF_INET6
/// socket too, so the packet's own version says which pair to read.
#[inline(always)]
fn report(ctx: &SkBuffContext, family: u16, status: u32) {
    let Some(st) = scratch() else { return };
    st.tuple.family = family;
    st.tuple.sport = ctx.skb.local_port() as u16;
    // `remote_port` is network order, and on little-endian kernels sits in the
    // upper half of the u32 (the kernel shifts it there); accept either half.
    let remote = ctx.skb.remote_port();
    let remote = if remote > 0xffff {
        remote >> 16
    } else {
        remote
    };
    st.tuple.dport = u16::from_be(remote as u16);
    if family == AF_INET {
        st.tuple.saddr[..4].copy_from_slice(&ctx.skb.local_ipv4().to_ne_bytes());
        st.tuple.daddr[..4].copy_from_slice(&ctx.skb.remote_ipv4().to_ne_bytes());
    } else {
        copy_ipv6(ctx.skb.local_ipv6(), &mut st.tuple.saddr);
        copy_ipv6(ctx.skb.remote_ipv6(), &mut st.tuple.daddr);
    }
    st.owner.uid = ctx.get_socket_uid();
    // The worker thread that handles the connection (attribution pairs the
    // 503 with that thread's upstream failures). Only for 503s: one lookup.
    if let Some(sk) = packet::full_sock(ctx)
        // SAFETY: the value is copied out at once.
        && let Some(tracked) = unsafe { SOCKS.get(&sock_key(sk)) }
    {
        st.stats.io_tid = tracked.stats.io_tid;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    emit::event(
        EventKind::HttpStatus,
        0,
        now,
        st,
        Detail {
            http_status: status,
            ..Detail::NONE
        },
    );
}

#[inline(always)]
fn copy_ipv6(words: &[u32; 4], out: &mut [u8; 16]) {
    for (i, word) in words.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
}
