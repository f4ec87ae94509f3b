//! What each fuzz target checks, beyond "no panic": one module per parser of
//! untrusted input. A broken invariant panics, which libFuzzer reports as a
//! crash and saves the input.

pub mod config_file;
pub mod dns_answer;
pub mod http_status_line;
pub mod kernel_records;
pub mod tracepoint_format;
