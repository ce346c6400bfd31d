//! A merchant's own settings over internal frames (`GetMerchant`,
//! `SetMerchant`): the settings `switch merchants set` changes, read and
//! changed by the back office of a key that acts for the merchant,
//! through the same directory admin, audited under the key's client id
//! and in force before the answer leaves.
//!
//! Enabling or disabling a merchant is not a merchant's own setting: its
//! acquirer decides (`switch merchants enable|disable`), so a
//! `SetMerchant` that carries `merchant_enabled` is refused `58` and
//! changes nothing. A merchant the key may not act for is `58` too.

use codecs::internal::MerchantChange;
use engine::Code;

use crate::directory::{Admin, AutoCapture, MerchantPatch, MerchantView};
use crate::node::Node;

/// What a merchant request is answered.
pub(crate) struct MerchantAnswer {
    /// Result code.
    pub(crate) code: Code,
    /// For people.
    pub(crate) message: String,
    /// The merchant as it stands after the request (on `00`).
    pub(crate) merchant: Option<MerchantView>,
}

impl MerchantAnswer {
    fn refusal(code: Code, message: impl Into<String>) -> MerchantAnswer {
        MerchantAnswer {
            code,
            message: message.into(),
            merchant: None,
        }
    }
}

/// The merchant a request names, or the key's only one; else the code
/// and why.
fn which<'m>(mids: &'m [String], named: Option<&'m str>) -> Result<&'m str, (Code, &'static str)> {
    match (named, mids) {
        (Some(mid), _) if mids.iter().any(|m| m == mid) => Ok(mid),
        (Some(_), _) => Err((
            Code::NOT_PERMITTED_TERMINAL,
            "merchant not permitted for this key",
        )),
        (None, [only]) => Ok(only.as_str()),
        (None, []) => Err((
            Code::NOT_PERMITTED_TERMINAL,
            "no merchant permitted for this key",
        )),
        (None, _) => Err((
            Code::FORMAT_ERROR,
            "merchant_id: required for a key acting for several merchants",
        )),
    }
}

/// Reads (`set` false) or changes the settings of one merchant of key
/// `client_id`, which acts for `mids` in the scope the request needs.
pub(crate) fn answer(
    admin: &Admin,
    node: &Node,
    client_id: &str,
    mids: &[String],
    change: &MerchantChange<'_>,
    set: bool,
) -> MerchantAnswer {
    let mid = match which(mids, change.merchant_id) {
        Ok(mid) => mid,
        Err((code, why)) => return MerchantAnswer::refusal(code, why),
    };
    let resolved = if set {
        if change.enabled.is_some() {
            return MerchantAnswer::refusal(
                Code::NOT_PERMITTED_TERMINAL,
                "a merchant is enabled or disabled by its acquirer \
                 (switch merchants enable|disable), not over frames",
            );
        }
        if !change.changes_anything() {
            return MerchantAnswer::refusal(Code::FORMAT_ERROR, "no setting to change");
        }
        let r = admin.set_merchant(client_id, mid, &patch(change), "merchant.set");
        if r.is_ok() {
            node.reload_directory();
        }
        r
    } else {
        admin.current()
    };
    match resolved {
        Ok(r) => MerchantAnswer {
            code: Code::APPROVED,
            message: "ok".into(),
            merchant: r.merchants.into_iter().find(|m| m.id == mid),
        },
        Err(e) => {
            let (code, message) = super::terminal_frames::refusal(&e);
            MerchantAnswer::refusal(code, message)
        }
    }
}

/// The directory change a `SetMerchant` asks for.
fn patch(c: &MerchantChange<'_>) -> MerchantPatch {
    MerchantPatch {
        name: c.name.map(str::to_owned),
        enabled: None,
        currencies: c.currencies.map(|c| c.as_slice().to_vec()),
        over_capture_pct: c.over_capture_pct.map(u32::from),
        refunds_allowed: c.refunds,
        moto_allowed: c.moto,
        hold_period_h: c.hold_hours.map(u64::from),
        auto_capture: c.auto_capture_hours.map(|h| match h {
            Some(h) => AutoCapture::Hours(u64::from(h)),
            None => AutoCapture::Off,
        }),
    }
}
