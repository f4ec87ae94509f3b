//! conntracer's kernel programs: tracepoints only (no kprobes, no fentry), so
//! they run on kernels built without either.
//!
//! Each module handles one family of kernel events; all of them keep state in
//! `maps::SOCKS` and report through `emit`. Field offsets come from `CONFIG`,
//! filled by the loader from the running kernel (see `tracer-common::config`).
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: by value they would
// be copied onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod activity;
mod config;
mod dns;
mod dns_dev;
mod emit;
mod http;
mod kernel;
mod lifecycle;
mod maps;
mod packet;
mod packet_activity;
mod record;
mod reset;
mod rst_packet;
mod seed;
mod skb;

use aya_ebpf::{
    macros::{cgroup_skb, tracepoint},
    programs::{SkBuffContext, TracePointContext},
};

/// `sock:inet_sock_set_state`: every TCP state change.
#[tracepoint]
pub fn ct_state(ctx: TracePointContext) -> u32 {
    lifecycle::on_state_change(&ctx);
    0
}

/// `tcp:tcp_destroy_sock`: the socket's life is over; report it whole.
#[tracepoint]
pub fn ct_destroy(ctx: TracePointContext) -> u32 {
    lifecycle::on_destroy(&ctx);
    0
}

/// `tcp:tcp_receive_reset`.
#[tracepoint]
pub fn ct_rst_rx(ctx: TracePointContext) -> u32 {
    reset::on_receive_reset(&ctx);
    0
}

/// `tcp:tcp_send_reset`.
#[tracepoint]
pub fn ct_rst_tx(ctx: TracePointContext) -> u32 {
    reset::on_send_reset(&ctx);
    0
}

/// `sock:sock_send_length`: per-socket activity, on the data path.
#[tracepoint]
pub fn ct_send_len(ctx: TracePointContext) -> u32 {
    activity::on_send(&ctx);
    0
}

/// `sock:sock_recv_length`: per-socket activity, on the data path.
#[tracepoint]
pub fn ct_recv_len(ctx: TracePointContext) -> u32 {
    activity::on_recv(&ctx);
    0
}

/// `net:netif_receive_skb`: DNS answers, where cgroup_skb cannot name the
/// namespace (see `dns_dev`).
#[tracepoint]
pub fn ct_dns_dev(ctx: TracePointContext) -> u32 {
    dns_dev::on_receive(&ctx);
    0
}

/// cgroup_skb egress on the cgroup v2 root: the HTTP 503 status peek, and on
/// older kernels activity and resets sent without a socket. Always lets the
/// packet pass.
#[cgroup_skb]
pub fn ct_egress(ctx: SkBuffContext) -> i32 {
    skb::on_egress(&ctx);
    1
}

/// cgroup_skb ingress on the cgroup v2 root: DNS answers for every pod, and
/// on older kernels activity. Always lets the packet pass.
#[cgroup_skb]
pub fn ct_ingress(ctx: SkBuffContext) -> i32 {
    skb::on_ingress(&ctx);
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
