//! Sending events: reserve in the ring buffer, copy the socket's state,
//! submit without waking the reader unless the buffer is filling up.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use tracer_common::{
    counters::Counter,
    event::{ConnEvent, EventKind, REASON_INFERRED, REASON_REPORTED, ResetSide, SockState},
};

use crate::{
    config,
    maps::{EVENTS, bump},
};

/// Header fields beyond the kind.
#[derive(Clone, Copy, Default)]
pub struct Detail {
    pub tcp_state: u32,
    pub reset_side: u8,
    pub reset_reason: Option<u32>,
    /// The reason was inferred, not reported by the kernel.
    pub reason_inferred: bool,
    pub http_status: u32,
}

impl Detail {
    pub const NONE: Detail = Detail {
        tcp_state: 0,
        reset_side: ResetSide::None as u8,
        reset_reason: None,
        reason_inferred: false,
        http_status: 0,
    };
}

#[inline(always)]
pub fn event(kind: EventKind, sock: u64, now: u64, state: &SockState, detail: Detail) {
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        bump(Counter::EventsLost);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, exclusively owned ConnEvent slot.
    unsafe {
        (*ev).kind = kind as u8;
        (*ev).reset_side = detail.reset_side;
        (*ev)._pad = [0; 2];
        (*ev).tcp_state = detail.tcp_state;
        (*ev).reset_reason = detail.reset_reason.unwrap_or(0);
        (*ev).has_reason = match (detail.reset_reason, detail.reason_inferred) {
            (None, _) => 0,
            (Some(_), false) => REASON_REPORTED,
            (Some(_), true) => REASON_INFERRED,
        };
        (*ev).http_status = detail.http_status;
        (*ev)._pad2 = 0;
        (*ev).ts_ns = now;
        (*ev).sock = sock;
        core::ptr::copy_nonoverlapping(state, &raw mut (*ev).state, 1);
    }
    entry.submit(wakeup_flag());
}

/// Waking userspace costs more than everything else a probe does, so only
/// wake it when enough has piled up; otherwise its timer drains the buffer.
#[inline(always)]
fn wakeup_flag() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= config::wakeup_min_bytes() {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
