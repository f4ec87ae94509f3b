//! conntracer userspace. Each layer uses only itself and the ones above it in
//! this list (`tests/layers.rs` checks it):
//!
//! ```text
//! kernel     what the running kernel offers: tracefs formats, BTF offsets, capabilities
//! probes     the eBPF programs: specs, this kernel's layouts, load, attach, ring buffers
//! events     kernel records → typed events (wall-clock time, addresses, enums)
//! conntrack  the connection table: one entry per socket, how each one ended
//! metadata   network namespace → pod (a PodSource: netns names, or the Kubernetes API)
//! dns        DNS answers: parsing, per-namespace history
//! analysis   stages: naming, topology, idle learning, DNS names, failures and
//!            causes, 503 attribution, findings
//! pipeline   decode → table → analysis, for every record
//! config     flags, file and defaults, resolved once
//! session    one tracing session: start, drain, outputs, queries, signals, detach
//! output     printer (trace), metrics, findings, HTTP
//! cli        the flags
//! commands   trace, daemon, diagnose, check: a session with their outputs
//! ```
//!
//! `units` (how times and durations look) and `errors` (error chains) are
//! leaves any layer may use.

pub mod analysis;
pub mod cli;
pub mod commands;
pub mod config;
pub mod conntrack;
pub mod dns;
pub mod errors;
pub mod events;
pub mod fastmap;
pub mod kernel;
pub mod metadata;
pub mod output;
pub mod pipeline;
pub mod probes;
pub mod session;
pub mod units;
