//! Journal payloads and snapshots: decoded as payment records, snapshots
//! and upstream records; errors, never panics, and what is accepted
//! encodes back as read. See `record_checks::journal_records`.
#![no_main]

#[path = "../record_checks.rs"]
mod record_checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| record_checks::journal_records(data));
