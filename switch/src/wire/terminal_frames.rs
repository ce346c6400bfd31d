//! Terminals at run time over internal frames (`ListTerminals`,
//! `AddTerminal`, `SetTerminal`, `RemoveTerminal`): the same changes as
//! `switch terminals`, scoped to the merchants the API key acts for (a
//! merchant's key manages its own terminals only), audited under the
//! key's client id, and applied to the engine before the answer leaves.
//! A terminal of a merchant the key may not act for is answered `25`,
//! exactly like a missing one.
//!
//! A change writes and fsyncs the audit log and the directory file on the
//! connection's task: back-office changes are rare, and the answer must
//! not say "done" before the change is durable.

use codecs::internal::{ListTerminals, Request, Setting, TerminalChange, TerminalState};
use engine::Code;

use crate::directory::{Admin, DirectoryError, State, TerminalPatch, TerminalView};
use crate::node::Node;

/// Page size of a terminal list without `limit`.
const TERMINAL_ROWS_DEFAULT: usize = 20;

const _: () = assert!(TERMINAL_ROWS_DEFAULT <= codecs::internal::TERMINAL_ROWS_MAX);

/// What a terminal request is answered.
pub(crate) struct TerminalAnswer {
    /// Result code.
    pub(crate) code: Code,
    /// For people.
    pub(crate) message: String,
    /// The page, or the terminal changed.
    pub(crate) terminals: Vec<TerminalView>,
    /// Cursor of the next page.
    pub(crate) next_cursor: Option<u64>,
}

impl TerminalAnswer {
    fn refusal(code: Code, message: impl Into<String>) -> TerminalAnswer {
        TerminalAnswer {
            code,
            message: message.into(),
            terminals: Vec::new(),
            next_cursor: None,
        }
    }
}

/// The code and message for a refused change.
fn refused(e: &DirectoryError) -> TerminalAnswer {
    let (code, message) = refusal(e);
    TerminalAnswer::refusal(code, message)
}

/// The code and message (at most 255 bytes) for a refused directory
/// change or read, terminal or merchant.
pub(super) fn refusal(e: &DirectoryError) -> (Code, String) {
    let code = match e {
        DirectoryError::Invalid(_) => Code::FORMAT_ERROR,
        DirectoryError::NotFound(_) => Code::UNABLE_TO_LOCATE,
        DirectoryError::Conflict(_) | DirectoryError::Full(_) => Code::INVALID_TRANSACTION,
        DirectoryError::Io { .. }
        | DirectoryError::Corrupt { .. }
        | DirectoryError::Locked(_)
        | DirectoryError::Engine(_) => {
            crate::ratelog::warn_limited!("directory_frame", error = %e, "directory change over internal frames failed");
            Code::SYSTEM_MALFUNCTION
        }
    };
    let mut message = e.to_string();
    let mut end = message.len().min(255);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    (code, message)
}

/// Answers one terminal request of key `client_id`, acting for `mids`.
pub(crate) fn answer(
    admin: &Admin,
    node: &Node,
    client_id: &str,
    mids: &[String],
    request: &Request<'_>,
) -> TerminalAnswer {
    match request {
        Request::ListTerminals(l) => list(admin, mids, l),
        Request::AddTerminal(t) => add(admin, node, client_id, mids, t),
        Request::SetTerminal(t) => {
            let what = match t.state {
                Some(TerminalState::Enabled) => "terminal.enable",
                Some(TerminalState::Disabled) => "terminal.disable",
                _ => "terminal.set",
            };
            let patch = TerminalPatch {
                name: t.name.map(str::to_owned),
                state: t.state.map(|s| match s {
                    TerminalState::Enabled => State::Enabled,
                    TerminalState::Disabled | TerminalState::Removed => State::Disabled,
                }),
                refunds: t.refunds.map(Setting::allowed),
                moto: t.moto.map(Setting::allowed),
                cancel: t.cancel.map(Setting::allowed),
            };
            set(admin, node, client_id, mids, t.terminal_id, &patch, what)
        }
        Request::RemoveTerminal(t) => {
            let patch = TerminalPatch {
                state: Some(State::Removed),
                ..TerminalPatch::default()
            };
            set(
                admin,
                node,
                client_id,
                mids,
                t.terminal_id,
                &patch,
                "terminal.remove",
            )
        }
        _ => TerminalAnswer::refusal(Code::INVALID_TRANSACTION, "not a terminal request"),
    }
}

