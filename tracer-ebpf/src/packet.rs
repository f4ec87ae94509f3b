//! The IP and transport headers of a cgroup_skb packet, which starts at the
//! IP header (IPv6 extension headers are not followed).

use aya_ebpf::programs::SkBuffContext;
use tracer_common::tcp::{AF_INET, AF_INET6};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Address family, offset of the transport header, and its protocol.
#[inline(always)]
pub fn transport(ctx: &SkBuffContext) -> Option<(u16, usize, u8)> {
    let family = ctx.skb.family() as u16;
    if family == AF_INET {
        let version_ihl = ctx.load::<u8>(0).ok()?;
        Some((
            family,
            (version_ihl & 0x0f) as usize * 4,
            ctx.load::<u8>(9).ok()?,
        ))
    } else if family == AF_INET6 {
        Some((family, 40, ctx.load::<u8>(6).ok()?))
    } else {
        None
    }
}

/// Offset of a TCP segment's payload, given its header's offset.
#[inline(always)]
pub fn tcp_payload(ctx: &SkBuffContext, l4: usize) -> Option<usize> {
    let data_offset = ctx.load::<u8>(l4 + 12).ok()?;
    Some(l4 + (data_offset >> 4) as usize * 4)
}
