//! The two cgroup_skb programs on the cgroup v2 root, which see every
//! packet of every socket in every network namespace. Each parses the IP
//! header once and hands the packet to the features this kernel needs
//! (`features` bits, frozen at load: the verifier drops the others).

use aya_ebpf::programs::SkBuffContext;
use tracer_common::{
    config::features::{DNS_NETNS_COOKIE, HTTP_PEEK, PACKET_ACTIVITY, PROTOCOLS, RST_PACKETS},
    http::STATUS_LINE_PREFIX,
};

use crate::{
    config, dns, http,
    packet::{self, IPPROTO_TCP},
    packet_activity::{self, Direction},
    proto, rst_packet,
};

#[inline(always)]
pub fn on_egress(ctx: &SkBuffContext) {
    let features = config::features();
    // Everything egress looks at is TCP: parse its header once for all.
    let Some((family, l4, IPPROTO_TCP)) = packet::transport(ctx) else {
        return;
    };
    let Some(payload) = packet::tcp_payload(ctx, l4) else {
        return;
    };
    // Bare ACKs, SYNs and FINs (most packets of short connections) skip
    // the payload checks.
    let has_payload = packet::has_payload(ctx, payload);
    // The payload's first bytes, loaded once for both peeks (a segment
    // shorter than a status line gets its own, shorter load in `proto`).
    let head = if has_payload && features & (HTTP_PEEK | PROTOCOLS) != 0 {
        packet::read::<[u8; STATUS_LINE_PREFIX]>(ctx, payload)
    } else {
        None
    };
    // Before packet activity: the h2 preface marks the socket before its
    // first segment would count as a request.
    if has_payload && features & PROTOCOLS != 0 {
        proto::on_egress(ctx, payload, head.as_ref());
    }
    if features & (PACKET_ACTIVITY | RST_PACKETS) != 0
        && let Some(sk) = packet::full_sock(ctx)
    {
        if features & PACKET_ACTIVITY != 0 {
            packet_activity::on_segment(ctx, sk, payload, Direction::Egress);
        }
        if features & RST_PACKETS != 0 {
            rst_packet::on_egress(ctx, sk, family, l4);
        }
    }
    if features & HTTP_PEEK != 0
        && let Some(head) = &head
    {
        http::on_egress(ctx, family, head);
    }
}

#[inline(always)]
pub fn on_ingress(ctx: &SkBuffContext) {
    let features = config::features();
    let Some((family, l4, protocol)) = packet::transport(ctx) else {
        return;
    };
    if features & (PACKET_ACTIVITY | PROTOCOLS) != 0
        && protocol == IPPROTO_TCP
        && let Some(payload) = packet::tcp_payload(ctx, l4)
    {
        if features & PACKET_ACTIVITY != 0
            && let Some(sk) = packet::full_sock(ctx)
        {
            packet_activity::on_segment(ctx, sk, payload, Direction::Ingress);
        }
        if features & PROTOCOLS != 0 && packet::has_payload(ctx, payload) {
            proto::on_ingress(ctx, payload);
        }
    }
    if features & DNS_NETNS_COOKIE != 0 {
        dns::on_ingress(ctx, family, l4, protocol);
    }
}
