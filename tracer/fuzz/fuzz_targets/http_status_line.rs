//! `cargo xtask fuzz --target http_status_line`: see [`tracer_fuzz::http_status_line`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::http_status_line::check(data));
