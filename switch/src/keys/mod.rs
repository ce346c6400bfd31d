//! API keys and service-provider mandates: who may use the internal-frame
//! listener, and for which merchants.
//!
//! Both live in one file, `<data_dir>/keys.json` (mode 0600), written
//! atomically by the `switch keys` and `switch mandates` commands (temp
//! file, fsync, rename, fsync of the directory) under a lock file, so the
//! server never sees half a file. The server checks the file's identity
//! (inode, size, modification time) on every request and re-reads it when
//! it changed: a revoked key or mandate is refused on the next request.
//!
//! A key belongs to a merchant (its MID) or to a service provider (a
//! provider id in the client-id form, `XX-0000-0000`). A provider key acts
//! for exactly the merchants whose mandates to that provider are in force.
//!
//! Secrets are 32 bytes from `/dev/urandom`, given to the operator once as
//! 64 hex characters; only their SHA-256 is stored, with the first and last
//! 3 characters for display. A fast hash is enough because the secret has
//! 256 bits of entropy: there is nothing to guess with a dictionary, so a
//! slow password hash would only slow down every log-in. Comparison is
//! constant-time. Failed log-ins (`switch_auth_failures_total{reason}`) are
//! counted by (client id, address) and by address, so they lock out that
//! pair, or that address, and never the key from elsewhere (`lockout`).
//! Log lines name the client id and peer, never the secret.
//!
//! Layout: `file` (the JSON format, limits, lock file, atomic write),
//! `store` (the server's [`KeyStore`]), `admin` (the commands'
//! [`KeyAdmin`]), `lockout` (failed log-ins by pair and by address).

mod admin;
mod file;
mod lockout;
mod store;
#[cfg(test)]
mod tests;

pub use admin::{KeyAdmin, KeyInfo, NewKey};
pub(crate) use file::{random, write_atomic, LockFile};
pub use file::{KeysError, Mandate, Owner, Scope};
pub(crate) use store::{KeyStore, Refusal};
