//! Operators' roles and what each may do. Checked by the server on every
//! request ([`Role::may`]); pages also hide what a role may not use.

use serde::{Deserialize, Serialize};

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees payments and their details.
    Viewer,
    /// A viewer who also takes, captures, refunds and cancels payments.
    Operator,
    /// An operator who also manages operators; needs a second factor.
    Admin,
}

/// Something a request does, checked against the role. Seeing payments
/// needs no check: every role may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Take, capture, refund or cancel a payment.
    Pay,
    /// List, add, block, unblock, reset operators, change their roles.
    Manage,
}

impl Role {
    /// Every role, least first.
    pub(crate) const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Whether this role may do `action`.
    pub(crate) fn may(self, action: Action) -> bool {
        match action {
            Action::Pay => self >= Role::Operator,
            Action::Manage => self == Role::Admin,
        }
    }

    /// Its name, as in the files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role named `text`, if any.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == text)
    }
}

impl Action {
    /// What the 403 page says a role may not do.
    pub(crate) fn refused(self, role: Role) -> String {
        let what = match self {
            Action::Pay => "take, capture, refund or cancel payments",
            Action::Manage => "manage operators",
        };
        format!(
            "Your role ({}) may not {what}. Ask an admin if you need to.",
            role.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_does_what_the_table_says() {
        let table = [
            (Role::Viewer, [false, false]),
            (Role::Operator, [true, false]),
            (Role::Admin, [true, true]),
        ];
        for (role, expected) in table {
            let got = [Action::Pay, Action::Manage].map(|a| role.may(a));
            assert_eq!(got, expected, "{role:?}");
            assert_eq!(Role::parse(role.name()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        assert!(Action::Pay.refused(Role::Viewer).contains("viewer"));
    }
}
