//! Permissions (`resource:action`, with `*` and `resource:*` wildcards) and the rule that
//! decides what a request may do: a token's scopes intersected with its account's
//! permissions *now*.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One permission or scope: `*`, `resource:*` or `resource:action`, lowercase, each part
/// 1–64 characters of `a-z 0-9 _ . -`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Permission(String);

impl Permission {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self(s.to_owned()));
        }
        let valid_part = |p: &str| {
            (1..=64).contains(&p.len())
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
                })
        };
        match s.split_once(':') {
            Some((resource, action))
                if valid_part(resource) && (action == "*" || valid_part(action)) =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(format!(
                "'{}' is not a permission: expected 'resource:action', 'resource:*' or '*' in lowercase",
                s.chars().take(80).collect::<String>()
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether holding `self` grants `other` (which may itself be a wildcard).
    pub fn covers(&self, other: &Permission) -> bool {
        if self.0 == "*" || self.0 == other.0 {
            return true;
        }
        match self.0.strip_suffix(":*") {
            Some(resource) => other
                .0
                .strip_prefix(resource)
                .is_some_and(|rest| rest.starts_with(':')),
            None => false,
        }
    }
}

impl TryFrom<String> for Permission {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Permission> for String {
    fn from(p: Permission) -> String {
        p.0
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The management permissions the admin API checks, as text.
pub mod names {
    pub const TOKENS_READ: &str = "tokens:read";
    pub const TOKENS_WRITE: &str = "tokens:write";
    pub const TOKENS_ADMIN: &str = "tokens:admin";
    pub const TOKENS_INTROSPECT: &str = "tokens:introspect";
    pub const ACCOUNTS_READ: &str = "accounts:read";
    pub const ACCOUNTS_WRITE: &str = "accounts:write";
    pub const ROLES_READ: &str = "roles:read";
    pub const ROLES_WRITE: &str = "roles:write";
    pub const AUDIT_READ: &str = "audit:read";
    pub const SETTINGS_WRITE: &str = "settings:write";
    pub const GATEWAY_READ: &str = "gateway:read";
    pub const GATEWAY_WRITE: &str = "gateway:write";
    pub const WEBHOOKS_READ: &str = "webhooks:read";
    pub const WEBHOOKS_WRITE: &str = "webhooks:write";
}

/// A management permission named by a type, so that the permission an operation needs
/// is part of its signature: a check cannot be forgotten, and a misspelt permission does
/// not compile.
pub trait Needed: Send + Sync + 'static {
    const NAME: &'static str;
}

/// The types of [`names`], one for each.
pub mod need {
    use super::{names, Needed};

    macro_rules! needed {
        ($($ty:ident = $name:ident),* $(,)?) => {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                #[derive(Debug, Clone, Copy)]
                pub struct $ty;
                impl Needed for $ty {
                    const NAME: &'static str = names::$name;
                }
            )*
        };
    }

    needed!(
        TokensRead = TOKENS_READ,
        TokensWrite = TOKENS_WRITE,
        TokensAdmin = TOKENS_ADMIN,
        TokensIntrospect = TOKENS_INTROSPECT,
        AccountsRead = ACCOUNTS_READ,
        AccountsWrite = ACCOUNTS_WRITE,
        RolesRead = ROLES_READ,
        RolesWrite = ROLES_WRITE,
        AuditRead = AUDIT_READ,
        SettingsWrite = SETTINGS_WRITE,
        GatewayRead = GATEWAY_READ,
        GatewayWrite = GATEWAY_WRITE,
        WebhooksRead = WEBHOOKS_READ,
        WebhooksWrite = WEBHOOKS_WRITE,
    );
}

/// A set of granted permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionSet(Vec<Permission>);

impl PermissionSet {
    pub fn new(mut perms: Vec<Permission>) -> Self {
        perms.sort();
        perms.dedup();
        Self(perms)
    }

    pub fn covers(&self, wanted: &Permission) -> bool {
        self.0.iter().any(|p| p.covers(wanted))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.iter()
    }

    pub fn to_vec(&self) -> Vec<Permission> {
        self.0.clone()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self::new(iter.into_iter().collect())
    }
}

/// What a request may do: everything its account may do now, narrowed by the token's
/// scopes when it has any. A session (no token) has `token_scopes: None`. It borrows
/// both sets, so checking a permission on the hot path allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectivePermissions<'a> {
    pub account: &'a PermissionSet,
    pub token_scopes: Option<&'a PermissionSet>,
}

impl EffectivePermissions<'_> {
    pub fn covers(&self, wanted: &Permission) -> bool {
        self.account.covers(wanted) && self.token_scopes.is_none_or(|s| s.covers(wanted))
    }

    /// The subset of `wanted` not covered, in the order given.
    pub fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a Permission>) -> Vec<Permission> {
        wanted
            .into_iter()
            .filter(|p| !self.covers(p))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Permission {
        Permission::parse(s).unwrap()
    }

    #[test]
    fn parse_accepts_the_three_shapes_only() {
        for ok in ["*", "tokens:*", "tokens:read", "billing.v2:read-all"] {
            assert!(Permission::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "tokens",
            "Tokens:read",
            "tokens:",
            ":read",
            "a:b:c",
            "*:read",
            "tok ens:read",
        ] {
            assert!(Permission::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(p("*").covers(&p("tokens:read")));
        assert!(p("*").covers(&p("*")));
        assert!(p("tokens:*").covers(&p("tokens:read")));
        assert!(p("tokens:*").covers(&p("tokens:*")));
        assert!(!p("tokens:*").covers(&p("tokensx:read")));
        assert!(!p("tokens:*").covers(&p("*")));
        assert!(!p("tokens:read").covers(&p("tokens:*")));
        assert!(!p("tokens:read").covers(&p("tokens:write")));
    }

    #[test]
    fn effective_is_the_intersection() {
        let account = PermissionSet::new(vec![p("tokens:*"), p("gateway:read")]);
        let scopes = PermissionSet::new(vec![p("tokens:read"), p("audit:read")]);
        let eff = EffectivePermissions {
            account: &account,
            token_scopes: Some(&scopes),
        };
        assert!(eff.covers(&p("tokens:read")));
        assert!(!eff.covers(&p("tokens:write")), "not in the token's scopes");
        assert!(
            !eff.covers(&p("audit:read")),
            "not in the account's permissions"
        );
        assert!(!eff.covers(&p("gateway:read")), "not in the token's scopes");
        let follows = EffectivePermissions {
            token_scopes: None,
            ..eff
        };
        assert!(follows.covers(&p("tokens:write")));
        assert_eq!(
            follows.missing([&p("tokens:write"), &p("audit:read")]),
            vec![p("audit:read")]
        );
    }

    fn arb_perm() -> impl Strategy<Value = Permission> {
        prop_oneof![
            Just(p("*")),
            "[a-c]{1,2}".prop_map(|r| p(&format!("{r}:*"))),
            ("[a-c]{1,2}", "[a-c]{1,2}").prop_map(|(r, a)| p(&format!("{r}:{a}"))),
        ]
    }

    proptest! {
        #[test]
        fn covers_is_reflexive_and_transitive(a in arb_perm(), b in arb_perm(), c in arb_perm()) {
            prop_assert!(a.covers(&a));
            if a.covers(&b) && b.covers(&c) {
                prop_assert!(a.covers(&c));
            }
        }

        #[test]
        fn narrowing_never_widens(acct in proptest::collection::vec(arb_perm(), 0..4),
                                   scopes in proptest::collection::vec(arb_perm(), 0..4),
                                   wanted in arb_perm()) {
            let (acct, scopes) = (PermissionSet::new(acct), PermissionSet::new(scopes));
            let eff = EffectivePermissions { account: &acct, token_scopes: Some(&scopes) };
            let broad = EffectivePermissions { account: &acct, token_scopes: None };
            if eff.covers(&wanted) {
                prop_assert!(broad.covers(&wanted));
            }
        }
    }
}
