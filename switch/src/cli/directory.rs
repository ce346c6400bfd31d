//! `switch terminals` and `switch merchants`: the directory at run time,
//! changed beside a running switch or a stopped one (the file has its own
//! lock; a running switch applies a change within 2 s).

use anyhow::Context as _;

use crate::cli::args::{
    Cli, DirectoryArgs, MerchantSettings, MerchantsAction, TerminalsAction, Tri,
};
use crate::directory::{Admin, AutoCapture, MerchantPatch, Resolved, State, TerminalPatch};
use crate::{Config, Overrides};

/// The directory of the data directory given after the command, else
/// before it, else the configuration's; and who acts.
fn admin(cli: &Cli, common: &DirectoryArgs) -> anyhow::Result<(Admin, String)> {
    let overrides = Overrides::from_env()?.then(Overrides {
        data_dir: common.data_dir.clone().or_else(|| cli.data_dir.clone()),
        ..Default::default()
    });
    let config = Config::load(cli.config.as_deref(), overrides)?;
    let who = common
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    // A cluster node's configuration: the cluster's directory.
    let admin = match &config.cluster {
        Some(_) => Admin::cluster(&config.archive.url, &config.merchants),
        None => Admin::new(&config.listeners.data_dir, &config.merchants),
    };
    Ok((admin, who))
}

fn on_off(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "inherit",
    }
}

fn state(s: State) -> &'static str {
    match s {
        State::Enabled => "enabled",
        State::Disabled => "disabled",
        State::Removed => "removed",
    }
}

/// `switch terminals add|enable|disable|remove|list|set`.
pub(crate) fn terminals(cli: &Cli, action: TerminalsAction) -> anyhow::Result<()> {
    let with_state = |s| TerminalPatch {
        state: Some(s),
        ..TerminalPatch::default()
    };
    let (tid, common, patch, what) = match action {
        TerminalsAction::List { merchant, common } => {
            let (admin, _) = admin(cli, &common)?;
            print_terminals(&admin.current()?, merchant.as_deref());
            return Ok(());
        }
        TerminalsAction::Add {
            tid,
            merchant,
            name,
            common,
        } => {
            let (admin, who) = admin(cli, &common)?;
            admin
                .add_terminal(&who, &tid, &merchant, name.as_deref().unwrap_or_default())
                .with_context(|| format!("adding terminal {tid}"))?;
            println!("terminal {tid} added to merchant {merchant}");
            return Ok(());
        }
        TerminalsAction::Enable { tid, common } => {
            (tid, common, with_state(State::Enabled), "terminal.enable")
        }
        TerminalsAction::Disable { tid, common } => {
            (tid, common, with_state(State::Disabled), "terminal.disable")
        }
        TerminalsAction::Remove { tid, common } => {
            (tid, common, with_state(State::Removed), "terminal.remove")
        }
        TerminalsAction::Set {
            tid,
            name,
            refunds,
            moto,
            cancel,
            common,
        } => {
            anyhow::ensure!(
                name.is_some() || refunds.is_some() || moto.is_some() || cancel.is_some(),
                "nothing to set: give --name, --refunds, --moto or --cancel"
            );
            let patch = TerminalPatch {
                name,
                state: None,
                refunds: refunds.map(Tri::setting),
                moto: moto.map(Tri::setting),
                cancel: cancel.map(Tri::setting),
            };
            (tid, common, patch, "terminal.set")
        }
    };
    let (admin, who) = admin(cli, &common)?;
    let r = admin
        .set_terminal(&who, &tid, &patch, what)
        .with_context(|| format!("terminal {tid}"))?;
    if let Some(t) = r.terminals.iter().find(|t| t.id == tid) {
        println!(
            "terminal {tid} of {}: {}, refunds {}, moto {}, cancel {}",
            t.merchant,
            state(t.state),
            on_off(t.refunds),
            on_off(t.moto),
            on_off(t.cancel)
        );
    }
    Ok(())
}

