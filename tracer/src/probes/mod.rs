//! Loading, attaching and reading conntracer's eBPF programs.

pub mod counters;
pub mod loader;
pub mod reader;
pub mod spec;

pub use loader::{LoadError, LoadOptions, Probes};
