//! `vterm operators ...`: the operator store from the command line, while
//! the terminal runs or not. Passwords are read from standard input (one
//! line), never from the command line, where `ps` would show them.

use std::io::BufRead;

use anyhow::Context;

use crate::config::Config;
use crate::password::hash_password;
use crate::role::Role;
use crate::store::{self, Change, Store};

/// The `operators` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum OperatorsCommand {
    /// Adds an operator; the password is the first line of standard input.
    Add {
        /// Sign-in name: letters, digits, `._@-`.
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
    },
    /// Blocks an operator: no sign-in, and live sessions end.
    Block {
        /// The operator.
        name: String,
    },
    /// Lets a blocked operator sign in again.
    Unblock {
        /// The operator.
        name: String,
    },
    /// Sets a new password (first line of standard input); sessions end.
    Reset {
        /// The operator.
        name: String,
        /// Also clears the second factor (a lost phone): the operator
        /// enrols again (admins must, at their next sign-in).
        #[arg(long)]
        clear_totp: bool,
    },
    /// Changes an operator's role; sessions end.
    Role {
        /// The operator.
        name: String,
        /// viewer, operator or admin.
        role: String,
    },
    /// Lists the operators: name, role, state, second factor.
    List,
}

fn role(text: &str) -> anyhow::Result<Role> {
    Role::parse(text).with_context(|| format!("role `{text}`: expected viewer, operator or admin"))
}

fn read_password(config: &Config, name: &str, stdin: &mut dyn BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    config
        .policy()
        .check(name, &password)
        .map_err(anyhow::Error::msg)?;
    hash_password(&password)
}

/// Who the audit log names for a command: `cli:<login name>`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("cli:{user}")
}

/// Runs one command against the store of `config`; returns what to print.
///
/// # Errors
/// A refused change (with the reason), a password the policy refuses, or
/// the store's file error.
pub fn operators(
    config: &Config,
    command: OperatorsCommand,
    stdin: &mut dyn BufRead,
    now_s: u64,
) -> anyhow::Result<String> {
    let path = config
        .operators_file
        .clone()
        .context("operators_file: the configuration names no operator store")?;
    let store = Store::open(Some(path.clone()), &config.operators, now_s)?;
    let (change, done) = match command {
        OperatorsCommand::List => return list(&path),
        OperatorsCommand::Add { name, role: r } => {
            let r = role(&r)?;
            let hash = read_password(config, &name, stdin)?;
            let done = format!("added {name} as {}", r.name());
            (Change::Add(name, r, hash), done)
        }
        OperatorsCommand::Block { name } => {
            (Change::Block(name.clone(), true), format!("blocked {name}"))
        }
        OperatorsCommand::Unblock { name } => (
            Change::Block(name.clone(), false),
            format!("unblocked {name}"),
        ),
        OperatorsCommand::Reset { name, clear_totp } => {
            let hash = read_password(config, &name, stdin)?;
            let done = format!(
                "reset the password of {name}{}",
                if clear_totp {
                    " and cleared its second factor"
                } else {
                    ""
                }
            );
            (Change::Reset(name, hash, clear_totp), done)
        }
        OperatorsCommand::Role { name, role: r } => {
            let r = role(&r)?;
            let done = format!("{name} is now {}", r.name());
            (Change::SetRole(name, r), done)
        }
    };
    store.change(&actor(), change, now_s)?;
    Ok(done)
}

fn list(path: &std::path::Path) -> anyhow::Result<String> {
    let mut out = format!("{:<24} {:<8} {:<7} totp\n", "name", "role", "state");
    for r in store::list(path)? {
        let state = if r.blocked { "blocked" } else { "active" };
        let totp = if r.has_totp() { "on" } else { "off" };
        out.push_str(&format!(
            "{:<24} {:<8} {:<7} {totp}\n",
            r.name,
            r.role.name(),
            state
        ));
    }
    Ok(out.trim_end().to_string())
}
