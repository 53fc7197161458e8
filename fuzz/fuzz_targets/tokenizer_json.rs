#![no_main]
//! Fuzz target `tokenizer_json`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::fuzz_init();
    harness::tokenizer_json(data);
});
