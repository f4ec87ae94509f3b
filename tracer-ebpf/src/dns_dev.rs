//! DNS capture on kernels whose cgroup_skb programs cannot name a packet's
//! network namespace (no `bpf_get_netns_cookie` there before ~6.15): the
//! `net:netif_receive_skb` tracepoint sees each packet a device hands to the
//! stack, in the namespace of that device. Answers from port 53 are copied
//! like the cgroup_skb capture does, with the namespace inode instead of a
//! cookie. A forwarding namespace (the host, routing to a pod) sees the
//! answer too; userspace keeps only answers addressed to the namespace.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_kernel},
    programs::TracePointContext,
};
use tracer_common::{
    counters::Counter,
    event::{DNS_CAPTURE_MAX, DnsEvent, Tuple},
    tcp::{AF_INET, AF_INET6},
};

use crate::{
    config,
    kernel::{self, read_at},
    maps::{DNS_EVENTS, bump},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    record,
};

const DNS_PORT: u16 = 53;

/// Where the headers of a received packet are, relative to `skb->data`.
struct Headers {
    family: u16,
    protocol: u8,
    l4: u64,
    /// IP packet length from its header (excludes link-layer padding).
    ip_len: u64,
}

pub fn on_receive(ctx: &TracePointContext) {
    let skb = record::pointer(ctx, config::net_receive().skbaddr);
    let offsets = config::kernel();
    let Some(data) = read_at::<u64>(skb, offsets.skb_data) else {
        return;
    };
    let Some(h) = headers(data) else { return };
    if h.protocol != IPPROTO_UDP && h.protocol != IPPROTO_TCP {
        return;
    }
    let Some(ports) = read_at::<[u8; 4]>(data, h.l4 as u16) else {
        return;
    };
    if u16::from_be_bytes([ports[0], ports[1]]) != DNS_PORT {
        return;
    }
    let payload = if h.protocol == IPPROTO_UDP {
        h.l4 + 8
    } else {
        let Some(data_offset) = read_at::<u8>(data, h.l4 as u16 + 12) else {
            return;
        };
        h.l4 + (data_offset >> 4) as u64 * 4
    };
    // Only the linear part is readable through `data`.
    let len = read_at::<u32>(skb, offsets.skb_len).unwrap_or(0) as u64;
    let data_len = read_at::<u32>(skb, offsets.skb_data_len).unwrap_or(0) as u64;
    let linear = len.saturating_sub(data_len).min(h.ip_len);
    if h.ip_len <= payload {
        return; // no payload (a bare ACK)
    }
    let Some(mut entry) = DNS_EVENTS.reserve::<DnsEvent>(0) else {
        bump(Counter::DnsLost);
        return;
    };
    let mut tuple = Tuple {
        family: h.family,
        sport: DNS_PORT,
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        ..Tuple::default()
    };
    addresses(data, h.family, &mut tuple);
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is a reserved, exclusively owned DnsEvent slot.
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).netns_cookie = 0;
        (*ev).netns = kernel::skb_netns(skb);
        (*ev)._pad2 = 0;
        (*ev).tuple = tuple;
        (*ev).uid = 0;
        (*ev).protocol = h.protocol;
        (*ev)._pad = [0; 3];
        (*ev).len = (h.ip_len - payload) as u32;
        (*ev).captured = 0;
        if linear > payload {
            // 1..=DNS_CAPTURE_MAX bytes, both bounds visible to the verifier.
            let n = (linear - payload).min(DNS_CAPTURE_MAX as u64);
            let n = ((n - 1) & (DNS_CAPTURE_MAX as u64 - 1)) + 1;
            let copied = bpf_probe_read_kernel(
                (&raw mut (*ev).data).cast(),
                n as u32,
                (data + payload) as *const _,
            );
            if copied == 0 {
                (*ev).captured = n as u32;
            }
        }
    }
    entry.submit(0);
}

#[inline(always)]
fn headers(data: u64) -> Option<Headers> {
    let first = read_at::<u8>(data, 0)?;
    match first >> 4 {
        4 => Some(Headers {
            family: AF_INET,
            protocol: read_at::<u8>(data, 9)?,
            l4: (first & 0x0f) as u64 * 4,
            ip_len: u16::from_be(read_at::<u16>(data, 2)?) as u64,
        }),
        6 => Some(Headers {
            family: AF_INET6,
            protocol: read_at::<u8>(data, 6)?,
            l4: 40,
            ip_len: 40 + u16::from_be(read_at::<u16>(data, 4)?) as u64,
        }),
        _ => None,
    }
}

#[inline(always)]
fn addresses(data: u64, family: u16, tuple: &mut Tuple) {
    if family == AF_INET {
        let src = read_at::<[u8; 4]>(data, 12).unwrap_or_default();
        let dst = read_at::<[u8; 4]>(data, 16).unwrap_or_default();
        tuple.saddr[..4].copy_from_slice(&src);
        tuple.daddr[..4].copy_from_slice(&dst);
    } else {
        tuple.saddr = read_at::<[u8; 16]>(data, 8).unwrap_or_default();
        tuple.daddr = read_at::<[u8; 16]>(data, 24).unwrap_or_default();
    }
}
