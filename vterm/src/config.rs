//! The terminal's configuration: a TOML file (`--config`), checked as a
//! whole at start-up so a bad value stops the program with its name.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::money::Currency;
use crate::policy::{Policy, CLASSES_MIN_DEFAULT, MIN_CHARS_DEFAULT, MIN_CHARS_FLOOR};
use crate::role::Role;

/// Most operators one terminal has, in `vterm.toml` and in the operator
/// store together: the admin page lists them all.
pub(crate) const OPERATORS_MAX: usize = 1_000;
/// The operator store's file name, beside the configuration file, when
/// `operators_file` is not set.
pub(crate) const OPERATORS_FILE_DEFAULT: &str = "vterm-operators.json";
/// Longest password any configuration may require.
const PASSWORD_MIN_CHARS_LIMIT: usize = 128;
/// Most signed-in sessions by default.
pub(crate) const SESSIONS_MAX_DEFAULT: usize = 1_000;
/// Most signed-in sessions any configuration may ask for: each is a few
/// hundred bytes held in memory.
pub(crate) const SESSIONS_MAX_LIMIT: usize = 100_000;
/// Most terminal ids the form offers.
const TERMINALS_MAX: usize = 100;
/// Most trusted proxies: the list is scanned per sign-in.
pub(crate) const TRUSTED_PROXIES_MAX: usize = 16;
/// Longest operator name.
pub(crate) const OPERATOR_NAME_BYTES_MAX: usize = 64;

/// Why the configuration was refused: the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape.
    #[error("parsing the configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value out of its range or inconsistent with another.
    #[error("configuration key `{key}`: {expected}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What was expected.
        expected: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the web server listens (put a TLS-terminating proxy in front
    /// of anything but loopback).
    pub listen_addr: SocketAddr,
    /// Add `Secure` to cookies: set it when browsers reach the terminal
    /// over HTTPS.
    #[serde(default)]
    pub secure_cookies: bool,
    /// The switch's internal-frame listener.
    pub switch_addr: SocketAddr,
    /// The merchant's key: client id (`XX-0000-0000`).
    pub client_id: String,
    /// The merchant's key: its secret, as `switch keys create` prints it.
    pub secret: String,
    /// Terminal ids (ISO 8583 F41) the form offers; the first is the default.
    pub terminals: Vec<String>,
    /// ISO 4217 numeric currencies the form offers; the first is the default.
    pub currencies: Vec<u16>,
    /// A session ends after this long without a request.
    #[serde(default = "default_session_idle_s")]
    pub session_idle_s: u64,
    /// A session ends this long after sign-in, used or not.
    #[serde(default = "default_session_lifetime_s")]
    pub session_lifetime_s: u64,
    /// Most signed-in sessions at once; sign-in is refused beyond.
    #[serde(default = "default_sessions_max")]
    pub sessions_max: usize,
    /// Addresses of the TLS proxies in front of the terminal: a sign-in
    /// that comes through one of them is counted for lockouts by the
    /// client address the proxy adds to `X-Forwarded-For`; from any other
    /// peer that header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// The operator store (JSON), changed at run time by `vterm
    /// operators` and the admin pages. Default: `vterm-operators.json`
    /// beside the configuration file; a configuration given as text
    /// without it keeps the store in memory.
    #[serde(default)]
    pub operators_file: Option<PathBuf>,
    /// Least characters in a password set through the terminal.
    #[serde(default = "default_password_min_chars")]
    pub password_min_chars: usize,
    /// Least character classes (lower, upper, digits, others) in a
    /// password set through the terminal.
    #[serde(default = "default_password_classes_min")]
    pub password_classes_min: usize,
    /// Operators added to the store at start when it does not hold their
    /// name (then the store rules).
    #[serde(default)]
    pub operators: Vec<Operator>,
}

/// An operator who may sign in.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Sign-in name.
    pub name: String,
    /// Argon2 PHC string, from `vterm hash-password`.
    pub password_hash: String,
    /// What the operator may do; `admin` when not given, as before roles.
    #[serde(default = "default_role")]
    pub role: Role,
}

/// Whether `name` is a valid operator name: 1..=64 bytes of letters,
/// digits and `._@-`.
pub(crate) fn valid_operator_name(name: &str) -> bool {
    (1..=OPERATOR_NAME_BYTES_MAX).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._@-".contains(c))
}

fn default_role() -> Role {
    Role::Admin
}

fn default_password_min_chars() -> usize {
    MIN_CHARS_DEFAULT
}

fn default_password_classes_min() -> usize {
    CLASSES_MIN_DEFAULT
}

fn default_session_idle_s() -> u64 {
    15 * 60
}

fn default_session_lifetime_s() -> u64 {
    8 * 3600
}

fn default_sessions_max() -> usize {
    SESSIONS_MAX_DEFAULT
}

fn invalid(key: &'static str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        expected: expected.into(),
    }
}

