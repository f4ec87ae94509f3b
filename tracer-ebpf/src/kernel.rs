//! Reading kernel structs at BTF-resolved offsets, and the current task.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
    generated::bpf_get_current_cgroup_id,
};
use tracer_common::event::Owner;

use crate::config;

#[inline(always)]
pub fn read_at<T>(base: u64, offset: u16) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: probe reads fault safely; offsets come from this kernel's BTF.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// Inode number of a `struct net`.
#[inline(always)]
fn net_inum(net: u64) -> u32 {
    read_at::<u32>(net, config::kernel().net_inum).unwrap_or(0)
}

/// Network namespace inode of a socket (any `sock_common`: full, request or timewait).
#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    let net = read_at::<u64>(sk, config::kernel().sock_net).unwrap_or(0);
    net_inum(net)
}

/// Network namespace inode of the device an skb arrived on.
#[inline(always)]
pub fn skb_netns(skb: u64) -> u32 {
    let offsets = config::kernel();
    let dev = read_at::<u64>(skb, offsets.skb_dev).unwrap_or(0);
    let net = read_at::<u64>(dev, offsets.netdev_net).unwrap_or(0);
    net_inum(net)
}

/// `sk->sk_state`.
#[inline(always)]
pub fn sock_state(sk: u64) -> u32 {
    read_at::<u8>(sk, config::kernel().sock_state).map_or(0, u32::from)
}

/// `sk->sk_err`.
#[inline(always)]
pub fn sock_err(sk: u64) -> u32 {
    read_at::<i32>(sk, config::kernel().sock_err).unwrap_or(0) as u32
}

/// The task we run in. Only meaningful in process context.
#[inline(always)]
pub fn current_owner(out: &mut Owner) {
    let pid_tgid = bpf_get_current_pid_tgid();
    out.tgid = (pid_tgid >> 32) as u32;
    out.pid = pid_tgid as u32;
    out.uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: helper without arguments.
    out.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    out.comm = bpf_get_current_comm().unwrap_or_default();
}
