//! The IP and transport headers of a cgroup_skb packet, which starts at the
//! IP header (IPv6 extension headers are not followed).

use aya_ebpf::{bindings::bpf_sock, helpers::generated::bpf_sk_fullsock, programs::SkBuffContext};
use tracer_common::tcp::{AF_INET, AF_INET6};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// TCP header flag bits (byte 13).
pub const TCP_RST: u8 = 0x04;

/// Address family, offset of the transport header, and its protocol. The
/// version comes from the packet itself, not the socket: an AF_INET6 socket
/// (a `[::]` listener) carries IPv4 packets too.
#[inline(always)]
pub fn transport(ctx: &SkBuffContext) -> Option<(u16, usize, u8)> {
    let version_ihl = ctx.load::<u8>(0).ok()?;
    match version_ihl >> 4 {
        4 => Some((
            AF_INET,
            (version_ihl & 0x0f) as usize * 4,
            ctx.load::<u8>(9).ok()?,
        )),
        6 => Some((AF_INET6, 40, ctx.load::<u8>(6).ok()?)),
        _ => None,
    }
}

/// Offset of a TCP segment's payload, given its header's offset.
#[inline(always)]
pub fn tcp_payload(ctx: &SkBuffContext, l4: usize) -> Option<usize> {
    let data_offset = ctx.load::<u8>(l4 + 12).ok()?;
    Some(l4 + (data_offset >> 4) as usize * 4)
}

/// Source and destination addresses from the IP header, IPv4 in the first
/// four bytes (the layout of `Tuple`).
#[inline(always)]
pub fn addresses(ctx: &SkBuffContext, family: u16) -> Option<([u8; 16], [u8; 16])> {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if family == AF_INET {
        src[..4].copy_from_slice(&ctx.load::<[u8; 4]>(12).ok()?);
        dst[..4].copy_from_slice(&ctx.load::<[u8; 4]>(16).ok()?);
    } else {
        src = ctx.load::<[u8; 16]>(8).ok()?;
        dst = ctx.load::<[u8; 16]>(24).ok()?;
    }
    Some((src, dst))
}

/// The packet's socket as a full socket, or `None` (request and timewait
/// sockets, or no socket).
#[inline(always)]
pub fn full_sock(ctx: &SkBuffContext) -> Option<*mut bpf_sock> {
    // SAFETY: reading the context's `sk` field, rewritten by the verifier.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: helper taking the context's socket pointer.
    let full = unsafe { bpf_sk_fullsock(sk) };
    (!full.is_null()).then_some(full)
}
