//! Card velocity counted at another place than the payment (cluster mode,
//! `docs/cluster.md` "Velocity across nodes"): the node deciding a
//! payment asks the node that counts the card ([`crate::Wait::Velocity`]),
//! which counts it ([`crate::Command::Velocity`]) and records the attempt
//! ([`RECORD_VELOCITY`]) so that the card's next counting node rebuilds
//! its counts by replaying the records; the asking node then goes on with
//! the verdict ([`crate::Command::Resume`], [`crate::Fetched::velocity`]).
//! On one node nothing here runs: the card is counted in the risk stage.
//!
//! An ask, on the wire and in the record (big endian):
//!
//! ```text
//! token 32 | merchant id 15 | terminal id 8 | amount_minor u64 | currency u16
//! | channel u8 (F25) | declined_before u8 (0/1)
//! ```
//!
//! The record adds the counting node's `at_ms` (u64) and which keys took
//! the attempt (u8, `risk::CardCount::recorded`) after it.
//!
//! A velocity checkpoint ([`RECORD_VELOCITY_CHECKPOINT`], cluster mode)
//! holds the whole counts of one card shard's cards, so the shard's next
//! counting node sets them from it and replays only the attempts recorded
//! after it:
//!
//! ```text
//! shard u32 | at_ms u64 | risk::RiskState::export_cards bytes
//! ```
//!
//! It is taken without stopping the counts: a begin mark
//! ([`RECORD_VELOCITY_CHECKPOINT_BEGIN`], the same header alone) is
//! recorded first, then the counts are exported, then recorded. Every
//! attempt recorded before the mark was counted before the export, so it
//! is in the checkpoint; one recorded after the mark may or may not be,
//! so a load sets the checkpoint's counts first and then replays every
//! attempt recorded after its mark (one counted during the export may
//! count twice: conservative, never fewer).

use crate::code::Code;
use crate::command::{Channel, Reply, Wait};
use crate::engine::Engine;

/// Record type of a counted attempt (payment records are 1, forwards 2).
pub const RECORD_VELOCITY: u8 = 3;
/// Record type of a velocity checkpoint of one card shard.
pub const RECORD_VELOCITY_CHECKPOINT: u8 = 4;
/// Record type of the mark recorded before a checkpoint's counts are
/// exported: the attempts after it are replayed over the checkpoint.
pub const RECORD_VELOCITY_CHECKPOINT_BEGIN: u8 = 5;
/// Record type of a card's watch-list change in cluster mode (token 32,
/// then 1 on the list or 0 one holder less), recorded by the node that
/// counts the card: its next counting node replays every one (a card
/// shard's watch records are never deleted; they are as many as marks and
/// unmarks by hand).
pub const RECORD_WATCH: u8 = 6;
/// Bytes of a [`RECORD_WATCH`] payload.
pub const WATCH_RECORD_BYTES: usize = 32 + 1;
/// Bytes of a checkpoint's header: its shard and when it was taken.
const CHECKPOINT_HEADER_BYTES: usize = 4 + 8;
/// Bytes of an encoded [`VelocityAsk`].
pub const VELOCITY_ASK_BYTES: usize = 32 + 15 + 8 + 8 + 2 + 1 + 1;
/// Bytes of a [`RECORD_VELOCITY`] payload: the ask, when it was counted,
/// and which keys took it.
pub const VELOCITY_RECORD_BYTES: usize = VELOCITY_ASK_BYTES + 8 + 1;

/// Defined beside [`crate::command::Command`], which carries it, so the
/// engine's modules do not import this one.
pub use crate::command::VelocityAsk;

impl VelocityAsk {
    /// The ask for authorization `req` whose engine replied
    /// [`Wait::Velocity`] with `token` and `declined_before`; `None` when
    /// its F42 is not 15 bytes (the engine validated it, so never).
    pub fn new(
        req: &crate::command::Request<'_>,
        token: [u8; 32],
        declined_before: bool,
    ) -> Option<VelocityAsk> {
        Some(VelocityAsk {
            token,
            merchant_id: req.merchant_id.try_into().ok()?,
            terminal_id: req.terminal_id,
            amount_minor: req.amount_minor,
            currency: req.currency,
            channel: req.channel,
            declined_before,
        })
    }

    /// The ask's bytes.
    pub fn to_bytes(&self) -> [u8; VELOCITY_ASK_BYTES] {
        let mut out = [0; VELOCITY_ASK_BYTES];
        out[..32].copy_from_slice(&self.token);
        out[32..47].copy_from_slice(&self.merchant_id);
        out[47..55].copy_from_slice(&self.terminal_id);
        out[55..63].copy_from_slice(&self.amount_minor.to_be_bytes());
        out[63..65].copy_from_slice(&self.currency.to_be_bytes());
        out[65] = self.channel.code();
        out[66] = u8::from(self.declined_before);
        out
    }

