//! AIDA's opaque bearer tokens: `<prefix>_<id>_<secret>`. The id finds the
//! stored row; only a SHA-256 of the secret is stored, and a presented
//! secret is compared with it in constant time. The secrets are 256 random
//! bits, so a fast hash is the right one (a password hash would only slow
//! every request down).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret;

/// What a bearer token is, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An API token for scripts and CI (`aida_pat_`).
    Api,
    /// An agent's token for its task's shared context (`aida_ctx_`).
    Context,
    /// A refresh token of a login session (`aida_rt_`).
    Refresh,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Api => "aida_pat_",
            TokenKind::Context => "aida_ctx_",
            TokenKind::Refresh => "aida_rt_",
        }
    }

    /// The kind of a presented token; `None` for anything else (a JWT).
    pub fn of(token: &str) -> Option<TokenKind> {
        [TokenKind::Api, TokenKind::Context, TokenKind::Refresh]
            .into_iter()
            .find(|k| token.starts_with(k.prefix()))
    }
}

/// A freshly made token: the text to hand out once, and what to store.
#[derive(Debug)]
pub struct NewToken {
    pub id: String,
    /// The whole bearer token; shown to its holder once, never stored.
    pub token: secret::SecretString,
    pub secret_hash: String,
}

/// Makes a token of `kind` with a new id and secret.
pub fn generate(kind: TokenKind) -> NewToken {
    let id = secret::random_hex(8);
    let secret = secret::random_hex(32);
    NewToken {
        token: secret::SecretString::from(format!("{}{id}_{secret}", kind.prefix())),
        secret_hash: hash(&secret),
        id,
    }
}

/// A presented token's id and secret, if it is well formed and of `kind`.
pub fn parse(kind: TokenKind, token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix(kind.prefix())?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored`, in constant time.
pub fn verify(secret: &str, stored: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn tokens_round_trip_and_only_their_secret_matches() {
        let made = generate(TokenKind::Api);
        let text = made.token.expose_secret();
        assert_eq!(TokenKind::of(text), Some(TokenKind::Api));
        let (id, secret) = parse(TokenKind::Api, text).unwrap();
        assert_eq!(id, made.id);
        assert!(verify(secret, &made.secret_hash));
        assert!(!verify(&"0".repeat(64), &made.secret_hash));
        assert!(parse(TokenKind::Context, text).is_none());
        assert!(parse(TokenKind::Api, "aida_pat_x_y").is_none());
        assert_eq!(TokenKind::of("eyJhbGciOi.x.y"), None);
    }
}
