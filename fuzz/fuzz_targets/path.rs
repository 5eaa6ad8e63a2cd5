#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| syncfolder_core::fuzz_targets::path(data));
