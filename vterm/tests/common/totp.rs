//! The tests' own RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30 s), written
//! from the RFC apart from the terminal's, so a shared mistake cannot make
//! both agree.

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The code of the base32 `secret` at Unix time `time_s`.
pub fn code(secret_b32: &str, time_s: u64) -> String {
    let clean: String = secret_b32
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_uppercase();
    let key = BASE32_NOPAD
        .decode(clean.as_bytes())
        .expect("a base32 secret");
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).expect("any key length");
    mac.update(&(time_s / 30).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let at = usize::from(h[h.len() - 1] & 0xf);
    let n = (u32::from(h[at]) & 0x7f) << 24
        | u32::from(h[at + 1]) << 16
        | u32::from(h[at + 2]) << 8
        | u32::from(h[at + 3]);
    format!("{:06}", n % 1_000_000)
}

#[test]
fn the_rfc_6238_vector_at_59_seconds() {
    // "12345678901234567890" in base32; RFC 6238 appendix B: 94287082.
    assert_eq!(code("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59), "287082");
}
