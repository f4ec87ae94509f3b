//! h2c and TLS on the cgroup_skb programs (`tracer_common::proto`): a
//! connection's protocol is told once from its first payload and kept as a
//! `flags` bit; on h2c connections each write's frames say whether it is a
//! request (the per-message tracepoints see no payload, so for h2c sockets
//! they count bytes only and this module counts the requests).
//!
//! Cost: a few loads on every TCP segment with payload; the `SOCKS` lookup
//! only for segments that start like a ClientHello, the h2 preface or an h2
//! frame header (HTTP/1.x, TLS records and most binary protocols do not).

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::SkBuffContext};
use tracer_common::{
    event::{SockState, flags},
    http::STATUS_LINE_PREFIX,
    proto::{self, H2_FRAME_HEADER, H2_PREFACE, H2Segment, HEAD, Start},
};

use crate::{
    activity,
    maps::{SOCKS, sock_key},
    packet,
};

/// A segment leaving a socket, payload at `payload`; `loaded`: its first
/// bytes if the segment had that many (loaded once for the HTTP peek too).
#[inline(always)]
pub fn on_egress(ctx: &SkBuffContext, payload: usize, loaded: Option<&[u8; STATUS_LINE_PREFIX]>) {
    let total = ctx.len() as usize;
    let mut head = [0u8; HEAD];
    match loaded {
        Some(bytes) => head.copy_from_slice(&bytes[..HEAD]),
        None if total < payload + HEAD => return, // too short for anything
        // 9 to 11 bytes: a SETTINGS ack, a PING's header...
        None => match ctx.load::<[u8; HEAD]>(payload) {
            Ok(bytes) => head = bytes,
            Err(_) => return,
        },
    }
    let start = proto::start(&head);
    let frame = start == Start::Other && proto::h2_frame(&head).is_some();
    if start == Start::Other && !frame {
        return;
    }
    let Some((key, st)) = state(ctx) else { return };
    let now = unsafe { bpf_ktime_get_ns() };
    match start {
        Start::TlsClientHello => st.stats.flags |= flags::TLS,
        Start::H2Preface => {
            st.stats.flags |= flags::H2C;
            // The first request may ride in the preface's write.
            let after = payload + H2_PREFACE.len();
            if total > after && !frames(ctx, after, total).control_only {
                activity::record_write(key, st, now);
            }
        }
        Start::Other if st.stats.flags & flags::H2C != 0 => {
            if !frames(ctx, payload, total).control_only {
                activity::record_write(key, st, now);
            }
        }
        Start::Other => {}
    }
}

/// A segment arriving for a socket: an h2c peer's GOAWAY or RST_STREAM.
#[inline(always)]
pub fn on_ingress(ctx: &SkBuffContext, payload: usize) {
    let Some(head) = packet::read::<[u8; H2_FRAME_HEADER]>(ctx, payload) else {
        return;
    };
    if proto::h2_frame(&head).is_none() {
        return;
    }
    let Some((_, st)) = state(ctx) else { return };
    if st.stats.flags & flags::H2C == 0 {
        return;
    }
    let seg = frames(ctx, payload, ctx.len() as usize);
    if seg.goaway {
        st.stats.flags |= flags::H2_GOAWAY_IN;
    }
    if seg.rst_stream {
        st.stats.flags |= flags::H2_RST_STREAM_IN;
    }
}

/// The frames of the segment's payload from `from` to `total`.
#[inline(always)]
fn frames(ctx: &SkBuffContext, from: usize, total: usize) -> H2Segment {
    proto::h2_segment(total.saturating_sub(from), |off| {
        ctx.load::<[u8; H2_FRAME_HEADER]>(from + off).ok()
    })
}

/// The packet's tracked socket and its state.
#[inline(always)]
fn state(ctx: &SkBuffContext) -> Option<(u64, &'static mut SockState)> {
    let sk = packet::full_sock(ctx)?;
    let key = sock_key(sk);
    let st = SOCKS.get_ptr_mut(&key)?;
    // SAFETY: map value pointer, valid for this run.
    Some((key, unsafe { &mut *st }))
}
