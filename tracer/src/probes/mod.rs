//! The probes: which programs exist and what each one's absence costs
//! (`spec`), this kernel's layouts for them (`setup`), which source each
//! feature uses here (`modes`), loading and attaching (`loader`), bringing
//! it all up in order (`start`), reading what they report (`reader`,
//! `counters`), and the start-up enumeration of sockets that already exist
//! (`seed`).

pub mod counters;
pub mod loader;
pub mod modes;
pub mod reader;
pub mod seed;
pub mod setup;
pub mod spec;
pub mod start;

pub use loader::{LoadError, LoadOptions, Probes};
pub use start::{StartError, Tracer, start};
