//! The HTTP status peek: a cgroup_skb egress program on the cgroup v2 root,
//! which sees every socket's packets in every network namespace. It reads
//! the first 12 payload bytes of a TCP segment and reports only a status line
//! `HTTP/1.x 503`; nothing else of the payload is copied. Everything else
//! costs a few loads and returns.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::SkBuffContext};
use tracer_common::event::EventKind;

use crate::{
    emit::{self, Detail},
    maps::scratch,
    packet,
};

/// Status lines look like `HTTP/1.1 503 Service Unavailable`.
const STATUS_LINE_PREFIX: usize = 12;

/// A TCP segment at transport offset `l4`.
#[inline(always)]
pub fn on_egress(ctx: &SkBuffContext, family: u16, l4: usize) {
    let Some(payload) = packet::tcp_payload(ctx, l4) else {
        return;
    };
    if (ctx.len() as usize) < payload + STATUS_LINE_PREFIX {
        return;
    }
    let Ok(head) = ctx.load::<[u8; STATUS_LINE_PREFIX]>(payload) else {
        return;
    };
    if &head[..7] != b"HTTP/1." || head[8] != b' ' {
        return;
    }
    let status = digit(head[9]) * 100 + digit(head[10]) * 10 + digit(head[11]);
    if status != 503 {
        return;
    }
    report(ctx, family, l4, status);
}

#[inline(always)]
fn digit(b: u8) -> u32 {
    b.wrapping_sub(b'0') as u32
}

/// Addresses and ports come from the packet's own headers, so an IPv4
/// response on an AF_INET6 socket keeps its IPv4 addresses.
#[inline(always)]
fn report(ctx: &SkBuffContext, family: u16, l4: usize, status: u32) {
    let Some((src, dst)) = packet::addresses(ctx, family) else {
        return;
    };
    let Ok(ports) = ctx.load::<[u8; 4]>(l4) else {
        return;
    };
    let Some(st) = scratch() else { return };
    st.tuple.family = family;
    st.tuple.saddr = src;
    st.tuple.daddr = dst;
    st.tuple.sport = u16::from_be_bytes([ports[0], ports[1]]);
    st.tuple.dport = u16::from_be_bytes([ports[2], ports[3]]);
    st.owner.uid = ctx.get_socket_uid();
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
