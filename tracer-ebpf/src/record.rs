//! Reading tracepoint record fields at offsets known only at load time.

use aya_ebpf::{EbpfContext, helpers::bpf_probe_read_kernel, programs::TracePointContext};
use tracer_common::{
    config::{AddrEncoding, Field, TupleLayout},
    event::Tuple,
    tcp::{AF_INET, AF_INET6},
};

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u16) -> Option<T> {
    let ptr = (ctx.as_ptr() as usize + offset as usize) as *const T;
    // SAFETY: the offset lies inside the record per the kernel's format file.
    unsafe { bpf_probe_read_kernel(ptr) }.ok()
}

/// A pointer-sized field (`skaddr`, `skbaddr`, `sk`); 0 when absent.
#[inline(always)]
pub fn pointer(ctx: &TracePointContext, field: Field) -> u64 {
    if field.size != 8 {
        return 0;
    }
    read::<u64>(ctx, field.offset).unwrap_or(0)
}

/// An unsigned integer field of 1, 2 or 4 bytes; 0 when absent.
#[inline(always)]
pub fn uint(ctx: &TracePointContext, field: Field) -> u32 {
    match field.size {
        1 => read::<u8>(ctx, field.offset).map_or(0, u32::from),
        2 => read::<u16>(ctx, field.offset).map_or(0, u32::from),
        4 => read::<u32>(ctx, field.offset).unwrap_or(0),
        _ => 0,
    }
}

/// A signed `int` field; 0 when absent.
#[inline(always)]
pub fn int(ctx: &TracePointContext, field: Field) -> i32 {
    if field.size != 4 {
        return 0;
    }
    read::<i32>(ctx, field.offset).unwrap_or(0)
}

/// Fills `out` with the record's addresses and ports (ports in host order).
#[inline(always)]
pub fn tuple(ctx: &TracePointContext, layout: &TupleLayout, out: &mut Tuple) {
    if layout.encoding == AddrEncoding::Sockaddr as u16 {
        let (src, dst) = (layout.saddr.offset, layout.daddr.offset);
        let family = read::<u16>(ctx, src).unwrap_or(0);
        out.family = family;
        out.sport = u16::from_be(read::<u16>(ctx, src + 2).unwrap_or(0));
        out.dport = u16::from_be(read::<u16>(ctx, dst + 2).unwrap_or(0));
        if family == AF_INET {
            copy_addr4(ctx, src + 4, dst + 4, out);
        } else if family == AF_INET6 {
            copy_addr6(ctx, src + 8, dst + 8, out);
        }
        return;
    }
    let family = if layout.family.is_present() {
        uint(ctx, layout.family) as u16
    } else {
        family_from_addresses(ctx, layout)
    };
    out.family = family;
    out.sport = uint(ctx, layout.sport) as u16;
    out.dport = uint(ctx, layout.dport) as u16;
    if family == AF_INET {
        copy_addr4(ctx, layout.saddr.offset, layout.daddr.offset, out);
    } else if family == AF_INET6 {
        copy_addr6(ctx, layout.saddr_v6.offset, layout.daddr_v6.offset, out);
    }
}

/// Before Linux 5.11 `tcp_event_sk` records (destroy, receive reset) have no
/// `family`; they store an IPv4 socket's addresses IPv4-mapped in the `_v6`
/// fields, so the mapping tells the families apart.
#[inline(always)]
fn family_from_addresses(ctx: &TracePointContext, layout: &TupleLayout) -> u16 {
    let v6 = read::<[u8; 16]>(ctx, layout.daddr_v6.offset).unwrap_or_default();
    let mapped = v6[..10].iter().all(|b| *b == 0) && v6[10] == 0xff && v6[11] == 0xff;
    if mapped { AF_INET } else { AF_INET6 }
}

#[inline(always)]
fn copy_addr4(ctx: &TracePointContext, src: u16, dst: u16, out: &mut Tuple) {
    let s = read::<[u8; 4]>(ctx, src).unwrap_or_default();
    let d = read::<[u8; 4]>(ctx, dst).unwrap_or_default();
    out.saddr = [0; 16];
    out.daddr = [0; 16];
    out.saddr[..4].copy_from_slice(&s);
    out.daddr[..4].copy_from_slice(&d);
}

#[inline(always)]
fn copy_addr6(ctx: &TracePointContext, src: u16, dst: u16, out: &mut Tuple) {
    out.saddr = read::<[u8; 16]>(ctx, src).unwrap_or_default();
    out.daddr = read::<[u8; 16]>(ctx, dst).unwrap_or_default();
}
