//! Operator passwords: Argon2id hashes in the configuration, verified off
//! the async threads, a bounded number at a time, with a lockout after
//! repeated failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::config::Operator;

/// Argon2 verifications running at once: each takes tens of milliseconds
/// and 19 MiB, so a flood of sign-ins queues instead of exhausting the
/// machine.
const VERIFICATIONS_MAX: usize = 2;
/// Failed sign-ins for one operator name before it is locked out.
pub(crate) const FAILURES_MAX: u32 = 5;
/// How long a lockout lasts, and the window failures are counted in.
pub(crate) const LOCKOUT_S: u64 = 300;
/// Longest password accepted: Argon2 takes any length, the form does not.
pub(crate) const PASSWORD_BYTES_MAX: usize = 256;

/// Hashes a password for the configuration (Argon2id, default parameters,
/// random salt).
///
/// # Errors
/// When the password is empty or longer than 256 bytes, or hashing fails.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !password.is_empty() && password.len() <= PASSWORD_BYTES_MAX,
        "the password must have 1..={PASSWORD_BYTES_MAX} bytes"
    );
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Failures of one operator name within the current window.
#[derive(Clone, Copy, Debug)]
struct Failures {
    /// Failures counted since `since_s`.
    count: u32,
    /// Start of the window.
    since_s: u64,
}

/// Checks operators' passwords.
#[derive(Debug)]
pub(crate) struct Passwords {
    /// name → Argon2 PHC string, from the configuration.
    hashes: HashMap<String, String>,
    /// Verified for unknown names, so an unknown name takes as long as a
    /// wrong password and names cannot be probed by timing.
    dummy_hash: String,
    /// Bounds concurrent verifications (`VERIFICATIONS_MAX`).
    permits: Arc<Semaphore>,
    /// Recent failures of configured names (at most one entry per
    /// operator, so bounded by `OPERATORS_MAX`).
    failures: Mutex<HashMap<String, Failures>>,
}

/// The result of a sign-in attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Name and password match.
    Accepted,
    /// Unknown name or wrong password: the page does not say which.
    Refused,
    /// Too many recent failures for this name.
    LockedOut,
}

impl Passwords {
    /// From the configured operators.
    pub(crate) fn new(operators: &[Operator]) -> Passwords {
        let hashes = operators
            .iter()
            .map(|o| (o.name.clone(), o.password_hash.clone()))
            .collect();
        let dummy_hash = operators
            .first()
            .map(|o| o.password_hash.clone())
            .unwrap_or_default();
        Passwords {
            hashes,
            dummy_hash,
            permits: Arc::new(Semaphore::new(VERIFICATIONS_MAX)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn locked_out(&self, name: &str, now_s: u64) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(name)
            .is_some_and(|f| f.count >= FAILURES_MAX && now_s < f.since_s.saturating_add(LOCKOUT_S))
    }

    fn record(&self, name: &str, accepted: bool, now_s: u64) {
        if !self.hashes.contains_key(name) {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if accepted {
            failures.remove(name);
            return;
        }
        let entry = failures.entry(name.to_string()).or_insert(Failures {
            count: 0,
            since_s: now_s,
        });
        if now_s >= entry.since_s.saturating_add(LOCKOUT_S) {
            *entry = Failures {
                count: 0,
                since_s: now_s,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count == FAILURES_MAX {
            tracing::warn!(
                operator = name,
                lockout_s = LOCKOUT_S,
                "sign-in failures: operator locked out"
            );
        }
    }

    /// Checks `password` for `name`.
    pub(crate) async fn verify(&self, name: &str, password: &str, now_s: u64) -> Verdict {
        if self.locked_out(name, now_s) {
            return Verdict::LockedOut;
        }
        let known = self.hashes.get(name);
        let hash = known.unwrap_or(&self.dummy_hash).clone();
        let password = password.to_string();
        let Ok(_permit) = self.permits.acquire().await else {
            return Verdict::Refused;
        };
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        let accepted = matches && known.is_some();
        self.record(name, accepted, now_s);
        if accepted {
            Verdict::Accepted
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        Passwords::new(&[Operator {
            name: "alice".into(),
            password_hash: hash,
        }])
    }

    #[tokio::test]
    async fn right_and_wrong_passwords() {
        let p = passwords();
        assert_eq!(
            p.verify("alice", "correct horse", 0).await,
            Verdict::Accepted
        );
        assert_eq!(p.verify("alice", "wrong", 0).await, Verdict::Refused);
        assert_eq!(p.verify("bob", "correct horse", 0).await, Verdict::Refused);
        assert_eq!(p.verify("", "", 0).await, Verdict::Refused);
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_name_out_for_a_while() {
        let p = passwords();
        for _ in 0..FAILURES_MAX {
            assert_eq!(p.verify("alice", "wrong", 10).await, Verdict::Refused);
        }
        assert_eq!(
            p.verify("alice", "correct horse", 11).await,
            Verdict::LockedOut
        );
        assert_eq!(
            p.verify("alice", "correct horse", 10 + LOCKOUT_S).await,
            Verdict::Accepted
        );
        assert!(hash_password("").is_err());
    }
}