    /// Reads [`VelocityAsk::to_bytes`]; `None` for another length or a
    /// byte it never writes.
    pub fn from_bytes(bytes: &[u8]) -> Option<VelocityAsk> {
        let b: &[u8; VELOCITY_ASK_BYTES] = bytes.try_into().ok()?;
        let channel = match b[65] {
            0 => Channel::CardPresent,
            8 => Channel::MoTo,
            59 => Channel::Ecommerce,
            99 => Channel::Other,
            _ => return None,
        };
        let declined_before = match b[66] {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(VelocityAsk {
            token: b[..32].try_into().ok()?,
            merchant_id: b[32..47].try_into().ok()?,
            terminal_id: b[47..55].try_into().ok()?,
            amount_minor: u64::from_be_bytes(b[55..63].try_into().ok()?),
            currency: u16::from_be_bytes(b[63..65].try_into().ok()?),
            channel,
            declined_before,
        })
    }
}

/// A [`RECORD_VELOCITY`] payload: the ask, when it was counted, and which
/// keys took it.
fn encode_record(ask: &VelocityAsk, at_ms: u64, recorded: u8) -> [u8; VELOCITY_RECORD_BYTES] {
    let mut out = [0; VELOCITY_RECORD_BYTES];
    out[..VELOCITY_ASK_BYTES].copy_from_slice(&ask.to_bytes());
    out[VELOCITY_ASK_BYTES..VELOCITY_ASK_BYTES + 8].copy_from_slice(&at_ms.to_be_bytes());
    out[VELOCITY_ASK_BYTES + 8] = recorded;
    out
}

/// Reads a [`RECORD_VELOCITY`] payload: the ask, `at_ms`, the keys.
pub fn decode_record(payload: &[u8]) -> Option<(VelocityAsk, u64, u8)> {
    if payload.len() != VELOCITY_RECORD_BYTES {
        return None;
    }
    let (ask, rest) = payload.split_at(VELOCITY_ASK_BYTES);
    let ask = VelocityAsk::from_bytes(ask)?;
    let at_ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some((ask, at_ms, *rest.get(8)?))
}

/// A [`RECORD_WATCH`] payload.
pub fn encode_watch(token: &[u8; 32], on: bool) -> [u8; WATCH_RECORD_BYTES] {
    let mut out = [0; WATCH_RECORD_BYTES];
    out[..32].copy_from_slice(token);
    out[32] = u8::from(on);
    out
}

/// Reads a [`RECORD_WATCH`] payload: the token and whether it puts the
/// card on the list; `None` for another length or a byte it never writes.
pub fn decode_watch(payload: &[u8]) -> Option<([u8; 32], bool)> {
    let b: &[u8; WATCH_RECORD_BYTES] = payload.try_into().ok()?;
    let on = match b[32] {
        0 => false,
        1 => true,
        _ => return None,
    };
    Some((b[..32].try_into().ok()?, on))
}

/// The card shard of a [`RECORD_VELOCITY_CHECKPOINT`] or
/// [`RECORD_VELOCITY_CHECKPOINT_BEGIN`] payload.
pub fn checkpoint_shard(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?))
}

/// What [`Engine::checkpoint_velocity`] recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpointed {
    /// The record's sequence.
    pub seq: u64,
    /// Card keys in it.
    pub keys: usize,
    /// Its bytes.
    pub bytes: usize,
}

impl Engine {
    /// Records the counts of every card `keep` takes (by token: the cards
    /// of card shard `shard`) as one [`RECORD_VELOCITY_CHECKPOINT`] at
    /// `now_ms`, after a [`RECORD_VELOCITY_CHECKPOINT_BEGIN`] mark (see
    /// the module's note): cards go on being counted meanwhile.
    ///
    /// # Errors
    /// The journal's code when it refuses either record.
    pub fn checkpoint_velocity(
        &self,
        shard: u32,
        now_ms: u64,
        keep: &dyn Fn(&[u8; 32]) -> bool,
    ) -> Result<Checkpointed, Code> {
        let mut payload = Vec::with_capacity(4_096);
        payload.extend_from_slice(&shard.to_be_bytes());
        payload.extend_from_slice(&now_ms.to_be_bytes());
        self.journal
            .append(RECORD_VELOCITY_CHECKPOINT_BEGIN, &payload)?;
        let keys = self.risk.export_cards(keep, &mut payload);
        let seq = self.journal.append(RECORD_VELOCITY_CHECKPOINT, &payload)?;
        Ok(Checkpointed {
            seq,
            keys,
            bytes: payload.len(),
        })
    }

