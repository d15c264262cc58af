//! Bearer tokens as configured: a name, the secret's BLAKE3 hash, and
//! permissions. `config.rs` makes them from the file; `server/auth.rs`
//! checks calls against them.
//!
//! Secrets are kept only as hashes, compared in constant time
//! (`blake3::Hash`'s `PartialEq`), and never printed: `Debug` shows names.

use std::collections::BTreeSet;
use std::fmt;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "read" => Some(Permission::Read),
            "write" => Some(Permission::Write),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

/// One configured token. Invariant: `permissions` is not empty.
#[derive(Clone)]
pub struct AuthToken {
    pub name: String,
    secret: blake3::Hash,
    pub permissions: BTreeSet<Permission>,
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthToken")
            .field("name", &self.name)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

/// Shortest secret accepted: guessing must not be an option.
pub const MIN_SECRET_LEN: usize = 16;

impl AuthToken {
    /// A token; the error names the problem (never the secret).
    pub fn new(name: &str, secret: &str, permissions: &[String]) -> Result<AuthToken, String> {
        if name.trim().is_empty() {
            return Err("an auth token has an empty name".into());
        }
        if secret.chars().count() < MIN_SECRET_LEN || secret.chars().any(char::is_whitespace) {
            return Err(format!(
                "auth token {name:?}: the secret must be at least {MIN_SECRET_LEN} characters without spaces"
            ));
        }
        let mut set = BTreeSet::new();
        for p in permissions {
            let perm = Permission::parse(p).ok_or_else(|| {
                format!(
                    "auth token {name:?}: unknown permission {p:?}; expected read, write or admin"
                )
            })?;
            set.insert(perm);
        }
        if set.is_empty() {
            return Err(format!(
                "auth token {name:?} has no permissions; give it read, write and/or admin"
            ));
        }
        Ok(AuthToken {
            name: name.to_owned(),
            secret: blake3::hash(secret.as_bytes()),
            permissions: set,
        })
    }

    /// Whether this token's secret hashes to `hash` (compared in constant
    /// time).
    pub fn has_hash(&self, hash: &blake3::Hash) -> bool {
        self.secret == *hash
    }

    pub fn allows(&self, need: Permission) -> bool {
        self.permissions.contains(&Permission::Admin) || self.permissions.contains(&need)
    }
}
