//! Access tokens: short-lived JWTs signed with HS256 and the gateway's
//! secret (`AIDA_JWT_SECRET`). The algorithm is the server's choice, never
//! the token's: a token whose header names another (`none`, `HS512`, ...)
//! is refused. `exp`, `nbf`, `iat`, `iss`, `aud`, `sub` and the role are
//! required and checked.

use std::time::Duration;

use aida_core::auth::{Role, Username};
use aida_core::secret::{ExposeSecret, SecretString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The pinned algorithm.
pub const ALGORITHM: Algorithm = Algorithm::HS256;
/// Clock skew tolerated between gateways, in seconds.
const LEEWAY_SECS: u64 = 5;

/// An access token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's name.
    pub sub: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    /// This token's id.
    pub jti: String,
    /// The session it belongs to: logging out ends it.
    pub sid: String,
}

/// A verified access token: who, with what role, in which session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub username: Username,
    pub role: Role,
    pub session_id: String,
    pub expires_at: u64,
}

/// Why a token was refused; shown to the client, so plain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the access token has expired: refresh it (POST /api/auth/refresh) or log in again")]
    Expired,
    #[error("the access token is not valid")]
    Invalid(String),
}

/// Signs and checks access tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &SecretString, issuer: &str, audience: &str, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(ALGORITHM);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new access token for `username` in session `session_id`.
    pub fn issue(&self, username: &str, role: Role, session_id: &str) -> anyhow::Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: username.to_owned(),
            role: role.label().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::now_v7().to_string(),
            sid: session_id.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(ALGORITHM), &claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("signing an access token failed: {e}"))
    }

    /// Checks signature, algorithm, times, issuer, audience, subject and
    /// role.
    pub fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                kind => JwtError::Invalid(format!("{kind:?}")),
            })?;
        let claims = data.claims;
        if claims.iat > jsonwebtoken::get_current_timestamp() + LEEWAY_SECS {
            return Err(JwtError::Invalid("issued in the future".into()));
        }
        let username =
            Username::parse(&claims.sub).map_err(|_| JwtError::Invalid("bad subject".into()))?;
        let role = claims
            .role
            .parse::<Role>()
            .ok()
            .filter(|r| r.is_user_role())
            .ok_or_else(|| JwtError::Invalid("bad role".into()))?;
        Ok(Verified {
            username,
            role,
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &SecretString::from("k".repeat(40)),
            "aida",
            "aida-api",
            Duration::from_secs(60),
        )
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let keys = keys();
        let token = keys.issue("alice", Role::Operator, "s1").unwrap();
        let verified = keys.verify(&token).unwrap();
        assert_eq!(verified.username.as_str(), "alice");
        assert_eq!(verified.role, Role::Operator);
        assert_eq!(verified.session_id, "s1");
    }

    #[test]
    fn foreign_and_doctored_tokens_are_refused() {
        let keys = keys();
        let other = JwtKeys::new(
            &SecretString::from("x".repeat(40)),
            "aida",
            "aida-api",
            Duration::from_secs(60),
        );
        let foreign = other.issue("alice", Role::Admin, "s").unwrap();
        assert!(keys.verify(&foreign).is_err());

        let now = jsonwebtoken::get_current_timestamp();
        let claims = |exp: u64, iss: &str, aud: &str, role: &str| Claims {
            sub: "alice".into(),
            role: role.into(),
            iss: iss.into(),
            aud: aud.into(),
            exp,
            nbf: now - 10,
            iat: now - 10,
            jti: "j".into(),
            sid: "s".into(),
        };
        let sign = |alg: Algorithm, c: &Claims| {
            jsonwebtoken::encode(
                &Header::new(alg),
                c,
                &EncodingKey::from_secret("k".repeat(40).as_bytes()),
            )
            .unwrap()
        };
        let good = claims(now + 60, "aida", "aida-api", "admin");
        assert!(keys.verify(&sign(Algorithm::HS256, &good)).is_ok());
        assert_eq!(
            keys.verify(&sign(
                Algorithm::HS256,
                &claims(now - 60, "aida", "aida-api", "admin")
            )),
            Err(JwtError::Expired)
        );
        for bad in [
            sign(Algorithm::HS512, &good),
            sign(
                Algorithm::HS256,
                &claims(now + 60, "evil", "aida-api", "admin"),
            ),
            sign(
                Algorithm::HS256,
                &claims(now + 60, "aida", "other", "admin"),
            ),
            sign(
                Algorithm::HS256,
                &claims(now + 60, "aida", "aida-api", "system"),
            ),
            sign(
                Algorithm::HS256,
                &claims(now + 60, "aida", "aida-api", "root"),
            ),
        ] {
            assert!(
                matches!(keys.verify(&bad), Err(JwtError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
