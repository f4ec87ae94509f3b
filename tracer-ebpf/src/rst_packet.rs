//! Resets the kernel sends when no socket matched a segment (a SYN to a
//! closed port: a refused connect). Before Linux 6.10 `tcp_send_reset`
//! fires only with a socket, so these are seen here instead, leaving through
//! cgroup_skb egress from the namespace's TCP control socket (a raw socket).
//! The reason is inferred (`NO_SOCKET`) and marked so; the namespace is left
//! for userspace to find from the source address.

use aya_ebpf::{bindings::bpf_sock, helpers::bpf_ktime_get_ns, programs::SkBuffContext};
use tracer_common::event::{EventKind, ResetSide};

use crate::{
    emit::{self, Detail},
    maps::{LAST_TRACED_RST, scratch},
    packet::{self, TCP_RST},
};

const SOCK_RAW: u32 = 3;
/// `SK_RST_REASON_NO_SOCKET` (1 on every kernel that names reasons).
const NO_SOCKET: u32 = 1;

/// `tcp_send_reset` reported this segment a moment ago (it had a socket).
#[inline(always)]
fn traced_already(sport: u16, dport: u16, now: u64) -> bool {
    let Some(slot) = LAST_TRACED_RST.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot, no other writer on this CPU while we run.
    let last = unsafe { &mut *slot };
    let same =
        last.sport == sport && last.dport == dport && now.wrapping_sub(last.ts_ns) < 1_000_000;
    if same {
        last.ts_ns = 0;
    }
    same
}

/// A TCP segment whose header is at `l4`.
#[inline(always)]
pub fn on_egress(ctx: &SkBuffContext, sk: *mut bpf_sock, family: u16, l4: usize) {
    let Some(tcp_flags) = packet::read::<u8>(ctx, l4 + 13) else {
        return;
    };
    // SAFETY: `sk` is a full socket from `bpf_sk_fullsock`.
    if tcp_flags & TCP_RST == 0 || unsafe { (*sk).type_ } != SOCK_RAW {
        return;
    }
    let Some((src, dst)) = packet::addresses(ctx, family) else {
        return;
    };
    let (Some(sport), Some(dport)) = (
        packet::read::<u16>(ctx, l4),
        packet::read::<u16>(ctx, l4 + 2),
    ) else {
        return;
    };
    let (sport, dport) = (u16::from_be(sport), u16::from_be(dport));
    let now = unsafe { bpf_ktime_get_ns() };
    if traced_already(sport, dport, now) {
        return;
    }
    let Some(st) = scratch() else { return };
    st.tuple.family = family;
    st.tuple.saddr = src;
    st.tuple.daddr = dst;
    st.tuple.sport = sport;
    st.tuple.dport = dport;
    emit::event(
        EventKind::Reset,
        0,
        now,
        st,
        Detail {
            reset_side: ResetSide::Sent as u8,
            reset_reason: Some(NO_SOCKET),
            reason_inferred: true,
            ..Detail::NONE
        },
    );
}
