//! State from before the start: an `iter/tcp` program (Linux 5.9+) run once
//! per network namespace at attach. Listeners go into `LISTENERS`, sockets
//! with a connection into `SOCKS` (keyed by `struct sock` address like
//! everything else, so the tracepoints follow them from here on), and each
//! one is written to the iterator's file as a `SeedRecord` for userspace.
//! The kernel lists listeners before established sockets, so a connection's
//! role can be told from its local port.
//!
//! A seq file may show the same socket twice (when its record did not fit
//! the buffer), so an entry this program made is recognised by its SEEDED
//! flag and reported again; userspace keeps one record per socket.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, generated::bpf_seq_write},
};
use tracer_common::{
    event::{ListenerKey, Owner, Role, SockState, flags},
    seed::{Seed, SeedOffsets, SeedRecord, TcpSnapshot, guess_role, seed_kind, seeded_stats},
    tcp::{AF_INET, AF_INET6},
};

use crate::{
    kernel,
    maps::{LISTENERS, SEED_SCRATCH, SOCKS},
};

#[unsafe(no_mangle)]
static SEED_CONFIG: SeedOffsets = unsafe { core::mem::zeroed() };

#[inline(always)]
fn offsets() -> SeedOffsets {
    // SAFETY: a static of this type, written by the loader before load.
    unsafe { core::ptr::read_volatile(&raw const SEED_CONFIG) }
}

/// `struct bpf_iter_meta`, as far as we read it.
#[repr(C)]
struct IterMeta {
    seq: *mut core::ffi::c_void,
}

/// `struct bpf_iter__tcp`: meta, the socket (NULL at the end), `sock_i_uid`.
#[repr(C)]
struct IterTcp {
    meta: *const IterMeta,
    sk_common: u64,
    uid: u32,
}

/// `iter/tcp`: one call per socket of the iterator's network namespace.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/tcp")]
pub fn ct_seed(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = ctx as *const IterTcp;
    // SAFETY: the kernel hands us a `bpf_iter__tcp`; these are direct context loads.
    let (meta, sk, uid) = unsafe { ((*ctx).meta, (*ctx).sk_common, (*ctx).uid) };
    if sk == 0 {
        return 0;
    }
    // SAFETY: `meta` is a trusted kernel pointer for the program's run.
    let seq = unsafe { (*meta).seq };
    on_socket(seq, sk, uid);
    0
}

#[inline(always)]
fn read<T>(base: u64, offset: u16) -> Option<T> {
    // SAFETY: probe reads fault safely; offsets come from this kernel's BTF.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

#[inline(always)]
fn on_socket(seq: *mut core::ffi::c_void, sk: u64, uid: u32) {
    let tcp_state = kernel::sock_state(sk);
    let kind = seed_kind(tcp_state);
    if kind == Seed::Skip {
        return;
    }
    let Some(rec) = SEED_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, valid for the program's run.
    let rec = unsafe {
        core::ptr::write_bytes(rec, 0, 1);
        &mut *rec
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let o = offsets();
    rec.sock = sk;
    rec.seen_ns = now;
    rec.tcp_state = tcp_state;
    rec.inode = socket_inode(sk, &o);
    let st = &mut rec.state;
    st.netns = kernel::sock_netns(sk);
    st.owner.uid = uid;
    tuple(sk, &o, st);
    let key = ListenerKey {
        netns: st.netns,
        port: st.tuple.sport,
        _pad: 0,
    };
    if kind == Seed::Listener {
        st.role = Role::Listener as u8;
        st.stats.flags = flags::SEEDED;
        let owner = Owner {
            uid,
            ..Owner::default()
        };
        rec.inserted = LISTENERS.insert(&key, &owner, BPF_NOEXIST as u64).is_ok() as u32;
    } else {
        // SAFETY: only the presence is used.
        let listened = unsafe { LISTENERS.get(&key) }.is_some();
        let role = guess_role(listened);
        st.role = role as u8;
        st.stats = seeded_stats(&snapshot(sk, tcp_state, &o), role);
        if SOCKS.insert(&sk, &*st, BPF_NOEXIST as u64).is_ok() {
            rec.inserted = 1;
        } else {
            // Ours from an earlier show of this socket, or the tracepoints' own entry.
            // SAFETY: the flags are copied out at once.
            let ours =
                unsafe { SOCKS.get(&sk) }.is_some_and(|e| e.stats.flags & flags::SEEDED != 0);
            if !ours {
                return;
            }
        }
    }
    // SAFETY: `seq` is the iterator's seq file; `rec` is a map value of SIZE bytes.
    unsafe {
        bpf_seq_write(
            seq as *mut _,
            rec as *const SeedRecord as *const _,
            SeedRecord::SIZE as u32,
        );
    }
}

/// Addresses and ports from `sock_common` (ports in host order).
#[inline(always)]
fn tuple(sk: u64, o: &SeedOffsets, st: &mut SockState) {
    let t = &mut st.tuple;
    t.family = read::<u16>(sk, o.family).unwrap_or(0);
    t.sport = read::<u16>(sk, o.num).unwrap_or(0);
    t.dport = u16::from_be(read::<u16>(sk, o.dport).unwrap_or(0));
    if t.family == AF_INET {
        let s = read::<[u8; 4]>(sk, o.rcv_saddr).unwrap_or_default();
        let d = read::<[u8; 4]>(sk, o.daddr).unwrap_or_default();
        t.saddr[..4].copy_from_slice(&s);
        t.daddr[..4].copy_from_slice(&d);
    } else if t.family == AF_INET6 {
        t.saddr = read::<[u8; 16]>(sk, o.v6_rcv_saddr).unwrap_or_default();
        t.daddr = read::<[u8; 16]>(sk, o.v6_daddr).unwrap_or_default();
    }
}

#[inline(always)]
fn snapshot(sk: u64, tcp_state: u32, o: &SeedOffsets) -> TcpSnapshot {
    TcpSnapshot {
        tcp_state,
        mstamp_us: read::<u64>(sk, o.tcp_mstamp).unwrap_or(0),
        bytes_received: read::<u64>(sk, o.bytes_received).unwrap_or(0),
        bytes_acked: read::<u64>(sk, o.bytes_acked).unwrap_or(0),
        snd_una: read::<u32>(sk, o.snd_una).unwrap_or(0),
        snd_nxt: read::<u32>(sk, o.snd_nxt).unwrap_or(0),
        lsndtime: read::<u32>(sk, o.lsndtime).unwrap_or(0),
        lrcvtime: read::<u32>(sk, o.lrcvtime).unwrap_or(0),
        data_segs_in: read::<u32>(sk, o.data_segs_in).unwrap_or(0),
        data_segs_out: read::<u32>(sk, o.data_segs_out).unwrap_or(0),
    }
}

/// The inode `/proc/PID/fd` links name (`socket:[N]`): how userspace finds the owner.
#[inline(always)]
fn socket_inode(sk: u64, o: &SeedOffsets) -> u64 {
    let socket = read::<u64>(sk, o.sk_socket).unwrap_or(0);
    if socket == 0 {
        return 0;
    }
    read::<u64>(socket + o.socket_inode as u64, o.inode_ino).unwrap_or(0)
}
