//! Types that cross the kernel/userspace boundary, defined once.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers so the eBPF
//! programs (`tracer-ebpf`) and the daemon (`tracer`) read the same bytes.
//! Userspace-only helpers (aya `Pod` impls, names) live in [`user`] behind
//! the `user` feature, the way kunai splits `bpf.rs` and `user.rs`.
#![no_std]

pub mod config;
pub mod counters;
pub mod event;
pub mod tcp;

#[cfg(feature = "user")]
pub mod user;
