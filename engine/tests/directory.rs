//! Merchants and terminals replaced on a running engine
//! (`Engine::replace_directory`): a terminal that does not transact gets 58
//! for everything but reversals, a terminal's settings override its
//! merchant's, and a replacement never moves a merchant's index.

use codecs::card::{Pan, TokenKey};
use codecs::iso8583::datetime::Expiry;
use engine::{
    Channel, Code, Command, Directory, DirectoryError, Engine, Merchant, MessageKey, Op,
    OriginalRef, Query, QueryReply, Request, Settings, Status, Terminal, TerminalState,
};

/// 2026-11-23T11:49:10Z.
const NOW_MS: u64 = 1_795_434_550_000;
const MID: &[u8; 15] = b"DEMO00000000001";
const TID: [u8; 8] = *b"DEMO0001";
const OTHER_TID: [u8; 8] = *b"DEMO0002";

fn merchant() -> Merchant {
    Merchant {
        id: *MID,
        terminals: vec![TID, OTHER_TID],
        enabled: true,
        currencies: vec![978],
        over_capture_pct: 0,
        refunds_allowed: true,
        moto_allowed: true,
        hold_period_ms: 7 * 86_400_000,
        auto_capture_ms: None,
    }
}

fn engine() -> Engine {
    let settings = Settings {
        merchants: vec![merchant()],
        payments_max: 1_000,
        idempotency_entries_max: 1_000,
        idempotency_window_ms: 3_600_000,
        routing: Default::default(),
        stand_in: Default::default(),
        forwards_max: 1_000,
        saf_max: 1_000,
    };
    let key = TokenKey::new(b"directory");
    let policy = risk::Policy::embedded(&engine::tokenizer(&key));
    Engine::new(settings, key, policy, NOW_MS)
}

/// Message `op` from `tid` with STAN `stan`.
fn request(op: Op, tid: [u8; 8], stan: u32, original: Option<OriginalRef>) -> Request<'static> {
    let mti = match op {
        Op::PreAuth => 100,
        Op::Capture => 220,
        Op::Reversal => 400,
        _ => 200,
    };
    Request {
        op,
        key: Some(MessageKey {
            mti,
            terminal: tid,
            stan,
            transmission: 1_123_114_959,
        }),
        repeat: false,
        content_crc: stan,
        merchant_id: MID,
        terminal_id: tid,
        pan: original
            .is_none()
            .then(|| Pan::new(b"4111111111111111"))
            .flatten(),
        expiry: Expiry::parse(b"2812"),
        amount_minor: 1_000,
        currency: 978,
        original,
        replacement_minor: None,
        keep_open: false,
        channel: Channel::CardPresent,
        eci: None,
        rrn: None,
        extras: None,
    }
}

fn apply(e: &Engine, req: Request<'_>) -> engine::Reply {
    e.apply(Command::Message(req), NOW_MS)
}

fn status(e: &Engine, id: u64) -> Status {
    match e.query(Query::Payment { scope: &[0], id }) {
        QueryReply::Payment(Some(p)) => p.status,
        other => panic!("payment {id}: {other:?}"),
    }
}

/// The demo merchant with `terminals` as the runtime overlay.
fn directory(terminals: &[Terminal]) -> Directory {
    Directory::new(vec![merchant()], terminals).expect("valid directory")
}

fn with_state(state: TerminalState) -> Terminal {
    Terminal {
        state,
        ..Terminal::enabled(TID, 0)
    }
}

#[test]
fn a_disabled_terminal_gets_58_but_its_reversals_are_processed() {
    let e = engine();
    let sale = apply(&e, request(Op::Sale, TID, 1, None));
    let auth = apply(&e, request(Op::PreAuth, TID, 2, None));
    assert_eq!((sale.code, auth.code), (Code::APPROVED, Code::APPROVED));
    let (sale_id, auth_id) = (sale.payment_id.expect("id"), auth.payment_id.expect("id"));
    for state in [TerminalState::Disabled, TerminalState::Removed] {
        e.replace_directory(directory(&[with_state(state)]))
            .expect("swapped");
        let of = |id| Some(OriginalRef::Payment(id));
        let refused = [
            apply(&e, request(Op::PreAuth, TID, 10, None)),
            apply(&e, request(Op::Sale, TID, 11, None)),
            apply(&e, request(Op::Refund, TID, 12, of(sale_id))),
            apply(&e, request(Op::Capture, TID, 13, of(auth_id))),
        ];
        for r in refused {
            assert_eq!(r.code, Code::NOT_PERMITTED_TERMINAL, "{state:?}: {r:?}");
            assert_eq!(r.payment_id, None, "nothing made");
        }
        assert_eq!(status(&e, sale_id), Status::Succeeded, "nothing changed");
        assert_eq!(status(&e, auth_id), Status::Uncaptured, "nothing changed");
        // Its neighbour is untouched.
        let other = apply(&e, request(Op::Sale, OTHER_TID, 14, None));
        assert_eq!(other.code, Code::APPROVED);
    }
    // Removed, its reversal still releases the hold.
    let reversal = apply(
        &e,
        request(Op::Reversal, TID, 20, Some(OriginalRef::Payment(auth_id))),
    );
    assert_eq!(reversal.code, Code::APPROVED);
    assert_eq!(status(&e, auth_id), Status::Cancelled);
    // Enabled again, it approves.
    e.replace_directory(directory(&[])).expect("swapped");
    assert_eq!(
        apply(&e, request(Op::Sale, TID, 21, None)).code,
        Code::APPROVED
    );
}

