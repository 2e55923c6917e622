//! Arbitrary bytes as an envelope: `Envelope::parse`, then `envelope::open` with a fixed
//! key and binding. Must return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = phivault_crypto::fuzzing::check_envelope(data);
});
