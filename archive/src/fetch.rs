//! The engine's lookups ([`engine::Fetch`]) answered from an archive: the
//! one place that turns "what the engine needs" into store reads, for the
//! switch and for tests that drive the engine over a store.

use engine::{Fetch, Fetched, Target};

use crate::{Archive, ArchiveError};

/// Reads what `fetch` asks for from `archive` and adds it to `into` (the
/// answer, or the original's target and payment), ready for
/// [`engine::Command::Resume`]. The caller sets `into.archived_seq` to the
/// watermark it saw before the call.
///
/// # Errors
/// When the store cannot be read, or holds a damaged image.
pub fn fetch(archive: &dyn Archive, fetch: Fetch, into: &mut Fetched) -> Result<(), ArchiveError> {
    match fetch {
        Fetch::Answer(key) => into.answer = Some(archive.answer(&key)?),
        Fetch::Original(key) => {
            let found = match archive.target(&key)? {
                Some(t) => archive.payment(t.payment)?.map(|p| (t, p)),
                None => None,
            };
            into.original = Some(found);
        }
        Fetch::Rrn {
            merchant,
            rrn,
            auth_code,
        } => {
            let found = archive.payment_by_rrn(merchant, &rrn, &auth_code)?;
            into.original = Some(found.map(|p| (whole(p.id), p)));
        }
        Fetch::Payment(id) => {
            into.original = Some(archive.payment(id)?.map(|p| (whole(id), p)));
        }
    }
    Ok(())
}

/// The target of a whole payment (not one of its refunds).
fn whole(payment: u64) -> Target {
    Target {
        payment,
        refund: None,
    }
}