/// One page of the key's merchants' terminals, in directory order.
fn list(admin: &Admin, mids: &[String], l: &ListTerminals<'_>) -> TerminalAnswer {
    if let Some(mid) = l.merchant_id {
        if !mids.iter().any(|m| m == mid) {
            return TerminalAnswer::refusal(
                Code::NOT_PERMITTED_TERMINAL,
                "merchant not permitted for this key",
            );
        }
    }
    let resolved = match admin.current() {
        Ok(r) => r,
        Err(e) => return refused(&e),
    };
    let limit = l.limit.map_or(TERMINAL_ROWS_DEFAULT, usize::from);
    let start = l
        .cursor
        .map_or(0, |c| usize::try_from(c).unwrap_or(usize::MAX));
    let mut mine = resolved
        .terminals
        .into_iter()
        .filter(|t| mids.contains(&t.merchant))
        .filter(|t| l.merchant_id.is_none_or(|m| m == t.merchant))
        .skip(start);
    let terminals: Vec<TerminalView> = mine.by_ref().take(limit).collect();
    let more = mine.next().is_some();
    TerminalAnswer {
        code: Code::APPROVED,
        message: "ok".into(),
        next_cursor: more.then(|| (start + terminals.len()) as u64),
        terminals,
    }
}

/// Adds a terminal to the merchant named, or the key's only one.
fn add(
    admin: &Admin,
    node: &Node,
    client_id: &str,
    mids: &[String],
    t: &TerminalChange<'_>,
) -> TerminalAnswer {
    let mid = match (t.merchant_id, mids) {
        (Some(mid), _) if mids.iter().any(|m| m == mid) => mid,
        (Some(_), _) => {
            return TerminalAnswer::refusal(
                Code::NOT_PERMITTED_TERMINAL,
                "merchant not permitted for this key",
            )
        }
        (None, [only]) => only.as_str(),
        (None, _) => {
            return TerminalAnswer::refusal(
                Code::FORMAT_ERROR,
                "merchant_id: required for a key acting for several merchants",
            )
        }
    };
    let name = t.name.unwrap_or_default();
    match admin.add_terminal(client_id, t.terminal_id, mid, name) {
        Ok(r) => done(node, r, t.terminal_id),
        Err(e) => refused(&e),
    }
}

/// Changes a terminal of one of the key's merchants.
fn set(
    admin: &Admin,
    node: &Node,
    client_id: &str,
    mids: &[String],
    tid: &str,
    patch: &TerminalPatch,
    what: &'static str,
) -> TerminalAnswer {
    let theirs = admin.current().map(|r| {
        r.terminals
            .iter()
            .any(|t| t.id == tid && mids.contains(&t.merchant))
    });
    match theirs {
        Ok(true) => {}
        Ok(false) => return TerminalAnswer::refusal(Code::UNABLE_TO_LOCATE, "no such terminal"),
        Err(e) => return refused(&e),
    }
    match admin.set_terminal(client_id, tid, patch, what) {
        Ok(r) => done(node, r, tid),
        Err(e) => refused(&e),
    }
}

/// Applies the change now (not at the next poll) and answers with the
/// terminal as it stands.
fn done(node: &Node, resolved: crate::directory::Resolved, tid: &str) -> TerminalAnswer {
    node.reload_directory();
    TerminalAnswer {
        code: Code::APPROVED,
        message: "ok".into(),
        terminals: resolved
            .terminals
            .into_iter()
            .filter(|t| t.id == tid)
            .collect(),
        next_cursor: None,
    }
}
