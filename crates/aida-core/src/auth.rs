//! Who may do what: roles and user names, shared by the gateway (which
//! checks permissions), the orchestrator (which stores users) and the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role, from least to most trusted among people; `system` is for
/// webhooks and AIDA's own callers, never a person's login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads tasks, reports, events and workers.
    Viewer,
    /// Also creates, approves and cancels tasks and writes context.
    Operator,
    /// Also manages users, tokens and workers and reads the audit log.
    Admin,
    /// Webhooks and internal callers: creates tasks and records external
    /// statuses.
    System,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::System];
    /// The roles a person's account may have.
    pub const USER_ROLES: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }

    /// Whether a user account may have this role.
    pub fn is_user_role(self) -> bool {
        self != Role::System
    }

    /// Whether a holder of `self` may hand out `other` (to a token): never
    /// more than one has.
    pub fn covers(self, other: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(other, Role::Operator | Role::Viewer),
            Role::Viewer => other == Role::Viewer,
            Role::System => other == Role::System,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use admin, operator or viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.label() == s.trim())
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A user's name: 1 to 64 of lowercase letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit. Plain, so it is safe in paths, logs and
/// the audit trail as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user name {0:?} is not valid: {1}")]
pub struct BadUsername(pub String, pub &'static str);

impl Username {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, BadUsername> {
        let bad = |why| Err(BadUsername(raw.to_owned(), why));
        if raw.is_empty() {
            return bad("it is empty");
        }
        if raw.len() > Self::MAX_LEN {
            return bad("it is longer than 64 characters");
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return bad("it must start with a lowercase letter or a digit");
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        {
            return bad("use lowercase letters, digits, '.', '_' and '-' only");
        }
        if raw == "system" {
            return bad("\"system\" names AIDA's own callers");
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Username {
    type Error = BadUsername;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Username> for String {
    fn from(value: Username) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_never_hand_out_more_than_they_have() {
        for role in Role::ALL {
            assert_eq!(role.label().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin.covers(Role::System));
        assert!(Role::Operator.covers(Role::Viewer));
        assert!(!Role::Operator.covers(Role::Admin));
        assert!(!Role::Viewer.covers(Role::Operator));
        assert!(!Role::System.is_user_role());
    }

    #[test]
    fn user_names_are_plain() {
        for good in ["alice", "ci-bot", "a.b_c", "7up"] {
            assert!(Username::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Alice", "-x", "a b", "a/b", "system", &"a".repeat(65)] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
    }
}