    /// Forgets what was counted for the cards `keep` takes, before their
    /// shard's checkpoint and later attempts are replayed (a takeover):
    /// counts kept from an earlier time here would add to them. How many
    /// keys.
    pub fn reset_velocity_of(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        // Their places on the watch list too: the shard's watch records
        // set them again.
        self.risk.forget_watches(keep);
        self.risk.reset_cards(keep)
    }

    /// Sets the counts of a checkpoint's cards ([`RECORD_VELOCITY_CHECKPOINT`]
    /// payload).
    pub(crate) fn replay_velocity_checkpoint(&self, payload: &[u8]) -> Result<usize, &'static str> {
        let bytes = payload
            .get(CHECKPOINT_HEADER_BYTES..)
            .ok_or("velocity checkpoint: header")?;
        self.risk.import_cards(bytes).map_err(|e| e.what)
    }

    /// Counts the card at `now_ms` (this node counts it) and records the
    /// attempt; the reply carries the verdict and waits for the record.
    /// When the record cannot be taken the attempt stays counted here
    /// (conservative) and the reply is the journal's code, no verdict.
    pub(crate) fn count_velocity(&self, ask: &VelocityAsk, now_ms: u64) -> Reply {
        let counted = self.risk.count_card(ask, now_ms);
        let recorded = if self.journal.keeps_records() {
            let record = encode_record(ask, now_ms, counted.recorded);
            self.journal.append(RECORD_VELOCITY, &record)
        } else {
            Ok(0)
        };
        match recorded {
            Ok(seq) => Reply {
                wait: Wait::Counted {
                    seq,
                    card: counted.verdict,
                },
                record_seq: seq,
                ..Reply::of(Code::APPROVED, [b'0'; 12])
            },
            Err(code) => Reply::of(code, [b'0'; 12]),
        }
    }

    /// Puts the card on the watch list here (`on`) or lets one holder go,
    /// and records it ([`RECORD_WATCH`]); the reply waits for the record.
    /// When the record cannot be taken nothing changes here and the reply
    /// is the journal's code.
    pub(crate) fn watch_card(&self, token: [u8; 32], on: bool) -> Reply {
        let recorded = if self.journal.keeps_records() {
            self.journal.append(RECORD_WATCH, &encode_watch(&token, on))
        } else {
            Ok(0)
        };
        match recorded {
            Ok(seq) => {
                self.replay_watch(&token, on);
                Reply {
                    wait: Wait::of_seq(seq),
                    record_seq: seq,
                    ..Reply::of(Code::APPROVED, [b'0'; 12])
                }
            }
            Err(code) => Reply::of(code, [b'0'; 12]),
        }
    }

    /// Applies a watch-list change ([`RECORD_WATCH`]) here.
    pub(crate) fn replay_watch(&self, token: &[u8; 32], on: bool) {
        let token = codecs::card::CardToken(*token);
        if on {
            self.risk.watch(&token);
        } else {
            self.risk.unwatch(&token);
        }
    }

    /// Records a counted attempt again under the keys that took it, at
    /// the time it was counted (a takeover rebuilds the card's counts).
    pub(crate) fn replay_velocity(&self, ask: &VelocityAsk, at_ms: u64, recorded: u8) {
        self.risk.recount_card(ask, at_ms, recorded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_and_records_round_trip_and_bad_bytes_are_refused() {
        let ask = VelocityAsk {
            token: [7; 32],
            merchant_id: *b"MERCHANT0000001",
            terminal_id: *b"TERM0001",
            amount_minor: 12_345,
            currency: 978,
            channel: Channel::MoTo,
            declined_before: true,
        };
        assert_eq!(VelocityAsk::from_bytes(&ask.to_bytes()), Some(ask));
        let record = encode_record(&ask, 1_700_000_000_123, 5);
        assert_eq!(decode_record(&record), Some((ask, 1_700_000_000_123, 5)));
        assert_eq!(decode_record(&record[1..]), None);
        let mut bad = ask.to_bytes();
        bad[65] = 7;
        assert_eq!(VelocityAsk::from_bytes(&bad), None);
        bad[65] = 8;
        bad[66] = 2;
        assert_eq!(VelocityAsk::from_bytes(&bad), None);
        for on in [true, false] {
            assert_eq!(
                decode_watch(&encode_watch(&[9; 32], on)),
                Some(([9; 32], on))
            );
        }
        let mut bad = encode_watch(&[9; 32], true);
        bad[32] = 2;
        assert_eq!(decode_watch(&bad), None);
        assert_eq!(decode_watch(&bad[1..]), None);
    }
}
