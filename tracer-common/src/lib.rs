//! Types that cross the kernel/userspace boundary, defined once.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers so the eBPF
//! programs (`tracer-ebpf`) and the daemon (`tracer`) read the same bytes.
//! The one userspace-only piece, the aya `Pod` impls that let these types
//! travel through maps, is [`user`], behind the `user` feature; the kernel
//! side builds without it (`no_std`, no aya).
#![cfg_attr(not(test), no_std)]

pub mod config;
pub mod counters;
pub mod event;
pub mod http;
pub mod proto;
pub mod seed;
pub mod tcp;

#[cfg(feature = "user")]
pub mod user;
