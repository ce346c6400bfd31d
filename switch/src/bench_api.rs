//! A narrow door into the pipeline for the criterion benches in
//! `benches/`: not part of the switch's API (hidden from docs).

use codecs::card::{Pan, TokenKey};
use codecs::iso8583::datetime::Expiry;
use codecs::iso8583::f90::OriginalData;
use codecs::iso8583::Mti;

use engine::{Channel, Code, Command, MessageKey, Op, OriginalRef, Query, QueryReply, Request};

use crate::clock::Clock;
use crate::config::Config;
use crate::node::Node;

/// The engine with the embedded default, a manual clock and no journal.
pub struct Lifecycle {
    /// The pipeline after decode, behind the shell's door.
    node: Node,
}

/// Luhn-valid 16-digit card numbers, one per index (`411111` BIN).
pub fn card(i: u64) -> [u8; 16] {
    let mut d = [0u8; 16];
    let body = format!("411111{:09}", i % 1_000_000_000);
    d[..15].copy_from_slice(body.as_bytes());
    d[15] = codecs::card::luhn_check_digit(body.as_bytes()).unwrap_or(b'0');
    d
}

impl Lifecycle {
    /// A fresh engine.
    ///
    /// # Panics
    /// If the embedded configuration is invalid (a test covers it).
    pub fn new() -> Self {
        let mut config = Config::embedded().expect("embedded config");
        // Benches run millions of iterations: lift the memory limits.
        config.limits.idempotency_entries_max = 100_000_000;
        config.limits.payments_max = 100_000_000;
        let key = TokenKey::new(b"bench");
        let clock = Clock::manual(1_795_434_550_000);
        Lifecycle {
            node: Node::new(&config, clock, key).expect("engine"),
        }
    }

    fn request<'a>(
        op: Op,
        pan: Option<&'a [u8]>,
        stan: u32,
        terminal: [u8; 8],
        original: Option<OriginalRef>,
    ) -> Request<'a> {
        let mti = match op {
            Op::PreAuth => 100,
            Op::Capture => 220,
            _ => 200,
        };
        Request {
            op,
            key: Some(MessageKey {
                mti,
                terminal,
                stan,
                transmission: 1_123_114_959,
            }),
            repeat: false,
            content_crc: stan,
            merchant_id: b"DEMO00000000001",
            terminal_id: terminal,
            pan: pan.and_then(Pan::new),
            expiry: Expiry::parse(b"2812"),
            amount_minor: 1_000,
            currency: 978,
            original,
            replacement_minor: None,
            channel: Channel::CardPresent,
            eci: None,
            rrn: None,
            extras: None,
            keep_open: false,
        }
    }

    /// A pre-authorization of card `pan` with key (`terminal`, `stan`), then
    /// its capture with key (`terminal`, `stan + 1`). Returns whether both
    /// were approved.
    pub fn preauth_then_capture(&self, pan: &[u8], terminal: [u8; 8], stan: u32) -> bool {
        let auth = Self::request(Op::PreAuth, Some(pan), stan, terminal, None);
        let a = self.node.apply(Command::Message(auth));
        let original = OriginalRef::Message(OriginalData {
            mti: Mti::parse("0100").unwrap_or_else(|| unreachable!()),
            stan,
            transmission: *b"1123114959",
        });
        let cap = Self::request(Op::Capture, None, stan + 1, terminal, Some(original));
        let c = self.node.apply(Command::Message(cap));
        a.code == Code::APPROVED && c.code == Code::APPROVED
    }

    /// Payments held.
    pub fn payments(&self) -> usize {
        match self.node.query(Query::Stats) {
            QueryReply::Stats(s) => s.payments,
            _ => 0,
        }
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}
