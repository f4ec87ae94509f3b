//! The read-only `CONFIG` global, written by the loader before the programs
//! load. Reads are volatile so the compiler cannot fold the zero initialiser;
//! the verifier still sees the frozen values and prunes dead branches.

use tracer_common::config::{
    KernelOffsets, MsgLengthLayout, NetReceiveLayout, ProbeConfig, SendResetLayout, SockLayout,
    StateChangeLayout,
};

#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = unsafe { core::mem::zeroed() };

macro_rules! getter {
    ($name:ident: $ty:ty = $($field:tt)+) => {
        #[inline(always)]
        pub fn $name() -> $ty {
            // SAFETY: CONFIG is a static of this type; the read is aligned.
            unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field)+) }
        }
    };
}

getter!(state_change: StateChangeLayout = state_change);
getter!(receive_reset: SockLayout = receive_reset);
getter!(destroy_sock: SockLayout = destroy_sock);
getter!(send_reset: SendResetLayout = send_reset);
getter!(send_length: MsgLengthLayout = send_length);
getter!(recv_length: MsgLengthLayout = recv_length);
getter!(net_receive: NetReceiveLayout = net_receive);
getter!(kernel: KernelOffsets = kernel);
getter!(features: u32 = features);
getter!(reuse_event_min_idle_ns: u64 = reuse_event_min_idle_ns);
getter!(wakeup_min_bytes: u64 = wakeup_min_bytes);
