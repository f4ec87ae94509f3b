//! `cargo xtask fuzz --target config_file`: see [`tracer_fuzz::config_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::config_file::check(data));
