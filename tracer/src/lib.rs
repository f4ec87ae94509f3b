//! conntracer userspace: loads the eBPF probes, turns their events into a
//! connection table, and presents it (`trace`, `check`, and later the daemon).
//!
//! Data flow: `probes` (load, attach, ring buffer) → `events` (typed) →
//! `conntrack` (connection table, end reasons) → `trace` (output), with
//! `metadata` naming network namespaces and `kernel` resolving what the
//! running kernel offers.

pub mod analysis;
pub mod check;
pub mod cli;
pub mod conntrack;
pub mod daemon;
pub mod diagnose;
pub mod dns;
pub mod events;
pub mod kernel;
pub mod metadata;
pub mod pipeline;
pub mod probes;
pub mod startup;
pub mod trace;
