//! The merchants the engine serves and what each may do, as the shell
//! configures them.

/// A merchant and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    /// F42.
    pub id: [u8; 15],
    /// F41 of its terminals; a terminal belongs to one merchant.
    pub terminals: Vec<[u8; 8]>,
    /// Whether it may transact.
    pub enabled: bool,
    /// Accepted ISO 4217 numeric currencies.
    pub currencies: Vec<u16>,
    /// A capture may exceed the authorized amount by this percentage.
    pub over_capture_pct: u32,
    /// Whether refunds are allowed.
    pub refunds_allowed: bool,
    /// Whether MO/TO is allowed.
    pub moto_allowed: bool,
    /// Hold period of a pre-authorization, ms.
    pub hold_period_ms: u64,
    /// Auto-capture delay, ms, when on.
    pub auto_capture_ms: Option<u64>,
}

impl Merchant {
    /// When a hold placed at `created_ms` ends, and whether it is captured then.
    pub(crate) fn hold_end(&self, created_ms: u64) -> (u64, bool) {
        match self.auto_capture_ms {
            Some(ms) => (created_ms + ms, true),
            None => (created_ms + self.hold_period_ms, false),
        }
    }
}

/// What the engine is built from.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The merchants, by index.
    pub merchants: Vec<Merchant>,
    /// Most payments held in memory; beyond it new payments get 96.
    pub payments_max: usize,
    /// Most remembered answers in memory; beyond it new messages get 96.
    pub idempotency_entries_max: usize,
    /// How long a message's answer is given again to its repeats
    /// (`limits.idempotency_window_s`), ms.
    pub idempotency_window_ms: u64,
    /// Where PANs go (everything local by default).
    pub routing: crate::upstream::Routing,
    /// Stand-in when an issuer cannot answer.
    pub stand_in: crate::upstream::StandIn,
    /// Most forwards waiting for an issuer.
    pub forwards_max: usize,
    /// Most SAF entries (`saf.entries_max`).
    pub saf_max: usize,
}