impl Config {
    /// Reads and checks a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text)?;
        if config.operators_file.is_none() {
            let dir = path.parent().unwrap_or(Path::new("."));
            config.operators_file = Some(dir.join(OPERATORS_FILE_DEFAULT));
        }
        Ok(config)
    }

    /// The password policy.
    pub(crate) fn policy(&self) -> Policy {
        Policy {
            min_chars: self.password_min_chars,
            classes_min: self.password_classes_min,
        }
    }

    /// Parses and checks configuration text.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let id = self.client_id.as_bytes();
        let id_ok = id.len() == 12
            && id[..2].iter().all(u8::is_ascii_uppercase)
            && id[2] == b'-'
            && id[7] == b'-'
            && id[3..7].iter().chain(&id[8..]).all(u8::is_ascii_digit);
        if !id_ok {
            return Err(invalid(
                "client_id",
                "XX-0000-0000: two upper-case letters, four digits, four digits",
            ));
        }
        if !(16..=64).contains(&self.secret.len()) {
            return Err(invalid(
                "secret",
                "the key's secret as printed when it was created",
            ));
        }
        let terminal_ok = |t: &String| {
            (1..=8).contains(&t.len()) && t.bytes().all(|b| (0x20..=0x7e).contains(&b))
        };
        if self.terminals.is_empty()
            || self.terminals.len() > TERMINALS_MAX
            || !self.terminals.iter().all(terminal_ok)
        {
            return Err(invalid(
                "terminals",
                format!("1..={TERMINALS_MAX} terminal ids of 1..=8 printable characters"),
            ));
        }
        if self.currencies.is_empty()
            || !self
                .currencies
                .iter()
                .all(|c| Currency::by_numeric(*c).is_some())
        {
            return Err(invalid(
                "currencies",
                "at least one ISO 4217 numeric code the terminal knows (978, 840, 826...)",
            ));
        }
        if self.session_idle_s == 0 || self.session_lifetime_s < self.session_idle_s {
            return Err(invalid(
                "session_idle_s",
                "above 0 and not above session_lifetime_s",
            ));
        }
        if self.trusted_proxies.len() > TRUSTED_PROXIES_MAX {
            return Err(invalid(
                "trusted_proxies",
                format!("at most {TRUSTED_PROXIES_MAX} addresses"),
            ));
        }
        if !(1..=SESSIONS_MAX_LIMIT).contains(&self.sessions_max) {
            return Err(invalid("sessions_max", format!("1..={SESSIONS_MAX_LIMIT}")));
        }
        self.check_operators()
    }

    fn check_operators(&self) -> Result<(), ConfigError> {
        if !(MIN_CHARS_FLOOR..=PASSWORD_MIN_CHARS_LIMIT).contains(&self.password_min_chars) {
            return Err(invalid(
                "password_min_chars",
                format!("{MIN_CHARS_FLOOR}..={PASSWORD_MIN_CHARS_LIMIT}"),
            ));
        }
        if !(1..=4).contains(&self.password_classes_min) {
            return Err(invalid("password_classes_min", "1..=4"));
        }
        let least = usize::from(self.operators_file.is_none());
        if self.operators.len() < least || self.operators.len() > OPERATORS_MAX {
            return Err(invalid(
                "operators",
                format!(
                    "{least}..={OPERATORS_MAX} operators (at least one without operators_file)"
                ),
            ));
        }
        for (i, operator) in self.operators.iter().enumerate() {
            if !valid_operator_name(&operator.name) {
                return Err(invalid(
                    "operators.name",
                    format!("1..={OPERATOR_NAME_BYTES_MAX} letters, digits, `._@-`"),
                ));
            }
            if self.operators[..i].iter().any(|o| o.name == operator.name) {
                return Err(invalid(
                    "operators.name",
                    format!("unique names; `{}` is repeated", operator.name),
                ));
            }
            if argon2::PasswordHash::new(&operator.password_hash).is_err() {
                return Err(invalid(
                    "operators.password_hash",
                    format!(
                        "an Argon2 PHC string from `vterm hash-password` for `{}`",
                        operator.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0jRGZcxBpeaDh9W0Oc0OnOpLzNyEDvxyr7GfZTTsPFE";

    fn text(edit: &str) -> String {
        format!(
            r#"
listen_addr = "127.0.0.1:0"
switch_addr = "127.0.0.1:8584"
client_id = "DM-0001-0001"
secret = "0123456789abcdef0123456789abcdef"
terminals = ["DEMO0001"]
currencies = [978]
{edit}
[[operators]]
name = "alice"
password_hash = "{HASH}"
"#
        )
    }

    #[test]
    fn a_good_configuration_loads_with_defaults() {
        let config = Config::parse(&text("")).expect("valid");
        assert_eq!(config.session_idle_s, 900);
        assert_eq!(config.sessions_max, SESSIONS_MAX_DEFAULT);
        assert!(!config.secure_cookies);
        assert_eq!(config.operators[0].role, Role::Admin, "as before roles");
        assert_eq!(config.password_min_chars, 12);
        assert!(config.operators_file.is_none(), "in memory from text");
    }

    #[test]
    fn bad_values_are_named() {
        for (edit, key) in [
            ("sessions_max = 0", "sessions_max"),
            ("session_idle_s = 0", "session_idle_s"),
            ("session_lifetime_s = 10", "session_idle_s"),
            ("password_min_chars = 4", "password_min_chars"),
            ("password_classes_min = 5", "password_classes_min"),
        ] {
            let error = Config::parse(&text(edit)).expect_err(edit).to_string();
            assert!(error.contains(key), "{error}");
        }
        let error = Config::parse(&text("").replace("DM-0001-0001", "dm-1"))
            .expect_err("id")
            .to_string();
        assert!(error.contains("client_id"), "{error}");
        let error = Config::parse(&text("").replace("[978]", "[999]"))
            .expect_err("currency")
            .to_string();
        assert!(error.contains("currencies"), "{error}");
        let error = Config::parse(&text("").replace(HASH, "plain"))
            .expect_err("hash")
            .to_string();
        assert!(error.contains("password_hash"), "{error}");
        let error = Config::parse(&(text("") + "role = \"root\"\n"))
            .expect_err("role")
            .to_string();
        assert!(
            error.contains("role") || error.contains("variant"),
            "{error}"
        );
        let error = Config::parse(&text("colour = 1"))
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("colour"), "{error}");
    }
}
