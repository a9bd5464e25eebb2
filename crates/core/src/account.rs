//! Accounts and roles. An account's permissions are the union of its roles' permissions,
//! resolved at request time, so a role change takes effect on the next request.

use crate::clock::Timestamp;
use crate::ids::AccountId;
use crate::permission::{Permission, PermissionSet};
use serde::{Deserialize, Serialize};

pub const SUPER_ADMIN: &str = "super_admin";

/// A stored account, including its password's argon2id hash (never serialized out).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountRecord {
    pub id: AccountId,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub last_login_at: Option<Timestamp>,
}

/// Usernames are 3–64 characters of `a-z 0-9 . _ -`.
pub fn validate_username(s: &str) -> Result<(), &'static str> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if (3..=64).contains(&s.len()) && ok_chars {
        Ok(())
    } else {
        Err("must be 3-64 characters of a-z, 0-9, '.', '_' and '-'")
    }
}

/// Passwords are at least 12 characters; at most 1024 so hashing cost stays bounded.
pub fn validate_password(s: &str) -> Result<(), &'static str> {
    match s.chars().count() {
        n if n < 12 => Err("must be at least 12 characters"),
        n if n > 1024 => Err("must be at most 1024 characters"),
        _ => Ok(()),
    }
}

/// A role name matches `^[a-z][a-z0-9_-]{1,63}$`.
pub fn validate_role_name(s: &str) -> Result<(), &'static str> {
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if first_ok && rest_ok && (2..=64).contains(&s.len()) {
        Ok(())
    } else {
        Err("must match ^[a-z][a-z0-9_-]{1,63}$")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub permissions: Vec<Permission>,
    pub builtin: bool,
}

/// The built-in roles; they exist in every installation and cannot be changed.
pub fn builtin_roles() -> Vec<Role> {
    use crate::permission::names::*;
    let role = |name: &str, perms: &[&str]| Role {
        name: name.to_owned(),
        permissions: perms
            .iter()
            .filter_map(|p| Permission::parse(p).ok())
            .collect(),
        builtin: true,
    };
    vec![
        role(SUPER_ADMIN, &["*"]),
        role("developer", &[TOKENS_READ, TOKENS_WRITE, GATEWAY_READ]),
        role("viewer", &[TOKENS_READ, GATEWAY_READ]),
        role("auditor", &[AUDIT_READ]),
    ]
}

/// The union of the permissions of `account_roles`, looked up in `all_roles`.
/// A role name that no longer exists grants nothing.
pub fn resolve_permissions(account_roles: &[String], all_roles: &[Role]) -> PermissionSet {
    all_roles
        .iter()
        .filter(|r| account_roles.contains(&r.name))
        .flat_map(|r| r.permissions.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve() {
        let roles = builtin_roles();
        let perms = resolve_permissions(&["developer".into(), "auditor".into()], &roles);
        let p = |s: &str| Permission::parse(s).unwrap();
        assert!(perms.covers(&p("tokens:write")));
        assert!(perms.covers(&p("audit:read")));
        assert!(!perms.covers(&p("accounts:read")));
        let admin = resolve_permissions(&[SUPER_ADMIN.into()], &roles);
        assert!(admin.covers(&p("anything:at-all")));
        assert!(resolve_permissions(&["gone".into()], &roles)
            .iter()
            .next()
            .is_none());
    }

    #[test]
    fn validation() {
        assert!(validate_username("admin").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username("Admin").is_err());
        assert!(validate_password("short").is_err());
        assert!(validate_password("long-enough-pw").is_ok());
        assert!(validate_role_name("ops").is_ok());
        assert!(validate_role_name("o").is_err());
        assert!(validate_role_name("9ops").is_err());
        assert!(validate_role_name(&format!("a{}", "b".repeat(63))).is_ok());
        assert!(validate_role_name(&format!("a{}", "b".repeat(64))).is_err());
    }
}
