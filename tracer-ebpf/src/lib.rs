//! Empty: the programs are the `tracer` binary target (see main.rs). This
//! library exists so `tracer` can list the crate as a build dependency.
#![no_std]
