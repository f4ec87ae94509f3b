//! Reading kernel structs at BTF-resolved offsets, and the current task.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel,
    generated::bpf_get_current_cgroup_id,
};
use tracer_common::{
    config::SockHead,
    event::{Owner, Tuple},
    tcp::{AF_INET, AF_INET6},
};

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

/// `sk->sk_protocol`.
#[inline(always)]
pub fn sock_protocol(sk: u64) -> u32 {
    read_at::<u16>(sk, config::kernel().sock_protocol).map_or(0, u32::from)
}

/// `sk->skc_dport` in host order: 0 for listeners and never-connected sockets.
#[inline(always)]
pub fn sock_dport(sk: u64) -> u16 {
    read_at::<SockHead>(sk, config::kernel().sock_head).map_or(0, |h| u16::from_be(h.dport))
}

/// A socket's addresses and ports, as `sock:inet_sock_set_state` records
/// them (ports in host order; IPv4 addresses in the first four bytes): one
/// read for an IPv4 socket, three for IPv6.
#[inline(always)]
pub fn sock_tuple(sk: u64, out: &mut Tuple) {
    let offsets = config::kernel();
    let head = read_at::<SockHead>(sk, offsets.sock_head).unwrap_or_default();
    out.family = head.family;
    out.sport = head.num;
    out.dport = u16::from_be(head.dport);
    if head.family == AF_INET {
        out.saddr = [0; 16];
        out.daddr = [0; 16];
        out.saddr[..4].copy_from_slice(&head.rcv_saddr);
        out.daddr[..4].copy_from_slice(&head.daddr);
    } else if head.family == AF_INET6 {
        out.saddr = read_at::<[u8; 16]>(sk, offsets.sock_v6_rcv_saddr).unwrap_or_default();
        out.daddr = read_at::<[u8; 16]>(sk, offsets.sock_v6_daddr).unwrap_or_default();
    }
}
