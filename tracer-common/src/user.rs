//! Userspace-only glue: these types may be copied in and out of maps.

use crate::{
    config::ProbeConfig,
    event::{ConnEvent, DnsEvent, ListenerKey, Owner, SockState},
    seed::{SeedOffsets, SeedRecord},
};

// SAFETY: all are `#[repr(C)]`, `Copy`, contain no pointers, and every bit
// pattern is a valid value (enums are carried as integers).
unsafe impl aya::Pod for ProbeConfig {}
unsafe impl aya::Pod for SockState {}
unsafe impl aya::Pod for ListenerKey {}
unsafe impl aya::Pod for ConnEvent {}
unsafe impl aya::Pod for DnsEvent {}
unsafe impl aya::Pod for SeedOffsets {}
unsafe impl aya::Pod for SeedRecord {}
unsafe impl aya::Pod for Owner {}
