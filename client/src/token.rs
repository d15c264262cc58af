//! Version tokens: which state a reply saw, as an opaque string.
//!
//! A token names a cluster **lineage** (a random id drawn by the cluster's
//! first batch; a restore starts a new one) and a **data version** (the
//! count of applied frame batches). Presented with a `session` read, it asks
//! the serving node to have applied at least that version first, which gives
//! read-your-writes and monotonic reads on any node.
//!
//! Tokens of different lineages are never compared: a node refuses a token
//! from another cluster rather than guessing. The only lineage-free token is
//! the empty state (version 0), which every cluster satisfies.
//!
//! The text form is `ql1.<lineage>.<version>`. It is opaque to users: only
//! this module parses it.

use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "ql1";

/// A cluster lineage and a data version.
///
/// Invariant: `lineage` is empty only when `version` is 0, and otherwise
/// holds only ASCII hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    lineage: String,
    version: u64,
}

/// Why a token string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid token {text:?}: {reason}; pass a token exactly as a Quorumlite reply returned it")]
pub struct TokenError {
    text: String,
    reason: &'static str,
}

impl Token {
    /// A token for `version` of `lineage`. `None` when the pair breaks the
    /// type's invariant.
    pub fn new(lineage: impl Into<String>, version: u64) -> Option<Token> {
        let lineage = lineage.into();
        let valid = if lineage.is_empty() {
            version == 0
        } else {
            lineage.len() <= 64 && lineage.bytes().all(|b| b.is_ascii_hexdigit())
        };
        valid.then_some(Token { lineage, version })
    }

    /// The state of a cluster with no history yet.
    pub fn empty() -> Token {
        Token {
            lineage: String::new(),
            version: 0,
        }
    }

    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether a node of `lineage` can serve this token at all.
    pub fn belongs_to(&self, lineage: &str) -> bool {
        self.lineage.is_empty() || self.lineage == lineage
    }

    /// The newer of two tokens. A token of another lineage replaces the old
    /// one (the cluster was restored, or the session moved clusters).
    pub fn newest(self, other: Token) -> Token {
        if self.lineage != other.lineage && !other.lineage.is_empty() {
            return other;
        }
        if other.version > self.version {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.lineage, self.version)
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Token, TokenError> {
        let bad = |reason| TokenError {
            text: text.chars().take(80).collect(),
            reason,
        };
        let mut parts = text.trim().split('.');
        let (Some(prefix), Some(lineage), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three dot-separated parts"));
        };
        if prefix != PREFIX {
            return Err(bad("unknown token format"));
        }
        let version: u64 = version
            .parse()
            .map_err(|_| bad("the version is not a number"))?;
        Token::new(lineage, version).ok_or_else(|| bad("the lineage is malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_survives_its_text_form() {
        let t = Token::new("00ff3a", 42).expect("valid");
        assert_eq!(t.to_string(), "ql1.00ff3a.42");
        assert_eq!("ql1.00ff3a.42".parse::<Token>(), Ok(t));
        assert_eq!("ql1..0".parse::<Token>(), Ok(Token::empty()));
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_reason() {
        for text in [
            "",
            "ql1.ab",
            "ql2.ab.1",
            "ql1.ab.x",
            "ql1.zz.1",
            "ql1..5",
            "ql1.ab.1.2",
            "ql1.ab.-1",
        ] {
            let err = text.parse::<Token>().expect_err(text);
            assert!(err.to_string().contains("invalid token"), "{err}");
        }
    }

    #[test]
    fn the_newest_token_wins_within_a_lineage_and_a_new_lineage_replaces_the_old() {
        let t = |l: &str, v| Token::new(l, v).expect("valid");
        assert_eq!(t("aa", 3).newest(t("aa", 5)), t("aa", 5));
        assert_eq!(t("aa", 5).newest(t("aa", 3)), t("aa", 5));
        assert_eq!(t("aa", 9).newest(t("bb", 1)), t("bb", 1));
        assert_eq!(t("aa", 9).newest(Token::empty()), t("aa", 9));
        assert_eq!(Token::empty().newest(t("aa", 1)), t("aa", 1));
    }

    #[test]
    fn only_the_empty_token_belongs_to_every_lineage() {
        assert!(Token::empty().belongs_to("aa"));
        assert!(Token::new("aa", 1).expect("valid").belongs_to("aa"));
        assert!(!Token::new("aa", 1).expect("valid").belongs_to("bb"));
    }
}
