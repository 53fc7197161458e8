#![no_main]
//! Fuzz target `chat_template`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::fuzz_init();
    harness::chat_template(data);
});
