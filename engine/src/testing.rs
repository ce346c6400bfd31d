//! A fixture for the engine's own tests: the contract's two demo merchants
//! (as the switch's embedded default configures them) and the embedded
//! risk policy, without a journal.

use codecs::card::TokenKey;

use crate::command::{Command, Fetch, Fetched, Reply, Request, Wait};
use crate::engine::Engine;
use crate::merchant::{Merchant, Settings};

/// Most lookups one message asks of the archive: its answer, then its
/// original (again when the first copy may be stale).
const LOOKUPS_MAX: usize = 3;

/// Applies message `req` at `now_ms`, answering the engine's archive
/// lookups as an empty archive would (what a switch without archived
/// payments sees).
pub(crate) fn apply_message(e: &Engine, req: Request<'_>, now_ms: u64) -> Reply {
    let mut fetched = Fetched::default();
    let mut reply = e.apply(Command::Message(req), now_ms);
    for _ in 0..LOOKUPS_MAX {
        let Wait::Archive(fetch) = reply.wait else {
            return reply;
        };
        match fetch {
            Fetch::Answer(_) => fetched.answer = Some(None),
            _ => fetched.original = Some(None),
        }
        let resume = Command::Resume {
            request: req,
            fetched: &fetched,
        };
        reply = e.apply(resume, now_ms);
    }
    reply
}

/// Merchant `id` with `terminals`.
pub(crate) fn merchant(
    id: &[u8; 15],
    terminals: Vec<[u8; 8]>,
    currencies: Vec<u16>,
    pct: u32,
    refunds: bool,
) -> Merchant {
    Merchant {
        id: *id,
        terminals,
        enabled: true,
        currencies,
        over_capture_pct: pct,
        refunds_allowed: refunds,
        moto_allowed: true,
        hold_period_ms: 168 * 3_600_000,
        auto_capture_ms: None,
    }
}

/// The engine of the demo merchants at `now_ms`.
pub(crate) fn engine(now_ms: u64) -> Engine {
    let terminals = (1..=10)
        .map(|i| {
            let mut t = *b"DEMO0000";
            t[6] = b'0' + (i / 10) as u8;
            t[7] = b'0' + (i % 10) as u8;
            t
        })
        .collect();
    let settings = Settings {
        merchants: vec![
            merchant(b"DEMO00000000001", terminals, vec![978, 840, 752], 20, true),
            merchant(b"DEMO00000000002", vec![*b"DEMO0101"], vec![978], 0, false),
        ],
        payments_max: 1_000_000,
        idempotency_entries_max: 1_000_000,
        idempotency_window_ms: 3_600_000,
        routing: Default::default(),
        stand_in: Default::default(),
        forwards_max: 1_000,
        saf_max: 1_000,
    };
    let key = TokenKey::new(b"test");
    let policy = risk::Policy::embedded(&crate::risk::tokenizer(&key));
    Engine::new(settings, key, policy, now_ms)
}