fn print_terminals(r: &Resolved, merchant: Option<&str>) {
    println!("TERMINAL MERCHANT         STATE    REFUNDS MOTO    CANCEL  NAME");
    for t in r
        .terminals
        .iter()
        .filter(|t| merchant.is_none_or(|m| m == t.merchant))
    {
        println!(
            "{:<8} {:<16} {:<8} {:<7} {:<7} {:<7} {}",
            t.id,
            t.merchant,
            state(t.state),
            on_off(t.refunds),
            on_off(t.moto),
            on_off(t.cancel),
            t.name
        );
    }
}

/// A merchant's settings from the command line.
fn merchant_patch(s: MerchantSettings) -> anyhow::Result<MerchantPatch> {
    let auto_capture = match s.auto_capture_hours.as_deref() {
        None => None,
        Some("off") => Some(AutoCapture::Off),
        Some(h) => Some(AutoCapture::Hours(h.parse().with_context(|| {
            format!("--auto-capture-hours `{h}`: expected hours or `off`")
        })?)),
    };
    Ok(MerchantPatch {
        name: s.name,
        enabled: None,
        currencies: s.currencies,
        over_capture_pct: s.over_capture_pct,
        refunds_allowed: s.refunds.map(|v| v.on()),
        moto_allowed: s.moto.map(|v| v.on()),
        hold_period_h: s.hold_hours,
        auto_capture,
    })
}

/// `switch merchants list|add|enable|disable|set`.
pub(crate) fn merchants(cli: &Cli, action: MerchantsAction) -> anyhow::Result<()> {
    let enabled = |on| MerchantPatch {
        enabled: Some(on),
        ..MerchantPatch::default()
    };
    let (mid, common, patch, what) = match action {
        MerchantsAction::List { common } => {
            let (admin, _) = admin(cli, &common)?;
            print_merchants(&admin.current()?);
            return Ok(());
        }
        MerchantsAction::Add {
            mid,
            settings,
            common,
        } => {
            let (admin, who) = admin(cli, &common)?;
            let r = admin
                .add_merchant(&who, &mid, &merchant_patch(settings)?)
                .with_context(|| format!("adding merchant {mid}"))?;
            let index = r.merchants.iter().find(|m| m.id == mid).map(|m| m.index);
            println!("merchant {mid} added, index {}", index.unwrap_or_default());
            return Ok(());
        }
        MerchantsAction::Enable { mid, common } => (mid, common, enabled(true), "merchant.enable"),
        MerchantsAction::Disable { mid, common } => {
            (mid, common, enabled(false), "merchant.disable")
        }
        MerchantsAction::Set {
            mid,
            settings,
            common,
        } => {
            let patch = merchant_patch(settings)?;
            anyhow::ensure!(
                patch.name.is_some()
                    || patch.currencies.is_some()
                    || patch.over_capture_pct.is_some()
                    || patch.refunds_allowed.is_some()
                    || patch.moto_allowed.is_some()
                    || patch.hold_period_h.is_some()
                    || patch.auto_capture.is_some(),
                "nothing to set: give at least one setting (see --help)"
            );
            (mid, common, patch, "merchant.set")
        }
    };
    let (admin, who) = admin(cli, &common)?;
    admin
        .set_merchant(&who, &mid, &patch, what)
        .with_context(|| format!("merchant {mid}"))?;
    println!("merchant {mid}: {what} done");
    Ok(())
}

fn print_merchants(r: &Resolved) {
    println!("INDEX MERCHANT         ENABLED SOURCE  CURRENCIES   OVER% HOLD_H AUTO_H REFUNDS MOTO TERMINALS NAME");
    for m in &r.merchants {
        let terminals = r
            .terminals
            .iter()
            .filter(|t| t.merchant == m.id && t.state != State::Removed)
            .count();
        let currencies: Vec<String> = m.currencies.iter().map(u16::to_string).collect();
        println!(
            "{:<5} {:<16} {:<7} {:<7} {:<12} {:<5} {:<6} {:<6} {:<7} {:<4} {:<9} {}",
            m.index,
            m.id,
            if m.enabled { "yes" } else { "no" },
            if m.configured { "config" } else { "added" },
            currencies.join(","),
            m.over_capture_pct,
            m.hold_period_h,
            m.auto_capture_h
                .map_or_else(|| "off".to_owned(), |h| h.to_string()),
            if m.refunds_allowed { "on" } else { "off" },
            if m.moto_allowed { "on" } else { "off" },
            terminals,
            m.name
        );
    }
}
