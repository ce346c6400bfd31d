//! ISO 8583 decode, `ascii` profile: strict and lenient agree, never panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use codecs::iso8583::Profile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::iso_decode(&Profile::ASCII, data));
