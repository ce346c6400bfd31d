//! Risk's metrics, registered once per table and state (labels are
//! literals, so nothing allocates); with no recorder installed they are no-ops.

use metrics::{counter, gauge, Counter, Gauge};

use crate::decision::{Action, Decision, RuleId};

/// Which velocity table a metric is about.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TableName {
    /// Card keys (all channels and MO/TO).
    Card,
    /// Terminal keys.
    Terminal,
}

/// `switch_risk_velocity_keys{table}` and
/// `switch_risk_velocity_evictions_total{table}` of one table, registered
/// once (with the recorder installed when the table is made) so that an
/// update does not look its labels up in the registry.
pub(crate) struct TableMetrics {
    /// Keys tracked now.
    keys: Gauge,
    /// Keys evicted because a shard was full.
    evictions: Counter,
}

impl TableMetrics {
    pub(crate) fn new(table: TableName) -> TableMetrics {
        let label = match table {
            TableName::Card => "card",
            TableName::Terminal => "terminal",
        };
        TableMetrics {
            keys: gauge!("switch_risk_velocity_keys", "table" => label),
            evictions: counter!("switch_risk_velocity_evictions_total", "table" => label),
        }
    }

    pub(crate) fn keys(&self, len: usize) {
        self.keys.set(len as f64);
    }

    pub(crate) fn eviction(&self) {
        self.evictions.increment(1);
    }
}

/// Every rule, in the order of [`RuleId`]'s variants (its `as usize`).
const RULES: [RuleId; RuleId::COUNT] = [
    RuleId::BlocklistCard,
    RuleId::BlocklistBin,
    RuleId::BlocklistTerminal,
    RuleId::AmountChannel,
    RuleId::AmountTerminal,
    RuleId::Sca,
    RuleId::EciAttempted,
    RuleId::VelocityCard,
    RuleId::VelocityCardMoto,
    RuleId::VelocityTerminal,
    RuleId::WatchList,
    RuleId::Score,
];

/// The `action` labels, by [`action_index`].
const ACTIONS: [&str; 3] = ["approve", "approve_flagged", "decline"];

fn action_index(action: Action) -> usize {
    match action {
        Action::Approve => 0,
        Action::ApproveFlagged => 1,
        Action::Decline { .. } => 2,
    }
}

/// `switch_risk_decisions_total{rule,action}` (the rule `none` when none
/// fired) and `switch_risk_flagged_total`, registered once like
/// [`TableMetrics`]: looking 39 label sets up per evaluation was a
/// registry lookup and two contended atomics per authorization.
pub(crate) struct DecisionMetrics {
    /// By rule (as `RuleId as usize`, then `none`), then by action.
    decisions: [[Counter; 3]; RuleId::COUNT + 1],
    /// Flagged payments.
    flagged: Counter,
}

impl DecisionMetrics {
    pub(crate) fn new() -> DecisionMetrics {
        let decisions = std::array::from_fn(|rule| {
            let name = RULES.get(rule).map_or("none", |r| r.as_str());
            std::array::from_fn(|action| {
                let action = ACTIONS.get(action).copied().unwrap_or("decline");
                counter!("switch_risk_decisions_total", "rule" => name, "action" => action)
            })
        });
        DecisionMetrics {
            decisions,
            flagged: counter!("switch_risk_flagged_total"),
        }
    }

    /// Counts one decision: once per fired rule, or once as `none`.
    pub(crate) fn record(&self, decision: &Decision) {
        let action = action_index(decision.action);
        let count = |rule: usize| {
            if let Some(c) = self.decisions.get(rule).and_then(|by| by.get(action)) {
                c.increment(1);
            }
        };
        if decision.fired.is_empty() {
            count(RuleId::COUNT);
        }
        for fired in decision.fired.iter() {
            count(fired.rule as usize);
        }
        if decision.is_flagged() {
            self.flagged.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_listed_in_variant_order() {
        for (i, rule) in RULES.iter().enumerate() {
            assert_eq!(*rule as usize, i, "{}", rule.as_str());
        }
    }
}
