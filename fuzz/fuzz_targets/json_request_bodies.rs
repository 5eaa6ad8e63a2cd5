#![no_main]

libfuzzer_sys::fuzz_target!(
    |data: &[u8]| syncfolder_server::fuzz_targets::json_request_bodies(data)
);
