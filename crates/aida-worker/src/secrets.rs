//! Keeps secrets from the worker's environment out of what it reports: the
//! values of variables whose names look secret (API keys, tokens,
//! passwords) are replaced by `***` in log lines, summaries and errors.

use std::borrow::Cow;
use std::ffi::OsString;

/// What a secret value is replaced with.
pub const MASK: &str = "***";
/// Name parts that make a variable a secret.
const SECRET_NAME_PARTS: &[&str] = &["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL"];
/// Shorter values ("1", "true") would mask half of every log.
const MIN_SECRET_LEN: usize = 6;

/// The secret values to mask; computed once at start-up.
#[derive(Clone, Default)]
pub struct SecretMask {
    /// Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

// Never prints the values themselves.
impl std::fmt::Debug for SecretMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMask")
            .field("values", &self.values.len())
            .finish()
    }
}

impl SecretMask {
    /// The secrets in this process's environment.
    pub fn from_env() -> Self {
        Self::from_vars(
            std::env::vars_os().filter_map(|(k, v): (OsString, OsString)| {
                Some((k.into_string().ok()?, v.into_string().ok()?))
            }),
        )
    }

    /// The secrets among `vars` (name, value).
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut values: Vec<String> = vars
            .into_iter()
            .filter(|(name, _)| is_secret_name(name.as_ref()))
            .map(|(_, value)| value.into())
            .filter(|value: &String| value.chars().count() >= MIN_SECRET_LEN)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// These secrets and `other`'s.
    pub fn merged(&self, other: &SecretMask) -> SecretMask {
        let mut values: Vec<String> = self.values.iter().chain(&other.values).cloned().collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// How many values are masked.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by [`MASK`].
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), MASK));
            }
        }
        out
    }

    /// Masks `text` in place.
    pub fn mask_in_place(&self, text: &mut String) {
        if let Cow::Owned(masked) = self.mask(text) {
            *text = masked;
        }
    }
}

/// Whether a variable of this name holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_of_secret_looking_names_only() {
        let mask = SecretMask::from_vars([
            ("ANTHROPIC_API_KEY", "sk-ant-123456"),
            ("github_token", "ghp_abcdef"),
            ("DB_PASSWORD", "hunter22"),
            ("MY_SECRET", "short"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/etc/creds.json"),
            ("HOME", "/root/home"),
            ("SECRET_PREFIX", "sk-ant-123456-longer"),
        ]);
        assert_eq!(mask.len(), 5, "{mask:?}");
        assert!(!format!("{mask:?}").contains("sk-ant"));
        assert_eq!(
            mask.mask("key sk-ant-123456-longer and sk-ant-123456, token ghp_abcdef, pw hunter22"),
            "key *** and ***, token ***, pw ***"
        );
        assert_eq!(mask.mask("short /root/home"), "short /root/home");
        assert!(matches!(mask.mask("nothing here"), Cow::Borrowed(_)));
        assert!(is_secret_name("OpenAI_Api_Key"));
        assert!(!is_secret_name("PATH"));
    }
}
