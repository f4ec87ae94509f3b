//! The IP and transport headers of a cgroup_skb packet, which starts at the
//! IP header (IPv6 extension headers are not followed).
//!
//! Headers sit in the skb's linear part and are read in place (direct packet
//! access, no helper call); payload on egress lives in page fragments, where
//! `read` falls back to `bpf_skb_load_bytes`.

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
    let version_ihl = read::<u8>(ctx, 0)?;
    match version_ihl >> 4 {
        4 => Some((
            AF_INET,
            (version_ihl & 0x0f) as usize * 4,
            read::<u8>(ctx, 9)?,
        )),
        6 => Some((AF_INET6, 40, read::<u8>(ctx, 6)?)),
        _ => None,
    }
}

/// Offset of a TCP segment's payload, given its header's offset.
#[inline(always)]
pub fn tcp_payload(ctx: &SkBuffContext, l4: usize) -> Option<usize> {
    let data_offset = read::<u8>(ctx, l4 + 12)?;
    Some(l4 + (data_offset >> 4) as usize * 4)
}

/// Whether a TCP segment whose payload starts at `payload` carries any (not
/// a bare ACK, SYN or FIN).
#[inline(always)]
pub fn has_payload(ctx: &SkBuffContext, payload: usize) -> bool {
    ctx.len() as usize > payload
}

/// `T` at `offset` from the IP header: in place when the linear part holds
/// it, else copied by `bpf_skb_load_bytes` (`None` past the packet's end).
/// `offset` must be bounded (header arithmetic), for the verifier.
#[inline(always)]
pub fn read<T: Copy>(ctx: &SkBuffContext, offset: usize) -> Option<T> {
    // SAFETY: reading the context's `data`/`data_end` fields, rewritten by
    // the verifier into the packet's bounds.
    let (start, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    let at = start + offset;
    // The size goes through memory so that LLVM cannot turn `at + 1 <= end`
    // into `at < end`, a comparison from which the verifier learns no range.
    let size = core::mem::size_of::<T>();
    // SAFETY: reading a local.
    let size = unsafe { core::ptr::read_volatile(&size) };
    if at + size <= end {
        // SAFETY: `at..at + size_of::<T>()` lies inside the linear part,
        // checked against `data_end` just above.
        Some(unsafe { (at as *const T).read_unaligned() })
    } else {
        ctx.load::<T>(offset).ok()
    }
}

/// Source and destination addresses from the IP header, IPv4 in the first
/// four bytes (the layout of `Tuple`).
#[inline(always)]
pub fn addresses(ctx: &SkBuffContext, family: u16) -> Option<([u8; 16], [u8; 16])> {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if family == AF_INET {
        src[..4].copy_from_slice(&read::<[u8; 4]>(ctx, 12)?);
        dst[..4].copy_from_slice(&read::<[u8; 4]>(ctx, 16)?);
    } else {
        src = read::<[u8; 16]>(ctx, 8)?;
        dst = read::<[u8; 16]>(ctx, 24)?;
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
