//! Risk's metrics. Every label is a literal, so each call uses a static key
//! and allocates nothing; with no recorder installed they are no-ops.

use metrics::{counter, gauge};

use crate::decision::{Action, Decision, RuleId};

/// Which velocity table a metric is about.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TableName {
    /// Card keys (all channels and MO/TO).
    Card,
    /// Terminal keys.
    Terminal,
}

/// `switch_risk_velocity_keys{table}`: keys tracked now.
pub(crate) fn velocity_keys(table: TableName, len: usize) {
    match table {
        TableName::Card => gauge!("switch_risk_velocity_keys", "table" => "card").set(len as f64),
        TableName::Terminal => {
            gauge!("switch_risk_velocity_keys", "table" => "terminal").set(len as f64)
        }
    }
}

/// `switch_risk_velocity_evictions_total{table}`: keys evicted because a
/// shard was full.
pub(crate) fn velocity_eviction(table: TableName) {
    match table {
        TableName::Card => {
            counter!("switch_risk_velocity_evictions_total", "table" => "card").increment(1)
        }
        TableName::Terminal => {
            counter!("switch_risk_velocity_evictions_total", "table" => "terminal").increment(1)
        }
    }
}

/// Expands to a `match` on the action with one literal-labelled counter per arm.
macro_rules! decisions_total {
    ($rule:literal, $action:expr) => {
        match $action {
            Action::Approve => {
                counter!("switch_risk_decisions_total", "rule" => $rule, "action" => "approve").increment(1)
            }
            Action::ApproveFlagged => counter!(
                "switch_risk_decisions_total", "rule" => $rule, "action" => "approve_flagged"
            )
            .increment(1),
            Action::Decline { .. } => {
                counter!("switch_risk_decisions_total", "rule" => $rule, "action" => "decline").increment(1)
            }
        }
    };
}

/// `switch_risk_decisions_total{rule,action}` once per fired rule (or with
/// `rule="none"`), and `switch_risk_flagged_total` for flagged payments.
pub(crate) fn decision(decision: &Decision) {
    let action = decision.action;
    if decision.fired.is_empty() {
        decisions_total!("none", action);
    }
    for fired in decision.fired.iter() {
        match fired.rule {
            RuleId::BlocklistCard => decisions_total!("blocklist_card", action),
            RuleId::BlocklistBin => decisions_total!("blocklist_bin", action),
            RuleId::BlocklistTerminal => decisions_total!("blocklist_terminal", action),
            RuleId::AmountChannel => decisions_total!("amount_channel", action),
            RuleId::AmountTerminal => decisions_total!("amount_terminal", action),
            RuleId::Sca => decisions_total!("sca", action),
            RuleId::EciAttempted => decisions_total!("eci_attempted", action),
            RuleId::VelocityCard => decisions_total!("velocity_card", action),
            RuleId::VelocityCardMoto => decisions_total!("velocity_card_moto", action),
            RuleId::VelocityTerminal => decisions_total!("velocity_terminal", action),
            RuleId::WatchList => decisions_total!("watch_list", action),
            RuleId::Score => decisions_total!("score", action),
        }
    }
    if decision.is_flagged() {
        counter!("switch_risk_flagged_total").increment(1);
    }
}
