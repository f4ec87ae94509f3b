//! DNS capture where cgroup_skb may call `bpf_get_netns_cookie` (otherwise
//! see `dns_dev`): the cgroup_skb ingress program on the cgroup v2 root sees the
//! packets of every socket in every network namespace. UDP or TCP segments
//! from port 53 with a payload are copied (at most `DNS_CAPTURE_MAX` bytes)
//! to `DNS_EVENTS`; everything else returns after a few loads.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_get_netns_cookie, bpf_skb_load_bytes},
    },
    programs::SkBuffContext,
};
use tracer_common::{
    counters::Counter,
    event::{DNS_CAPTURE_MAX, DnsEvent, Tuple},
};

use crate::{
    maps::{DNS_EVENTS, bump},
    packet::{self, IPPROTO_TCP, IPPROTO_UDP},
};

const DNS_PORT: u16 = 53;

/// A packet already known to be UDP or TCP at transport offset `l4`.
#[inline(always)]
pub fn on_ingress(ctx: &SkBuffContext, family: u16, l4: usize, protocol: u8) {
    if protocol != IPPROTO_UDP && protocol != IPPROTO_TCP {
        return;
    }
    let Some(ports) = packet::read::<[u8; 4]>(ctx, l4) else {
        return;
    };
    if u16::from_be_bytes([ports[0], ports[1]]) != DNS_PORT {
        return;
    }
    let payload = if protocol == IPPROTO_UDP {
        l4 + 8
    } else {
        let Some(payload) = packet::tcp_payload(ctx, l4) else {
            return;
        };
        payload
    };
    let total = ctx.len() as usize;
    if total <= payload {
        return; // no payload (a bare ACK)
    }
    let Some((src, dst)) = packet::addresses(ctx, family) else {
        return;
    };
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        bump(Counter::DnsLost);
        return;
    };
    let tuple = Tuple {
        family,
        sport: DNS_PORT,
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        saddr: src,
        daddr: dst,
        ..Tuple::default()
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved, exclusively owned DnsEvent slot.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).netns_cookie = bpf_get_netns_cookie(ctx.as_ptr());
        (*ev).netns = 0;
        (*ev)._pad2 = 0;
        (*ev).tuple = tuple;
        (*ev).uid = ctx.get_socket_uid();
        (*ev).protocol = protocol;
        (*ev)._pad = [0; 3];
        (*ev).len = (total - payload) as u32;
        // Copy 1..=DNS_CAPTURE_MAX bytes; the mask keeps both bounds visible
        // to the verifier (the helper refuses a length that may be zero).
        let n = (total - payload).min(DNS_CAPTURE_MAX);
        let n = ((n - 1) & (DNS_CAPTURE_MAX - 1)) + 1;
        let copied = bpf_skb_load_bytes(
            ctx.as_ptr(),
            payload as u32,
            (&raw mut (*ev).data).cast(),
            n as u32,
        );
        (*ev).captured = if copied == 0 { n as u32 } else { 0 };
    }
    entry.submit(0);
}
