#![no_main]
//! Fuzz target `saelens_cfg`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::fuzz_init();
    harness::saelens_cfg(data);
});
