//! `cargo xtask fuzz --target kernel_records`: see [`tracer_fuzz::kernel_records`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::kernel_records::check(data));
