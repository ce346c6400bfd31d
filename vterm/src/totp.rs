//! The second factor: time-based one-time passwords (RFC 6238 TOTP over
//! RFC 4226 HOTP) with HMAC-SHA-1, 6 digits and a 30-second step, as every
//! authenticator app computes them. Pure: time is a parameter, so tests
//! use the RFC's own vectors.
//!
//! A code is accepted for the step it names and one step either side
//! (clocks drift, people type slowly); a step accepted once is never
//! accepted again for the same operator (the caller remembers the last
//! step, see [`verify`]).

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step (RFC 6238's X).
pub(crate) const STEP_S: u64 = 30;
/// Digits in a code.
pub(crate) const DIGITS: u32 = 6;
/// Steps accepted either side of the current one.
pub(crate) const SKEW_STEPS: u64 = 1;
/// Secret bytes: 160 bits, the HMAC-SHA-1 block output RFC 4226 recommends.
pub(crate) const SECRET_BYTES: usize = 20;
/// Longest base32 secret read back from the store.
const SECRET_B32_CHARS_MAX: usize = 128;

const _: () = assert!(DIGITS == 6 && SKEW_STEPS < 3);

/// A fresh random secret, base32 without padding (what apps accept).
pub(crate) fn new_secret_b32() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut secret = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut secret);
    BASE32_NOPAD.encode(&secret)
}

/// The secret's bytes; `None` when the text is not base32 (spaces and
/// lower case are accepted, as people copy them).
pub(crate) fn decode_secret(b32: &str) -> Option<Vec<u8>> {
    if b32.len() > SECRET_B32_CHARS_MAX {
        return None;
    }
    let clean: String = b32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    BASE32_NOPAD
        .decode(clean.as_bytes())
        .ok()
        .filter(|s| !s.is_empty())
}

/// The HOTP value of `secret` at `counter` (RFC 4226 section 5.3), with
/// `digits` digits (6 to 8).
pub(crate) fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    assert!((6..=8).contains(&digits));
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length");
    };
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// The step that contains `now_s`.
pub(crate) fn step_at(now_s: u64) -> u64 {
    now_s / STEP_S
}

/// The 6-digit code at `now_s`, zero-padded.
#[cfg(test)]
pub(crate) fn code_at(secret: &[u8], now_s: u64) -> String {
    format!("{:06}", hotp(secret, step_at(now_s), DIGITS))
}

/// The step `code` matches at `now_s` (within [`SKEW_STEPS`]), when it is
/// after `last_step` (the last one accepted for this operator): a code
/// works once. `None` when it does not match, is not 6 digits, or was
/// used.
pub(crate) fn verify(secret: &[u8], code: &str, now_s: u64, last_step: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let typed: u32 = code.parse().ok()?;
    let now = step_at(now_s);
    let first = now.saturating_sub(SKEW_STEPS);
    // Every candidate is computed, so timing says nothing of which matched.
    let mut found = None;
    for step in first..=now.saturating_add(SKEW_STEPS) {
        let fresh = last_step.is_none_or(|last| step > last);
        if hotp(secret, step, DIGITS) == typed && fresh && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// The `otpauth://` URI an authenticator app reads (from a QR code or
/// typed): the issuer and the operator name label the entry.
pub(crate) fn otpauth_uri(issuer: &str, name: &str, secret_b32: &str) -> String {
    let enc = crate::html::url_param;
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_S}",
        enc(issuer),
        enc(name),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        for (time_s, expected) in [
            (59, 94_287_082),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(RFC_SECRET, step_at(time_s), 8), expected, "T={time_s}");
            let six = format!("{:06}", expected % 1_000_000);
            assert_eq!(code_at(RFC_SECRET, time_s), six, "T={time_s}");
        }
    }

    #[test]
    fn rfc_4226_appendix_d_vectors() {
        let expected = [755_224, 287_082, 359_152, 969_429, 338_314];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), *code);
        }
    }

    #[test]
    fn one_step_either_side_and_each_step_once() {
        let now_s = 1_111_111_111;
        let before = code_at(RFC_SECRET, now_s - STEP_S);
        let after = code_at(RFC_SECRET, now_s + STEP_S);
        let far = code_at(RFC_SECRET, now_s - 2 * STEP_S);
        let step = step_at(now_s);
        assert_eq!(verify(RFC_SECRET, &before, now_s, None), Some(step - 1));
        assert_eq!(verify(RFC_SECRET, &after, now_s, None), Some(step + 1));
        assert_eq!(verify(RFC_SECRET, &far, now_s, None), None, "two steps");
        let now = code_at(RFC_SECRET, now_s);
        assert_eq!(verify(RFC_SECRET, &now, now_s, None), Some(step));
        assert_eq!(verify(RFC_SECRET, &now, now_s, Some(step)), None, "used");
        assert_eq!(
            verify(RFC_SECRET, &before, now_s, Some(step)),
            None,
            "older than the last used"
        );
        for bad in ["", "12345", "1234567", "12a456", "-12345"] {
            assert_eq!(verify(RFC_SECRET, bad, now_s, None), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_round_trip_through_base32() {
        let b32 = new_secret_b32();
        assert_eq!(b32.len(), 32);
        let bytes = decode_secret(&b32).expect("base32");
        assert_eq!(bytes.len(), SECRET_BYTES);
        let spaced = b32.to_lowercase().replace("", " ");
        assert_eq!(decode_secret(&spaced), Some(bytes));
        assert_eq!(decode_secret("not base32!"), None);
        assert_eq!(decode_secret(""), None);
        let uri = otpauth_uri("Virtual terminal", "alice@x", &b32);
        assert!(uri.starts_with("otpauth://totp/Virtual%20terminal:alice%40x?secret="));
        assert!(uri.contains("&period=30") && uri.contains("&digits=6"));
    }
}
