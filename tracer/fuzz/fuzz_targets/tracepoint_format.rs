//! `cargo xtask fuzz --target tracepoint_format`: see [`tracer_fuzz::tracepoint_format`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::tracepoint_format::check(data));
