//! Bearer-token authentication and permissions for the client API.
//!
//! Tokens come from the config file (`[[auth_tokens]]`: a name, a secret,
//! permissions). When none are configured, every caller is admitted (a
//! loopback development cluster). Otherwise each call must carry
//! `authorization: Bearer <secret>` with the permission it needs:
//! - `read`: `Query`, `Status`, `Backup` (a backup holds nothing a read
//!   could not select, and a backup job needs no token able to restore);
//! - `write`: `Execute`;
//! - `admin`: everything; `Restore` needs it (membership when it exists).
//!
//! The tokens themselves (secrets kept as BLAKE3 hashes) are `crate::tokens`.
//! A forwarded write carries the caller's header to the leader, which checks
//! it again. Peer-only calls (`ReadIndex`, the Raft transport) are
//! authenticated by certificate instead, see `tls`.

use super::error::AuthError;
pub use crate::tokens::{AuthToken, Permission};

/// The caller's `authorization` header, if any.
pub fn bearer<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
}

/// Why a call was refused, for the metrics' `reason` label.
pub fn failure_reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::PermissionDenied(_) => "forbidden",
        AuthError::Unauthenticated(m) if m.starts_with("missing") => "missing",
        _ => "invalid",
    }
}

/// Check the `authorization` value of a call needing `need`, against
/// `tokens` (empty: authentication is off). The token's name when admitted.
pub fn check(
    tokens: &[AuthToken],
    header: Option<&str>,
    need: Permission,
) -> Result<Option<String>, AuthError> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let Some(header) = header else {
        return Err(AuthError::Unauthenticated(
            "missing bearer token: this cluster requires one (quorumlite --auth-token, or QUORUMLITE_AUTH_TOKEN)".into(),
        ));
    };
    let secret = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| {
            AuthError::Unauthenticated(
                "malformed authorization header: expected \"Bearer <token>\"".into(),
            )
        })?
        .trim();
    let hash = blake3::hash(secret.as_bytes());
    let Some(token) = tokens.iter().find(|t| t.has_hash(&hash)) else {
        return Err(AuthError::Unauthenticated(
            "the bearer token is not valid for this cluster".into(),
        ));
    };
    if !token.allows(need) {
        return Err(AuthError::PermissionDenied(format!(
            "token {:?} lacks the {} permission; nothing was done",
            token.name,
            need.as_str()
        )));
    }
    Ok(Some(token.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons the auth checks count are the ones registered at start.
    #[test]
    fn every_auth_failure_reason_is_registered_at_start() {
        use crate::metrics::AUTH_FAILURE_REASONS;
        let refusals = [
            AuthError::PermissionDenied("no write permission".into()),
            AuthError::Unauthenticated("missing bearer token".into()),
            AuthError::Unauthenticated("unknown token".into()),
        ];
        for e in refusals {
            let reason = failure_reason(&e);
            assert!(AUTH_FAILURE_REASONS.contains(&reason), "{reason}");
        }
    }

    fn tokens() -> Vec<AuthToken> {
        vec![
            AuthToken::new("reader", "reader-secret-0123456789", &["read".into()]).expect("reader"),
            AuthToken::new(
                "app",
                "app-secret-0123456789",
                &["read".into(), "write".into()],
            )
            .expect("app"),
            AuthToken::new("ops", "ops-secret-0123456789", &["admin".into()]).expect("ops"),
        ]
    }

    #[test]
    fn calls_are_admitted_by_permission_and_refused_with_the_right_error() {
        let t = tokens();
        let b = |s: &str| format!("Bearer {s}");
        let table: [(Option<String>, Permission, Result<&str, ErrorKind>); 8] = [
            (None, Permission::Read, Err(ErrorKind::Unauthenticated)),
            (
                Some("Basic abc".into()),
                Permission::Read,
                Err(ErrorKind::Unauthenticated),
            ),
            (
                Some(b("wrong-secret-0123456789")),
                Permission::Read,
                Err(ErrorKind::Unauthenticated),
            ),
            (
                Some(b("reader-secret-0123456789")),
                Permission::Read,
                Ok("reader"),
            ),
            (
                Some(b("reader-secret-0123456789")),
                Permission::Write,
                Err(ErrorKind::Forbidden),
            ),
            (
                Some(b("app-secret-0123456789")),
                Permission::Write,
                Ok("app"),
            ),
            (
                Some(b("app-secret-0123456789")),
                Permission::Admin,
                Err(ErrorKind::Forbidden),
            ),
            (
                Some(b("ops-secret-0123456789")),
                Permission::Write,
                Ok("ops"),
            ),
        ];
        for (header, need, want) in table {
            let got = check(&t, header.as_deref(), need);
            match (got, want) {
                (Ok(Some(name)), Ok(w)) => assert_eq!(name, w),
                (Err(AuthError::Unauthenticated(_)), Err(ErrorKind::Unauthenticated)) => {}
                (Err(AuthError::PermissionDenied(m)), Err(ErrorKind::Forbidden)) => {
                    assert!(m.contains(need.as_str()), "{m}")
                }
                (got, want) => panic!("{header:?} {need:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(check(&[], None, Permission::Admin).expect("auth off"), None);
    }

    #[derive(Debug)]
    enum ErrorKind {
        Unauthenticated,
        Forbidden,
    }

    #[test]
    fn weak_or_empty_tokens_are_refused_and_secrets_never_print() {
        assert!(AuthToken::new("a", "short", &["read".into()]).is_err());
        assert!(AuthToken::new("a", "has spaces in the secret", &["read".into()]).is_err());
        assert!(AuthToken::new("a", "long-enough-secret-1", &[]).is_err());
        assert!(AuthToken::new("a", "long-enough-secret-1", &["root".into()]).is_err());
        assert!(AuthToken::new("", "long-enough-secret-1", &["read".into()]).is_err());
        let t = AuthToken::new("a", "long-enough-secret-1", &["read".into()]).expect("token");
        assert!(!format!("{t:?}").contains("long-enough"));
    }
}
