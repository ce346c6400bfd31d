//! The policy's TOML form: parsing, validation with line and key in every
//! error, and compilation into [`Policy`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{
    card_filter_bit, pack_merchant, pack_terminal, CurrencyAmounts, Merchant, Policy, Rules,
    POLICY_BYTES_MAX,
};
use crate::context::{Bin, CardToken, Channel};
use crate::error::PolicyError;
use crate::key::{self, KeyHasherBuild, Subject};
use crate::velocity::COUNT_60S_MAX;

/// The only policy format version.
const VERSION: u32 = 1;
/// Largest score weight or threshold.
pub(crate) const SCORE_MAX: u32 = 10_000;
/// Largest 1 h or 24 h count limit.
pub(crate) const COUNT_WINDOW_MAX: u32 = 1_000_000;
/// Largest amount: F4 is n12.
pub(crate) const AMOUNT_MINOR_MAX: u64 = 999_999_999_999;
/// Most currencies in one table.
pub(crate) const CURRENCIES_MAX: usize = 64;
/// Most merchants a policy names.
pub(crate) const MERCHANTS_MAX: usize = 10_000;
/// Most terminals with their own limits per merchant.
pub(crate) const TERMINALS_PER_MERCHANT_MAX: usize = 10_000;
/// Most entries in each block list.
pub(crate) const BLOCKLIST_ENTRIES_MAX: usize = 100_000;

type RawAmounts = Spanned<BTreeMap<Spanned<String>, Spanned<u64>>>;
type RawLimit = Spanned<Limit>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    #[serde(default)]
    defaults: RawRules,
    #[serde(default)]
    merchants: BTreeMap<Spanned<String>, RawRules>,
    #[serde(default)]
    blocklist: RawBlocklist,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    flag_score_min: Option<RawLimit>,
    decline_score_min: Option<RawLimit>,
    watch_list_score: Option<Spanned<u32>>,
    sca: Option<RawSca>,
    amount_max_minor: Option<RawChannels>,
    velocity: Option<RawSubjects>,
    terminals: Option<BTreeMap<Spanned<String>, RawTerminal>>,
}