#[test]
fn a_terminals_settings_override_its_merchants() {
    let e = engine();
    let sale = apply(&e, request(Op::Sale, TID, 1, None));
    let sale_id = sale.payment_id.expect("id");
    let of_sale = Some(OriginalRef::Payment(sale_id));
    let no_refunds = Terminal {
        refunds: Some(false),
        moto: Some(false),
        ..Terminal::enabled(TID, 0)
    };
    e.replace_directory(directory(&[no_refunds]))
        .expect("swapped");
    let refund = apply(&e, request(Op::Refund, TID, 2, of_sale));
    assert_eq!(refund.code, Code::NOT_PERMITTED_TERMINAL);
    let moto = Request {
        channel: Channel::MoTo,
        ..request(Op::Sale, TID, 3, None)
    };
    assert_eq!(apply(&e, moto).code, Code::NOT_PERMITTED_TERMINAL);
    // The merchant's other terminal inherits: refunds allowed.
    let other = apply(&e, request(Op::Sale, OTHER_TID, 4, None));
    let of_other = Some(OriginalRef::Payment(other.payment_id.expect("id")));
    let refund = apply(&e, request(Op::Refund, OTHER_TID, 5, of_other));
    assert_eq!(refund.code, Code::APPROVED);
    // A terminal may allow what its merchant does not.
    let mut strict = merchant();
    strict.refunds_allowed = false;
    let allows = Terminal {
        refunds: Some(true),
        ..Terminal::enabled(TID, 0)
    };
    let d = Directory::new(vec![strict], &[allows]).expect("valid");
    e.replace_directory(d).expect("swapped");
    assert_eq!(
        apply(&e, request(Op::Refund, TID, 6, of_sale)).code,
        Code::APPROVED
    );
    let of_other = Some(OriginalRef::Payment(other.payment_id.expect("id")));
    let refund = apply(&e, request(Op::Refund, OTHER_TID, 7, of_other));
    assert_eq!(refund.code, Code::NOT_PERMITTED_TERMINAL);
}

#[test]
fn cancels_off_refuse_back_office_cancels_not_iso_reversals() {
    let e = engine();
    let a = apply(&e, request(Op::PreAuth, TID, 1, None));
    let b = apply(&e, request(Op::PreAuth, TID, 2, None));
    let (a, b) = (a.payment_id.expect("id"), b.payment_id.expect("id"));
    let no_cancel = Terminal {
        cancel: Some(false),
        ..Terminal::enabled(TID, 0)
    };
    e.replace_directory(directory(&[no_cancel]))
        .expect("swapped");
    // A cancel over internal frames names the payment, with no key.
    let cancel = Request {
        key: None,
        channel: Channel::MoTo,
        ..request(Op::Reversal, TID, 3, Some(OriginalRef::Payment(a)))
    };
    assert_eq!(apply(&e, cancel).code, Code::NOT_PERMITTED_TERMINAL);
    assert_eq!(status(&e, a), Status::Uncaptured);
    // An ISO 8583 reversal (F90) is processed.
    let original = codecs::iso8583::f90::OriginalData {
        mti: codecs::iso8583::Mti::from_bytes(b"0100").expect("mti"),
        stan: 2,
        transmission: *b"1123114959",
    };
    let reversal = request(Op::Reversal, TID, 4, Some(OriginalRef::Message(original)));
    assert_eq!(apply(&e, reversal).code, Code::APPROVED);
    assert_eq!(status(&e, b), Status::Cancelled);
}

#[test]
fn added_terminals_and_merchants_transact_and_indexes_never_move() {
    let e = engine();
    let stranger = *b"NEWT0001";
    assert_eq!(
        apply(&e, request(Op::Sale, stranger, 1, None)).code,
        Code::NOT_PERMITTED_TERMINAL
    );
    e.replace_directory(directory(&[Terminal::enabled(stranger, 0)]))
        .expect("swapped");
    assert_eq!(
        apply(&e, request(Op::Sale, stranger, 2, None)).code,
        Code::APPROVED
    );
    let mut second = merchant();
    second.id = *b"NEWM00000000002";
    second.terminals = vec![*b"NEWT0002"];
    let grown = Directory::new(vec![merchant(), second.clone()], &[]).expect("valid");
    e.replace_directory(grown).expect("grows");
    match e.query(Query::TerminalMerchant(*b"NEWT0002")) {
        QueryReply::Merchant(Some(m)) => assert_eq!((m.index, m.id), (1, second.id)),
        other => panic!("{other:?}"),
    }
    // Dropping or reordering a merchant is refused; the old one stays.
    let shrunk = directory(&[]);
    assert_eq!(
        e.replace_directory(shrunk),
        Err(DirectoryError::Shrunk { was: 2, now: 1 })
    );
    let swapped = Directory::new(vec![second, merchant()], &[]).expect("valid");
    assert!(matches!(
        e.replace_directory(swapped),
        Err(DirectoryError::Reordered { index: 0, .. })
    ));
    match e.query(Query::Merchant(b"NEWM00000000002")) {
        QueryReply::Merchant(Some(m)) => assert_eq!(m.index, 1),
        other => panic!("{other:?}"),
    }
}
