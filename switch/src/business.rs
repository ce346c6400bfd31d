//! Business metrics for the dashboard: what the switch decided, over both
//! channels (ISO 8583 and internal frames), and for how much.
//!
//! - `switch_decisions_total{channel,op,code}`: every payment operation
//!   answered, by channel (`iso`, `frames`), operation (`preauth`, `sale`,
//!   `capture`, `refund`, `reversal`) and response code. The approval rate
//!   is the share of `code="00"` among `op=~"preauth|sale"`; declines by
//!   code are the rest.
//! - `switch_amount_minor_total{currency,op}`: approved amounts in minor
//!   units, by ISO 4217 numeric currency and operation. Minor units add up
//!   within a currency only; dashboards divide by the currency's exponent.
//! - With `[metrics] merchant_labels = true` only, the same per merchant
//!   (`switch_merchant_decisions_total{merchant,op,result}` with `result`
//!   `approved` or `declined`, and `switch_merchant_amount_minor_total
//!   {merchant,currency,op}`), for at most `merchant_labels_max` merchants:
//!   the ones first seen past it count under `merchant="other"`, and
//!   `switch_limit_reached_total{limit="metrics_merchant_labels_max"}`
//!   counts each such decision.
//!
//! Off the per-merchant switch, recording costs two counter increments
//! through handles registered at start (decisions) or on a currency's first
//! use (amounts): no label lookup per request.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use engine::{Code, Op};
use metrics::Counter;

/// Where a request came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// ISO 8583 listener.
    Iso = 0,
    /// Internal-frame listener (virtual terminal, back offices).
    Frames = 1,
}

const CHANNELS: [&str; 2] = ["iso", "frames"];
const OPS: [&str; 5] = ["preauth", "sale", "capture", "refund", "reversal"];
/// ISO 4217 numeric codes are 3 digits.
const CURRENCIES: usize = 1000;

/// Default of `[metrics] merchant_labels_max`.
pub(crate) const MERCHANT_LABELS_MAX_DEFAULT: usize = 50;

fn op_index(op: Op) -> usize {
    match op {
        Op::PreAuth => 0,
        Op::Sale => 1,
        Op::Capture => 2,
        Op::Refund => 3,
        Op::Reversal => 4,
    }
}

/// One decision to count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decision<'a> {
    /// Where it came in.
    pub(crate) channel: Channel,
    /// What was asked.
    pub(crate) op: Op,
    /// The answer.
    pub(crate) code: Code,
    /// The amount concerned, minor units.
    pub(crate) amount_minor: u64,
    /// Its ISO 4217 numeric currency.
    pub(crate) currency: u16,
    /// The merchant's MID, when known (per-merchant labels only).
    pub(crate) merchant: Option<&'a [u8]>,
}

/// The handles; one per process.
struct Business {
    /// By channel, op, code index.
    decisions: Vec<Counter>,
    /// By currency × op, registered on first use.
    amounts: Vec<OnceLock<Counter>>,
    /// Per-merchant labels, when on: the MIDs admitted so far.
    merchants: Option<Mutex<HashMap<Vec<u8>, String>>>,
    /// `merchant_labels_max`.
    merchants_max: usize,
}

static BUSINESS: OnceLock<Business> = OnceLock::new();

/// Registers the handles; `merchant_labels_max` is `Some` when per-merchant
/// labels are on. The first call wins (tests start several switches in one
/// process).
pub(crate) fn install(merchant_labels_max: Option<usize>) {
    BUSINESS.get_or_init(|| {
        let mut decisions = Vec::with_capacity(CHANNELS.len() * OPS.len() * Code::ALL.len());
        for channel in CHANNELS {
            for op in OPS {
                for code in Code::ALL {
                    decisions.push(metrics::counter!(
                        "switch_decisions_total",
                        "channel" => channel, "op" => op, "code" => code.as_str()
                    ));
                }
            }
        }
        metrics::describe_counter!(
            "switch_decisions_total",
            "Payment operations answered, by channel (iso, frames), operation and response code."
        );
        metrics::describe_counter!(
            "switch_amount_minor_total",
            "Approved amounts in minor units, by ISO 4217 numeric currency and operation."
        );
        Business {
            decisions,
            amounts: (0..CURRENCIES * OPS.len())
                .map(|_| OnceLock::new())
                .collect(),
            merchants: merchant_labels_max.map(|_| Mutex::new(HashMap::new())),
            merchants_max: merchant_labels_max.unwrap_or(0),
        }
    });
}

/// Counts one decision (nothing before [`install`]).
pub(crate) fn record(d: &Decision<'_>) {
    let Some(b) = BUSINESS.get() else {
        return;
    };
    let op = op_index(d.op);
    let code = Code::ALL.iter().position(|c| *c == d.code);
    if let Some(c) = code.and_then(|c| {
        b.decisions
            .get((d.channel as usize * OPS.len() + op) * Code::ALL.len() + c)
    }) {
        c.increment(1);
    }
    let approved = d.code.approved();
    let currency = usize::from(d.currency);
    if approved && d.amount_minor > 0 && currency < CURRENCIES {
        if let Some(slot) = b.amounts.get(currency * OPS.len() + op) {
            slot.get_or_init(|| {
                metrics::counter!(
                    "switch_amount_minor_total",
                    "currency" => format!("{:03}", d.currency), "op" => OPS[op]
                )
            })
            .increment(d.amount_minor);
        }
    }
    if let (Some(merchants), Some(mid)) = (&b.merchants, d.merchant) {
        let label = {
            let mut seen = merchants.lock().unwrap_or_else(PoisonError::into_inner);
            match seen.get(mid) {
                Some(label) => label.clone(),
                None if seen.len() < b.merchants_max => {
                    let label = String::from_utf8_lossy(mid).trim_end().to_owned();
                    seen.insert(mid.to_vec(), label.clone());
                    label
                }
                None => {
                    metrics::counter!(
                        "switch_limit_reached_total",
                        "limit" => "metrics_merchant_labels_max"
                    )
                    .increment(1);
                    "other".to_owned()
                }
            }
        };
        let result = if approved { "approved" } else { "declined" };
        metrics::counter!(
            "switch_merchant_decisions_total",
            "merchant" => label.clone(), "op" => OPS[op], "result" => result
        )
        .increment(1);
        if approved && d.amount_minor > 0 {
            metrics::counter!(
                "switch_merchant_amount_minor_total",
                "merchant" => label, "currency" => format!("{:03}", d.currency), "op" => OPS[op]
            )
            .increment(d.amount_minor);
        }
    }
}
