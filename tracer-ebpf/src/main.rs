//! conntracer's kernel programs: tracepoints only (no kprobes, no fentry), so
//! they run on kernels built without either. The hot ones come twice: as BTF
//! tracepoints (`tp_btf`: arguments read straight from the context, no
//! `bpf_probe_read` per field), and as classic tracepoints for kernels where
//! those cannot attach.
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
mod proto;
mod record;
mod reset;
mod rst_packet;
mod seed;
mod skb;

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb, tracepoint},
    programs::{BtfTracePointContext, SkBuffContext, TracePointContext},
};

/// `sock:inet_sock_set_state`: every TCP state change (BTF tracepoint:
/// the arguments come straight from the context).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn ct_state_btf(ctx: BtfTracePointContext) -> i32 {
    let (sk, old, new): (u64, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    lifecycle::on_state_change(&lifecycle::FromSock, sk, old as u32, new as u32);
    0
}

/// `sock:inet_sock_set_state` as a classic tracepoint, where BTF ones
/// cannot attach.
#[tracepoint]
pub fn ct_state(ctx: TracePointContext) -> u32 {
    lifecycle::on_state_record(&ctx);
    0
}

/// `tcp:tcp_destroy_sock`: the socket's life is over; report it whole.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn ct_destroy_btf(ctx: BtfTracePointContext) -> i32 {
    lifecycle::on_destroy(&lifecycle::FromSock, ctx.arg(0));
    0
}

/// `tcp:tcp_destroy_sock` as a classic tracepoint.
#[tracepoint]
pub fn ct_destroy(ctx: TracePointContext) -> u32 {
    lifecycle::on_destroy_record(&ctx);
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

/// `sock:sock_send_length` (6.3+): per-socket activity, on the data path.
#[btf_tracepoint(function = "sock_send_length")]
pub fn ct_send_len_btf(ctx: BtfTracePointContext) -> i32 {
    let (sk, len): (u64, i32) = (ctx.arg(0), ctx.arg(1));
    activity::on_send(sk, len);
    0
}

/// `sock:sock_recv_length` (6.3+): per-socket activity, on the data path.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn ct_recv_len_btf(ctx: BtfTracePointContext) -> i32 {
    let (sk, len, flags): (u64, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    activity::on_recv(sk, len, flags);
    0
}

/// `sock:sock_send_length` as a classic tracepoint.
#[tracepoint]
pub fn ct_send_len(ctx: TracePointContext) -> u32 {
    activity::on_send_record(&ctx);
    0
}

/// `sock:sock_recv_length` as a classic tracepoint.
#[tracepoint]
pub fn ct_recv_len(ctx: TracePointContext) -> u32 {
    activity::on_recv_record(&ctx);
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
