//! The framing decoder fed whole and in arbitrary chunks gives the same
//! frames; see `checks::framing_chunks` for the input layout.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::framing_chunks(data));
