//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use risk::{Bin, CardToken, Channel, Context, MessageKind};

/// The contract's block-listed test card.
pub const BLOCKED_PAN: &str = "4000000000000002";
/// A clean card.
pub const CLEAN_PAN: &str = "4111111111111111";
/// Demo merchant 1 and one of its terminals.
pub const MERCHANT_1: &str = "DEMO00000000001";
/// Demo merchant 2.
pub const MERCHANT_2: &str = "DEMO00000000002";
/// A terminal of merchant 1.
pub const TERMINAL: &str = "DEMO0001";

/// Stands in for the switch's HMAC: distinct PANs give distinct tokens.
pub fn tokenize(pan: &str) -> CardToken {
    let mut token = [0u8; 32];
    token[..pan.len()].copy_from_slice(pan.as_bytes());
    token[31] = 0xA5;
    CardToken(token)
}

/// A card-present authorization of EUR 10.00 on a clean card.
pub fn auth(pan: &'static str) -> Context<'static> {
    Context {
        kind: MessageKind::Authorization,
        amount_minor: 1_000,
        currency: 978,
        card_token: tokenize(pan),
        bin: Bin::from_pan(pan.as_bytes()).expect("test PANs have 8 digits"),
        merchant_id: MERCHANT_1,
        terminal_id: TERMINAL,
        channel: Channel::CardPresent,
        eci: None,
    }
}

/// An e-commerce authorization.
pub fn ecom(
    pan: &'static str,
    amount_minor: u64,
    currency: u16,
    eci: Option<u8>,
) -> Context<'static> {
    Context {
        amount_minor,
        currency,
        channel: Channel::Ecommerce,
        eci,
        ..auth(pan)
    }
}

/// A small state, cheap to make per test case.
pub fn small_state() -> risk::RiskState {
    risk::RiskState::with_capacity(risk::Capacity {
        card_keys_max: 4_096,
        terminal_keys_max: 256,
        watch_list_max: 64,
    })
}
