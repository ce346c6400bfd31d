//! Decode, re-encode every field with `MessageWriter`, decode again: same
//! fields. The first byte picks the profile (even: `ascii`, odd: `ascii-hex`).
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::iso_round_trip_selected(data));
