//! Arbitrary bytes as a segmented stream: a `StreamReader` with a fixed key and binding,
//! read chunk by chunk to the end. Must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = phivault_crypto::fuzzing::check_stream(data);
});
