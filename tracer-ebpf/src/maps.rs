//! The programs' maps. Sizes here are defaults; the loader may resize
//! `SOCKS` and `EVENTS` before load.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    counters::Counter,
    event::{ListenerKey, Owner, SockState},
    seed::SeedRecord,
};

/// Per-socket state, keyed by `struct sock` address (captured at the first
/// state change, so it is known even once ports read as zero).
#[map]
pub static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(131_072, 0);

/// Owner of each listening port, inherited by the sockets it accepts.
#[map]
pub static LISTENERS: HashMap<ListenerKey, Owner> = HashMap::with_max_entries(16_384, 0);

/// The one ring buffer every event goes through.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// DNS answers, in their own ring buffer: they are larger than connection
/// events, and a burst of them must not crowd those out.
#[map]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Loss and skip counters, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// One zeroed `SockState` per CPU to build records in: too large for the
/// 512-byte BPF stack next to everything else.
#[map]
pub static SCRATCH: PerCpuArray<SockState> = PerCpuArray::with_max_entries(1, 0);

/// One `SeedRecord` per CPU for the start-up enumeration to build in.
#[map]
pub static SEED_SCRATCH: PerCpuArray<SeedRecord> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}

/// A zeroed per-CPU `SockState` to fill.
#[inline(always)]
pub fn scratch() -> Option<&'static mut SockState> {
    let ptr = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, valid for the program's run.
    unsafe {
        core::ptr::write_bytes(ptr, 0, 1);
        Some(&mut *ptr)
    }
}

/// One slot per CPU to turn a socket pointer into a plain number: a
/// cgroup_skb program may store its `bpf_sock` pointer into a map value (we
/// load with CAP_PERFMON) but not use it as a key; read back, it is the
/// `struct sock` address the tracepoints key `SOCKS` by.
#[map]
pub static SOCK_ADDR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The `SOCKS` key of a cgroup_skb packet's socket (0 if the slot is missing).
#[inline(always)]
pub fn sock_key(sk: *mut aya_ebpf::bindings::bpf_sock) -> u64 {
    let Some(slot) = SOCK_ADDR.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU slot; volatile so the compiler keeps the round trip
    // (the verifier only forgets the pointer type through memory).
    unsafe {
        core::ptr::write_volatile(slot, sk as u64);
        core::ptr::read_volatile(slot)
    }
}

/// The ports of the last reset `tcp_send_reset` reported on this CPU, so the
/// packet path (`rst_packet`) does not report it again: the tracepoint runs
/// first, in the same call that sends the segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TracedReset {
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
    pub ts_ns: u64,
}

#[map]
pub static LAST_TRACED_RST: PerCpuArray<TracedReset> = PerCpuArray::with_max_entries(1, 0);
