//! Internal frames: delimit, parse as request and response, write again,
//! parse again: the same value. See `checks::internal_decode`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::internal_decode(data));
