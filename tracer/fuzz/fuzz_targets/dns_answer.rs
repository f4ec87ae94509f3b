//! `cargo xtask fuzz --target dns_answer`: see [`tracer_fuzz::dns_answer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer_fuzz::dns_answer::check(data));
