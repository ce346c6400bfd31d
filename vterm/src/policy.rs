//! The password policy for passwords set through the terminal (adding an
//! operator, a reset, a change of one's own): a minimum length, a minimum
//! number of character classes, not the operator's name, and not one of
//! the most common passwords. Hashes written into `vterm.toml` by hand are
//! not checked (their passwords are not known).
//!
//! No breached-password list ships here: the crates that carry one either
//! call a network service or weigh far more than this check; a built-in
//! list of the most common passwords catches the first guesses.

use crate::password::PASSWORD_BYTES_MAX;

/// Default minimum length, in characters (`password_min_chars`).
pub(crate) const MIN_CHARS_DEFAULT: usize = 12;
/// Least minimum any configuration may set.
pub(crate) const MIN_CHARS_FLOOR: usize = 8;
/// Default number of character classes (`password_classes_min`): two, so
/// long passphrases of words and spaces pass.
pub(crate) const CLASSES_MIN_DEFAULT: usize = 2;

/// The most common passwords (lower case), refused whatever the length
/// rules say; also refused with digits or symbols added at the end.
const COMMON: &[&str] = &[
    "123456789012",
    "1234567890123",
    "qwertyuiop12",
    "passwordpassword",
    "password1234",
    "password12345",
    "password123456",
    "passw0rd1234",
    "iloveyou1234",
    "qwertyuiopasdf",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "1qaz2wsx3edc",
    "abc123456789",
    "welcome12345",
    "administrator",
    "letmein12345",
    "changeme1234",
    "trustno11234",
    "aaaaaaaaaaaa",
    "111111111111",
    "000000000000",
    "azertyuiop12",
    "football1234",
    "baseball1234",
    "superman1234",
    "sunshine1234",
    "princess1234",
    "dragon123456",
    "monkey123456",
    "master123456",
    "shadow123456",
    "michael12345",
    "jennifer1234",
    "whatever1234",
    "starwars1234",
    "computer1234",
    "internet1234",
    "correcthorse",
    "correcthorsebatterystaple",
    "qwertyqwerty",
    "asdfghjkl123",
    "zxcvbnm12345",
    "p@ssw0rd1234",
    "p@ssword1234",
    "password",
    "passw0rd",
    "p@ssw0rd",
    "qwerty",
    "qwertyuiop",
    "123456",
    "12345678",
    "123456789",
    "1234567890",
    "iloveyou",
    "admin",
    "welcome",
    "letmein",
    "changeme",
    "virtualterminal",
    "terminal",
    "operator",
    "cashier",
    "payments",
    "merchant",
];

/// The configured rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// `password_min_chars`.
    pub(crate) min_chars: usize,
    /// `password_classes_min`, 1..=4.
    pub(crate) classes_min: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            min_chars: MIN_CHARS_DEFAULT,
            classes_min: CLASSES_MIN_DEFAULT,
        }
    }
}

/// Character classes in `password`: lower case, upper case, digits, and
/// everything else (spaces and symbols).
fn classes(password: &str) -> usize {
    let tests: [fn(&char) -> bool; 4] = [
        |c| c.is_lowercase(),
        |c| c.is_uppercase(),
        |c| c.is_ascii_digit(),
        |c| !c.is_alphanumeric(),
    ];
    tests
        .iter()
        .filter(|t| password.chars().any(|c| t(&c)))
        .count()
}

impl Policy {
    /// Checks a new password for operator `name`.
    ///
    /// # Errors
    /// A sentence for the person who typed it: what is missing.
    pub(crate) fn check(&self, name: &str, password: &str) -> Result<(), String> {
        let chars = password.chars().count();
        if chars < self.min_chars {
            return Err(format!(
                "The password is too short: at least {} characters (this one has {chars}).",
                self.min_chars
            ));
        }
        if password.len() > PASSWORD_BYTES_MAX {
            return Err(format!(
                "The password is too long: at most {PASSWORD_BYTES_MAX} bytes."
            ));
        }
        if password.chars().any(char::is_control) {
            return Err("The password may not hold control characters.".to_string());
        }
        let found = classes(password);
        if found < self.classes_min {
            return Err(format!(
                "The password needs characters of at least {} kinds among lower case, upper case, digits and others (spaces, symbols); it has {found}.",
                self.classes_min
            ));
        }
        let lower = password.to_lowercase();
        if !name.is_empty() && lower.contains(&name.to_lowercase()) {
            return Err("The password may not contain the operator's name.".to_string());
        }
        let stem = lower.trim_end_matches(|c: char| !c.is_alphabetic());
        if COMMON.contains(&lower.as_str()) || COMMON.contains(&stem) {
            return Err(
                "This password is one of the most common ones: choose another.".to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_classes_name_and_common_passwords_are_refused() {
        let p = Policy::default();
        assert!(p.check("alice", "Tr0ub4dor&3 horse").is_ok());
        assert!(p.check("alice", "a long passphrase of words").is_ok());
        let refused = [
            ("Short1!", "too short"),
            ("abcdefghijklmnop", "at least 2 kinds"),
            ("my alice password", "operator's name"),
            ("password1234", "most common"),
            ("Password12345!!", "most common"),
            ("qwertyuiop12", "most common"),
        ];
        for (password, why) in refused {
            let error = p.check("alice", password).expect_err(password);
            assert!(error.contains(why), "{password}: {error}");
        }
        let strict = Policy {
            min_chars: 16,
            classes_min: 4,
        };
        assert!(strict.check("bob", "Tr0ub4dor&3 horse").is_ok());
        let error = strict
            .check("bob", "tr0ub4dor&3 horse")
            .expect_err("3 kinds");
        assert!(error.contains("at least 4 kinds"), "{error}");
        let error = strict.check("bob", "Tr0ub4dor&3").expect_err("short");
        assert!(error.contains("at least 16 characters"), "{error}");
        assert!(
            p.check("bob", &"Ab1 ".repeat(70)).is_err(),
            "over 256 bytes"
        );
    }
}
