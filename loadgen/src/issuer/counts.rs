//! The issuer's counters: atomics the links bump, and the snapshot
//! [`IssuerCounts`] that [`super::IssuerHandle::counts`] returns. Both are
//! generated from one list, so they cannot drift apart.

use std::sync::atomic::{AtomicU64, Ordering};

use codecs::iso8583::Mti;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident ),* $(,)?) => {
        /// A snapshot of the issuer's counters (each read on its own, so
        /// a snapshot taken while traffic flows may be off by in-flight
        /// messages).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
        pub struct IssuerCounts {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        /// The live counters.
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $( pub(crate) $name: AtomicU64, )*
        }

        impl Stats {
            /// Reads every counter.
            pub(crate) fn snapshot(&self) -> IssuerCounts {
                IssuerCounts { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

counters! {
    /// Connections accepted.
    connects,
    /// Connections open now.
    connections_current,
    /// 0100 received.
    requests_0100,
    /// 0200 received.
    requests_0200,
    /// 0120 received.
    requests_0120,
    /// 0121 received.
    requests_0121,
    /// 0220 received.
    requests_0220,
    /// 0221 received.
    requests_0221,
    /// 0420 received.
    requests_0420,
    /// 0421 received.
    requests_0421,
    /// 0800 with F70 001 (sign-on) received.
    requests_0800_sign_on,
    /// 0800 with F70 002 (sign-off) received.
    requests_0800_sign_off,
    /// 0800 with F70 301 (echo) received.
    requests_0800_echo,
    /// Any other request (0101, 0201, 0400, 0800 with another F70, ...).
    requests_other,
    /// Authorizations (0100/0200 and repeats) approved.
    approvals,
    /// Authorizations declined.
    declines,
    /// Answers written to a socket.
    answers_sent,
    /// Answers whose write began: counted before the bytes leave, so the
    /// peer can never hold an answer this does not count yet (unlike
    /// `answers_sent`, counted once the write returned). For in-flight
    /// checks: `requests_* - answers_started` never overcounts.
    answers_started,
    /// Requests never answered on purpose (silent amount, 0800 with echoes off).
    silent,
    /// Answers decided but not written because their link closed first.
    answers_dropped,
    /// Answers waiting for their latency or the writer, over all links.
    pending_answers,
    /// Frames that could not be decoded (the link was closed).
    bad_messages,
    /// Links closed after `disconnect_after` requests.
    disconnects_after_limit,
    /// Links closed by `disconnect_all`.
    disconnects_forced,
    /// 0800/301 the issuer sent (`send_echo`).
    echoes_sent,
    /// 0810 answers received to them.
    echo_answers,
    /// Other responses received (never answered).
    responses_other,
}

impl Stats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts one from a gauge.
    pub(crate) fn drop_one(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counter of a received request.
    pub(crate) fn request_counter(&self, mti: Mti, f70: Option<&[u8]>) -> &AtomicU64 {
        match (mti.as_bytes(), f70) {
            (b"0100", _) => &self.requests_0100,
            (b"0200", _) => &self.requests_0200,
            (b"0120", _) => &self.requests_0120,
            (b"0121", _) => &self.requests_0121,
            (b"0220", _) => &self.requests_0220,
            (b"0221", _) => &self.requests_0221,
            (b"0420", _) => &self.requests_0420,
            (b"0421", _) => &self.requests_0421,
            (b"0800", Some(b"001")) => &self.requests_0800_sign_on,
            (b"0800", Some(b"002")) => &self.requests_0800_sign_off,
            (b"0800", Some(b"301")) => &self.requests_0800_echo,
            _ => &self.requests_other,
        }
    }
}
