//! Arbitrary bytes into the Omaha parser: it must never panic, and whatever parses (request
//! or response) must write back to XML that parses to the same value, byte-identically.
//! `crates/omaha/tests/roundtrip.rs` runs the same property on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(mismatch) = keelson_omaha::check_round_trip(data) {
        panic!("round trip broke: {mismatch}");
    }
});
