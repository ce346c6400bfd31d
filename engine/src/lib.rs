//! The switch's deterministic core, sans I/O: validate → risk → lifecycle →
//! journal record, over lock-free in-memory state. It never touches a
//! socket, a file, an async runtime or a clock: every call takes `now_ms`,
//! and records leave through the [`Journal`] trait the shell implements.
//! The compiler enforces this (no tokio in `Cargo.toml`).
//!
//! One mutating door, [`Engine::apply`] ([`Command`] → [`Reply`]), for
//! every change: payment messages, refunds by cart line, marking scam, the
//! timers. One read door, [`Engine::query`] ([`Query`] → [`QueryReply`]).
//! Recovery replays records and snapshots ([`Engine::replay_record`],
//! [`Engine::replay_snapshot`]).
//!
//! Layout (one module per concept):
//! - `command`: the door's types; `code`: response codes.
//! - `directory`: merchants and terminals, replaced at run time.
//! - `engine`: the tables and the doors; `authorize`, `follow_up`,
//!   `backoffice`, `timers`, `increment`: each command's stages.
//! - `commit`: the one sequence every change goes through (epoch guard,
//!   transition, record, roll back).
//! - `lifecycle`: the pure payment transitions; `state`: the sharded maps;
//!   `idempotency`: answers for repeats; `risk`: the risk stage.
//! - `record`: the journal's record and snapshot format; `recovery`.
//! - `events`: the webhook event of a journal record (pure).

mod authorize;
mod backoffice;
mod bytes;
pub mod code;
pub mod command;
mod commit;
pub mod directory;
mod engine;
pub mod events;
mod follow_up;
mod forward;
mod holds;
mod idempotency;
mod increment;
pub mod lifecycle;
mod merchant;
#[cfg(test)]
mod props;
pub mod record;
mod recovery;
mod risk;
mod state;
#[cfg(test)]
mod testing;
mod timers;
pub mod upstream;
pub mod velocity;

pub use code::Code;
pub use command::{
    Channel, Command, Fetch, Fetched, Fill, ListFilter, MerchantRef, Op, OriginalRef, Query,
    QueryReply, Reply, Request, Stats, Wait,
};
pub use commit::{Journal, NoJournal};
pub use directory::{Directory, DirectoryError, Terminal, TerminalState};
pub use engine::{Engine, NUMBERS_PER_BLOCK, NUMBER_BLOCKS_MAX};
pub use idempotency::{Answer, MessageKey};
pub use lifecycle::{
    CartItem, Extras, FlagNotes, Increment, LineRefund, More, Payment, Status,
    CAPTURES_PER_PAYMENT_MAX, CART_LINES_MAX, INCREMENTS_PER_PAYMENT_MAX, TEXT_BYTES_MAX,
};
pub use merchant::{Merchant, Settings};
pub use recovery::ReplayError;
pub use risk::tokenizer;
pub use state::{OriginalKey, Target};
pub use timers::HOLD_RETRY_MS;
