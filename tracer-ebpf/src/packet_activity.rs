//! Activity from packets, for kernels without `sock_send_length` and
//! `sock_recv_length` (before 6.3): the cgroup_skb programs see every TCP
//! segment of every socket with its `struct sock`, so a segment carrying
//! data counts as a send (egress) or a receive (ingress). Segments are not
//! messages: `tx_msgs`/`rx_msgs` count segments (GSO/GRO batches) here.

use aya_ebpf::{bindings::bpf_sock, helpers::bpf_ktime_get_ns, programs::SkBuffContext};

use crate::{
    activity,
    maps::{SOCKS, sock_key},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Egress,
    Ingress,
}

/// Counts a TCP segment whose payload starts at `payload` if it carries
/// data for a tracked socket.
#[inline(always)]
pub fn on_segment(ctx: &SkBuffContext, sk: *mut bpf_sock, payload: usize, direction: Direction) {
    let total = ctx.len() as usize;
    if total <= payload {
        return; // a bare ACK, SYN or FIN
    }
    let key = sock_key(sk);
    let Some(st) = SOCKS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: map value pointer, valid for this run.
    let st = unsafe { &mut *st };
    let len = (total - payload) as u64;
    let now = unsafe { bpf_ktime_get_ns() };
    match direction {
        Direction::Egress => activity::record_send(key, st, len, now),
        Direction::Ingress => activity::record_recv(st, len, now),
    }
}
