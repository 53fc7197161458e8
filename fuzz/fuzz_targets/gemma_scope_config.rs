#![no_main]
//! Fuzz target `gemma_scope_config`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::fuzz_init();
    harness::gemma_scope_config(data);
});
