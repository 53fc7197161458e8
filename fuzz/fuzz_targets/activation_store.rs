#![no_main]
//! Fuzz target `activation_store`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::fuzz_init();
    harness::activation_store(data);
});