/// A limit: a number, or `"off"` to lift a default.
#[derive(Deserialize)]
#[serde(untagged)]
enum Limit {
    Value(u32),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSca {
    threshold_minor: Option<RawAmounts>,
    attempted_score: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    card_present: Option<RawAmounts>,
    moto: Option<RawAmounts>,
    ecommerce: Option<RawAmounts>,
    unknown: Option<RawAmounts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjects {
    card: Option<RawVelocity>,
    card_moto: Option<RawVelocity>,
    terminal: Option<RawVelocity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVelocity {
    count_max_60s: Option<RawLimit>,
    count_max_1h: Option<RawLimit>,
    count_max_24h: Option<RawLimit>,
    amount_max_minor_60s: Option<RawAmounts>,
    amount_max_minor_1h: Option<RawAmounts>,
    amount_max_minor_24h: Option<RawAmounts>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerminal {
    amount_max_minor: Option<RawAmounts>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBlocklist {
    pans: RawList<String>,
    tokens: RawList<String>,
    bins: RawList<String>,
    terminals: RawList<RawBlockedTerminal>,
}

/// A list whose absence is an empty list.
type RawList<T> = Option<Spanned<Vec<Spanned<T>>>>;

fn entries<T>(list: &RawList<T>) -> &[Spanned<T>] {
    list.as_ref().map_or(&[], |list| list.get_ref().as_slice())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlockedTerminal {
    merchant: String,
    terminal: String,
}

/// Turns spans into lines for errors.
struct Source<'s> {
    text: &'s str,
}

impl Source<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(&self, span: Range<usize>, key: &str, expected: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            line: self.line(span),
            key: key.to_owned(),
            expected: expected.into(),
        }
    }
}

pub(super) fn compile(
    text: &str,
    tokenize: &dyn Fn(&str) -> CardToken,
) -> Result<Policy, PolicyError> {
    if text.len() > POLICY_BYTES_MAX {
        return Err(PolicyError::TooLarge {
            bytes: text.len(),
            max: POLICY_BYTES_MAX,
        });
    }
    let source = Source { text };
    let raw: RawPolicy = toml::from_str(text).map_err(|error| PolicyError::Syntax {
        line: error.span().map_or(1, |span| source.line(span)),
        message: error.message().to_owned(),
    })?;
    if *raw.version.get_ref() != VERSION {
        return Err(source.invalid(raw.version.span(), "version", format!("{VERSION}")));
    }
    let mut defaults = Rules::default();
    apply(&source, &raw.defaults, &mut defaults, "defaults")?;
    if let Some((id, _)) = raw
        .defaults
        .terminals
        .as_ref()
        .and_then(|t| t.iter().next())
    {
        let expected = "terminals only under merchants.<MID>";
        return Err(source.invalid(id.span(), "defaults.terminals", expected));
    }
    if let Some((id, _)) = raw.merchants.iter().nth(MERCHANTS_MAX) {
        let expected = format!("at most {MERCHANTS_MAX} merchants");
        return Err(source.invalid(id.span(), "merchants", expected));
    }
    let mut merchants =
        HashMap::with_capacity_and_hasher(raw.merchants.len(), KeyHasherBuild::default());
    for (id, raw_rules) in &raw.merchants {
        let path = format!("merchants.{}", id.get_ref());
        let packed = check_id(&source, id, &path, key::MERCHANT_ID_BYTES_MAX).and_then(|()| {
            pack_merchant(id.get_ref()).ok_or_else(|| source.invalid(id.span(), &path, "an id"))
        })?;
        let mut rules = defaults.clone();
        apply(&source, raw_rules, &mut rules, &path)?;
        let terminals = compile_terminals(&source, raw_rules, &path)?;
        merchants.insert(packed, Merchant { rules, terminals });
    }
    let blocklist = &raw.blocklist;
    let blocked_cards = blocked_cards(&source, blocklist, tokenize)?;
    Ok(Policy {
        defaults,
        merchants,
        blocked_cards_filter: blocked_cards.iter().fold(0, |f, t| f | card_filter_bit(t)),
        blocked_cards,
        blocked_bins: blocked_bins(&source, &blocklist.bins)?,
        blocked_terminals: blocked_terminals(&source, &blocklist.terminals)?,
    })
}

/// Applies one `[defaults]` or `[merchants.<MID>]` table over `rules`.
fn apply(
    source: &Source<'_>,
    raw: &RawRules,
    rules: &mut Rules,
    path: &str,
) -> Result<(), PolicyError> {
    if let Some(limit) = &raw.flag_score_min {
        rules.flag_score_min = limit_value(
            source,
            limit,
            &format!("{path}.flag_score_min"),
            1,
            SCORE_MAX,
        )?;
    }
    if let Some(limit) = &raw.decline_score_min {
        rules.decline_score_min = limit_value(
            source,
            limit,
            &format!("{path}.decline_score_min"),
            1,
            SCORE_MAX,
        )?;
    }
    if let Some(score) = &raw.watch_list_score {
        rules.watch_list_score = score_value(source, score, &format!("{path}.watch_list_score"))?;
    }
    if let Some(sca) = &raw.sca {
        if let Some(table) = &sca.threshold_minor {
            rules.sca_threshold_minor =
                amounts(source, table, &format!("{path}.sca.threshold_minor"))?;
        }
        if let Some(score) = &sca.attempted_score {
            rules.eci_attempted_score =
                score_value(source, score, &format!("{path}.sca.attempted_score"))?;
        }
    }
    if let Some(channels) = &raw.amount_max_minor {
        let tables = [
            (Channel::CardPresent, &channels.card_present, "card_present"),
            (Channel::MoTo, &channels.moto, "moto"),
            (Channel::Ecommerce, &channels.ecommerce, "ecommerce"),
            (Channel::Unknown, &channels.unknown, "unknown"),
        ];
        for (channel, table, name) in tables {
            if let Some(table) = table {
                rules.amount_max_minor[channel.index()] =
                    amounts(source, table, &format!("{path}.amount_max_minor.{name}"))?;
            }
        }
    }
    if let Some(subjects) = &raw.velocity {
        let all = [
            (Subject::Card, &subjects.card, "card"),
            (Subject::CardMoto, &subjects.card_moto, "card_moto"),
            (Subject::Terminal, &subjects.terminal, "terminal"),
        ];
        for (subject, velocity, name) in all {
            if let Some(velocity) = velocity {
                apply_velocity(
                    source,
                    velocity,
                    rules,
                    subject,
                    &format!("{path}.velocity.{name}"),
                )?;
            }
        }
    }
    Ok(())
}

fn apply_velocity(
    source: &Source<'_>,
    raw: &RawVelocity,
    rules: &mut Rules,
    subject: Subject,
    path: &str,
) -> Result<(), PolicyError> {
    let limits = &mut rules.velocity[subject as usize];
    let counts = [
        (&raw.count_max_60s, "60s", COUNT_60S_MAX),
        (&raw.count_max_1h, "1h", COUNT_WINDOW_MAX),
    ];
    let counts = counts
        .into_iter()
        .chain([(&raw.count_max_24h, "24h", COUNT_WINDOW_MAX)]);
    for (window, (limit, name, max)) in counts.enumerate() {
        if let Some(limit) = limit {
            limits.count_max[window] =
                limit_value(source, limit, &format!("{path}.count_max_{name}"), 1, max)?;
        }
    }
    let tables = [
        (&raw.amount_max_minor_60s, "60s"),
        (&raw.amount_max_minor_1h, "1h"),
    ];
    for (window, (table, name)) in tables
        .into_iter()
        .chain([(&raw.amount_max_minor_24h, "24h")])
        .enumerate()
    {
        if let Some(table) = table {
            limits.amount_max_minor[window] =
                amounts(source, table, &format!("{path}.amount_max_minor_{name}"))?;
        }
    }
    // The 60 s amount is exact only while the 60 s count is bounded by the ring.
    if !limits.amount_max_minor[0].is_empty() && limits.count_max[0].is_none() {
        let span = match (&raw.amount_max_minor_60s, &raw.count_max_60s) {
            (Some(table), _) => table.span(),
            (None, Some(limit)) => limit.span(),
            (None, None) => 0..0,
        };
        let expected =
            format!("amount_max_minor_60s needs count_max_60s (at most {COUNT_60S_MAX}) beside it");
        return Err(source.invalid(span, &format!("{path}.amount_max_minor_60s"), expected));
    }
    Ok(())
}

fn compile_terminals(
    source: &Source<'_>,
    raw: &RawRules,
    path: &str,
) -> Result<HashMap<u64, CurrencyAmounts, KeyHasherBuild>, PolicyError> {
    let mut terminals = HashMap::with_hasher(KeyHasherBuild::default());
    let Some(raw_terminals) = &raw.terminals else {
        return Ok(terminals);
    };
    if let Some((id, _)) = raw_terminals.iter().nth(TERMINALS_PER_MERCHANT_MAX) {
        let expected = format!("at most {TERMINALS_PER_MERCHANT_MAX} terminals");
        return Err(source.invalid(id.span(), &format!("{path}.terminals"), expected));
    }
    for (id, terminal) in raw_terminals {
        let terminal_path = format!("{path}.terminals.{}", id.get_ref());
        check_id(source, id, &terminal_path, key::TERMINAL_ID_BYTES_MAX)?;
        let packed = pack_terminal(id.get_ref())
            .ok_or_else(|| source.invalid(id.span(), &terminal_path, "an id"))?;
        let limits = match &terminal.amount_max_minor {
            Some(table) => amounts(source, table, &format!("{terminal_path}.amount_max_minor"))?,
            None => CurrencyAmounts::default(),
        };
        terminals.insert(packed, limits);
    }
    Ok(terminals)
}

fn check_id(
    source: &Source<'_>,
    id: &Spanned<String>,
    path: &str,
    bytes_max: usize,
) -> Result<(), PolicyError> {
    let text = id.get_ref();
    let printable = text.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if text.is_empty() || text.len() > bytes_max || !printable {
        return Err(source.invalid(
            id.span(),
            path,
            format!("an id of 1 to {bytes_max} printable ASCII characters"),
        ));
    }
    Ok(())
}

fn limit_value(
    source: &Source<'_>,
    limit: &RawLimit,
    path: &str,
    min: u32,
    max: u32,
) -> Result<Option<u32>, PolicyError> {
    match limit.get_ref() {
        Limit::Value(value) if (min..=max).contains(value) => Ok(Some(*value)),
        Limit::Word(word) if word == "off" => Ok(None),
        _ => Err(source.invalid(
            limit.span(),
            path,
            format!("an integer from {min} to {max}, or \"off\""),
        )),
    }
}

fn score_value(source: &Source<'_>, score: &Spanned<u32>, path: &str) -> Result<u32, PolicyError> {
    if *score.get_ref() > SCORE_MAX {
        return Err(source.invalid(
            score.span(),
            path,
            format!("an integer from 0 to {SCORE_MAX}"),
        ));
    }
    Ok(*score.get_ref())
}

fn amounts(
    source: &Source<'_>,
    table: &RawAmounts,
    path: &str,
) -> Result<CurrencyAmounts, PolicyError> {
    if table.get_ref().len() > CURRENCIES_MAX {
        return Err(source.invalid(
            table.span(),
            path,
            format!("at most {CURRENCIES_MAX} currencies"),
        ));
    }
    let mut entries = Vec::with_capacity(table.get_ref().len());
    for (currency, amount) in table.get_ref() {
        let key = format!("{path}.{}", currency.get_ref());
        let code = currency.get_ref();
        let numeric =
            !code.is_empty() && code.len() <= 3 && code.bytes().all(|b| b.is_ascii_digit());
        let code = if numeric {
            code.parse::<u16>().ok().filter(|&c| c > 0)
        } else {
            None
        };
        let Some(code) = code else {
            return Err(source.invalid(
                currency.span(),
                &key,
                "an ISO 4217 numeric currency code such as 978",
            ));
        };
        if *amount.get_ref() > AMOUNT_MINOR_MAX {
            return Err(source.invalid(
                amount.span(),
                &key,
                format!("an amount in minor units up to {AMOUNT_MINOR_MAX}"),
            ));
        }
        if entries.iter().any(|&(c, _)| c == code) {
            return Err(source.invalid(
                currency.span(),
                &key,
                "each currency once (978 and 0978 are the same)",
            ));
        }
        entries.push((code, *amount.get_ref()));
    }
    entries.sort_unstable();
    Ok(CurrencyAmounts(entries.into_boxed_slice()))
}

fn check_len<T>(source: &Source<'_>, list: &RawList<T>, path: &str) -> Result<(), PolicyError> {
    match list {
        Some(list) if list.get_ref().len() > BLOCKLIST_ENTRIES_MAX => Err(source.invalid(
            list.span(),
            path,
            format!("at most {BLOCKLIST_ENTRIES_MAX} entries"),
        )),
        _ => Ok(()),
    }
}

fn blocked_cards(
    source: &Source<'_>,
    raw: &RawBlocklist,
    tokenize: &dyn Fn(&str) -> CardToken,
) -> Result<HashSet<CardToken, KeyHasherBuild>, PolicyError> {
    check_len(source, &raw.pans, "blocklist.pans")?;
    check_len(source, &raw.tokens, "blocklist.tokens")?;
    let capacity = entries(&raw.pans).len() + entries(&raw.tokens).len();
    let mut cards = HashSet::with_capacity_and_hasher(capacity, KeyHasherBuild::default());
    for pan in entries(&raw.pans) {
        let digits = pan.get_ref();
        // The codec's rule, so the blocklist accepts exactly the card
        // numbers the switch would answer for.
        let valid = codecs::card::Pan::new(digits.as_bytes()).is_some_and(|p| p.luhn_ok());
        if !valid {
            // The value is not repeated in the error: it may be a real PAN.
            return Err(source.invalid(
                pan.span(),
                "blocklist.pans",
                "a PAN of 12 to 19 digits with a valid Luhn check digit",
            ));
        }
        cards.insert(tokenize(digits));
    }
    for token in entries(&raw.tokens) {
        let mut bytes = [0u8; 32];
        if hex::decode_to_slice(token.get_ref(), &mut bytes).is_err() {
            return Err(source.invalid(
                token.span(),
                "blocklist.tokens",
                "a card token as 64 hex digits",
            ));
        }
        cards.insert(CardToken(bytes));
    }
    Ok(cards)
}

fn blocked_bins(
    source: &Source<'_>,
    raw: &RawList<String>,
) -> Result<Box<[(u32, u32)]>, PolicyError> {
    check_len(source, raw, "blocklist.bins")?;
    let mut ranges = Vec::with_capacity(entries(raw).len());
    for entry in entries(raw) {
        let range = bin_range(entry.get_ref()).ok_or_else(|| {
            let expected = "a BIN prefix of 1 to 8 digits (\"4000\") or a range of equal-length prefixes (\"400000-400099\")";
            source.invalid(entry.span(), "blocklist.bins", expected)
        })?;
        ranges.push(range);
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        match merged.last_mut() {
            Some(last) if low <= last.1.saturating_add(1) => last.1 = last.1.max(high),
            _ => merged.push((low, high)),
        }
    }
    Ok(merged.into_boxed_slice())
}

/// `"4000"` → 40000000..=40009999; `"400000-400099"` → 40000000..=40009999.
fn bin_range(entry: &str) -> Option<(u32, u32)> {
    let (low, high) = entry.split_once('-').unwrap_or((entry, entry));
    let digits_ok =
        |s: &str| (1..=Bin::DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(low) || !digits_ok(high) || low.len() != high.len() {
        return None;
    }
    let scale = 10u32.pow((Bin::DIGITS - low.len()) as u32);
    let low: u32 = low.parse().ok()?;
    let high: u32 = high.parse().ok()?;
    (low <= high).then(|| (low * scale, (high + 1) * scale - 1))
}

fn blocked_terminals(
    source: &Source<'_>,
    raw: &RawList<RawBlockedTerminal>,
) -> Result<HashSet<[u8; 32], KeyHasherBuild>, PolicyError> {
    check_len(source, raw, "blocklist.terminals")?;
    let mut terminals =
        HashSet::with_capacity_and_hasher(entries(raw).len(), KeyHasherBuild::default());
    for entry in entries(raw) {
        let (merchant, terminal) = (&entry.get_ref().merchant, &entry.get_ref().terminal);
        let ok = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        };
        if !ok(merchant, key::MERCHANT_ID_BYTES_MAX) || !ok(terminal, key::TERMINAL_ID_BYTES_MAX) {
            let expected = "{ merchant = <1 to 15 characters>, terminal = <1 to 8 characters> }";
            return Err(source.invalid(entry.span(), "blocklist.terminals", expected));
        }
        terminals.insert(key::terminal_id(merchant, terminal));
    }
    Ok(terminals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_ranges_scale_to_eight_digits() {
        assert_eq!(bin_range("4"), Some((40_000_000, 49_999_999)));
        assert_eq!(bin_range("400000-400099"), Some((40_000_000, 40_009_999)));
        assert_eq!(bin_range("41000000"), Some((41_000_000, 41_000_000)));
        assert_eq!(bin_range("99999999"), Some((99_999_999, 99_999_999)));
        assert_eq!(bin_range("4000-400"), None);
        assert_eq!(bin_range("4001-4000"), None);
        assert_eq!(bin_range("123456789"), None);
        assert_eq!(bin_range(""), None);
        assert_eq!(bin_range("40a0"), None);
    }
}
