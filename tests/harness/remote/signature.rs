//! GitHub's webhook signature: `X-Hub-Signature-256: sha256=<hex>`, the
//! HMAC-SHA256 of the raw body keyed with the webhook's secret.

use hmac::{Hmac, KeyInit, Mac};

/// The header GitHub signs webhook deliveries with.
pub const GITHUB_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// The value of [`GITHUB_SIGNATURE_HEADER`] for `body` signed with `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::github_signature;

    /// The example of GitHub's "Validating webhook deliveries".
    #[test]
    fn matches_githubs_documented_example() {
        assert_eq!(
            github_signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
